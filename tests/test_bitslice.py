"""Bit slicing (jaxmpc.bitslice), the sliced carry tree on plaintext
and on shares, and the dealer's sliced correlations (edabits, packed bits)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmpc import cost, dealer, ring
from jaxmpc.protocols import binary as B
from jaxmpc import bitslice as S

U64 = np.uint64
PLAIN = (B.and_plain, B.xor_plain)
SHAPES = [(), (1,), (7,), (63,), (64,), (65,), (3, 50), (2, 64, 3)]
EDGES = np.array([0, 1, 2, 2**63 - 1, 2**63, 2**64 - 1, 2**62, 2**62 - 1, 2**62 + 1, 3 * 2**62], dtype=U64)


def words(seed, shape):
    w = np.random.default_rng(seed).integers(0, 2**64, size=shape, dtype=U64, endpoint=False).reshape(-1)
    w[: len(EDGES)] = np.roll(EDGES, seed)[: w.size]
    return jnp.asarray(w.reshape(shape))


def naive_slice(x):
    """The definition: bit j of word [k, w] is bit k of element 64 w + j (zero padding)."""
    flat = np.asarray(x, U64).reshape(-1)
    w = -(-flat.size // 64)
    flat = np.concatenate([flat, np.zeros(64 * w - flat.size, U64)]).reshape(w, 64)
    out = np.zeros((64, w), U64)
    for k in range(64):
        bits = (flat >> U64(k)) & U64(1)  # (w, j)
        out[k] = np.bitwise_or.reduce(bits << np.arange(64, dtype=U64), axis=1)
    return out


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_slice_matches_the_definition_and_unslice_inverts_it(shape):
    x = words(sum(shape) + 1, shape)
    s = S.slice_bits(x)
    assert s.shape == (64, S.n_words(math.prod(shape))) and s.dtype == jnp.uint64
    np.testing.assert_array_equal(s, naive_slice(x))
    back = S.unslice_bits(s, shape)
    assert back.shape == shape
    np.testing.assert_array_equal(back, x)
    np.testing.assert_array_equal(jax.jit(S.slice_bits)(x), s)
    b = x & U64(1)
    np.testing.assert_array_equal(S.pack_bits(b), s[0])  # a packed vector is row 0 of the sliced form
    np.testing.assert_array_equal(S.unpack_bits(S.pack_bits(b), shape), b)


def test_transpose_is_an_involution_and_checks_its_input():
    rows = words(3, (5, 64))
    t = S.transpose64(rows)
    np.testing.assert_array_equal(S.transpose64(t), rows)
    eye = jnp.asarray(np.array([1 << i for i in range(64)], U64))
    np.testing.assert_array_equal(S.transpose64(eye), eye)
    with pytest.raises(ValueError):
        S.transpose64(rows[:, :32])
    with pytest.raises(TypeError):
        S.slice_bits(jnp.zeros(3, jnp.int64))
    with pytest.raises(ValueError):
        S.unslice_bits(jnp.zeros((64, 2), jnp.uint64), (64,))


WORD = st.integers(0, 2**64 - 1)


@settings(max_examples=20, deadline=None)
@given(st.lists(WORD, min_size=1, max_size=200))
def test_slice_unslice_property(values):
    x = jnp.asarray(np.array(values, dtype=U64))
    s = S.slice_bits(x)
    np.testing.assert_array_equal(S.unslice_bits(s, x.shape), x)
    np.testing.assert_array_equal(S.slice_bits(S.unslice_bits(s, x.shape)), s)


# ------------------------------------------------------------ circuits


def sequential_generate(g, p):
    """G of positions 0..m-1 by the ripple recurrence G = g_i | (p_i & G), on sliced words."""
    G = g[0]
    for i in range(1, g.shape[0]):
        G = g[i] | (p[i] & G)
    return G


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 63, 64])
def test_prefix_generate_matches_the_ripple_carry(m):
    a, b = words(1, (m, 3)), words(2, (m, 3))
    g, p = a & b, a ^ b
    out = S.prefix_generate_circuit(g, p[1:], *PLAIN)
    assert out.shape == (1, 3)
    np.testing.assert_array_equal(out[0], sequential_generate(g, p))
    levels = B.and_layer_shapes(S.prefix_generate_circuit, B.words_like((m, 3)), B.words_like((m - 1, 3)))
    assert len(levels) == math.ceil(math.log2(m)) if m > 1 else not levels


@pytest.mark.parametrize("shape", [(1,), (64,), (3, 50)], ids=str)
def test_msb_circuit_on_plaintext(shape):
    a, b = words(4, shape), words(5, shape)
    out = S.msb_gp_circuit(S.slice_bits(a & b), S.slice_bits(a ^ b), *PLAIN)
    np.testing.assert_array_equal(S.unpack_bits(out, shape), (a + b + U64(1)) >> U64(63))


def test_msb_circuit_and_levels():
    w = B.words_like((64, 5))
    shapes = B.and_layer_shapes(S.msb_gp_circuit, w, w)
    assert shapes == ((61, 5), (31, 5), (15, 5), (7, 5), (3, 5), (1, 5))
    assert sum(math.prod(s) for s in shapes) == 118 * 5


@pytest.mark.parametrize("n", [2, 3, 5])
def test_msb_circuit_on_shares(n):
    shape = (3, 50)
    a, b = words(6, shape), words(7, shape)
    g = B.share_bits(S.slice_bits(a & b), jax.random.key(1), n)
    p = B.share_bits(S.slice_bits(a ^ b), jax.random.key(2), n)
    out = B.eval_circuit(S.msb_gp_circuit, jax.random.key(3), g, p)
    np.testing.assert_array_equal(S.unpack_bits(B.reveal_bits(out), shape), (a + b + U64(1)) >> U64(63))
    c = cost.cost_of(lambda x, y: B.eval_circuit(S.msb_gp_circuit, jax.random.key(3), x, y), g, p)
    assert c.rounds == 6 and c.bytes_per_party == 2 * 118 * 3 * (n - 1) * 8


# ------------------------------------------------------------ dealer


def xor_over_parties(shares):
    return jax.lax.reduce(shares, U64(0), jax.lax.bitwise_xor, (0,))


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("shape", [(), (7,), (3, 50)], ids=str)
def test_edabits_invariant(n, shape):
    e = dealer.edabits(jax.random.key(n), n, shape)
    w = S.n_words(math.prod(shape))
    assert e.arith.shape == (n,) + shape and e.bits.shape == (n, 64, w)
    r = jnp.sum(e.arith, axis=0, dtype=jnp.uint64)
    np.testing.assert_array_equal(xor_over_parties(e.bits), S.slice_bits(r))
    assert len(np.unique(np.asarray(r))) == r.size  # uniform words: no repeats
    e2 = dealer.edabits(jax.random.key(n + 100), n, shape)
    assert not np.array_equal(e.arith, e2.arith)
    u = dealer.edabits(jax.random.key(n), n, shape, sliced=False)  # one element per word
    assert u.bits.shape == (n,) + shape
    np.testing.assert_array_equal(xor_over_parties(u.bits), jnp.sum(u.arith, axis=0, dtype=jnp.uint64))


@pytest.mark.parametrize("n", [2, 3, 5])
def test_packed_random_bits_invariant(n):
    shape = (3, 50)
    r = dealer.random_bits(jax.random.key(n), n, shape, packed=True)
    assert r.xor.shape == (n, 3) and r.arith.shape == (n,) + shape
    bits = S.unpack_bits(xor_over_parties(r.xor), shape)
    np.testing.assert_array_equal(ring.to_signed(jnp.sum(r.arith, axis=0, dtype=jnp.uint64)), bits)
    assert 0.3 < float(np.mean(np.asarray(bits))) < 0.7
    old = dealer.random_bits(jax.random.key(n), n, shape)  # the unpacked layout is unchanged
    assert old.xor.shape == (n,) + shape and int(jnp.max(old.xor)) <= 1
