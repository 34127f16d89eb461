"""XOR sharing, secure AND, bit circuits (plaintext and shared), a2b, b2a and packed b2a."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmpc import bitslice, cost, ring, tensor
from jaxmpc.protocols import binary as B
from jaxmpc.protocols import conversion as C

PARTIES = (2, 3, 5)
CSA_LAYERS = {2: 0, 3: 1, 4: 2, 5: 3, 6: 3}
SHAPE = (2, 6)
U64 = np.uint64
EDGES = np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 1, 2**62, 2**32 - 1, 12345], dtype=U64)
PLAIN = (B.and_plain, B.xor_plain)


def words(seed, shape=SHAPE):
    return np.random.default_rng(seed).integers(0, 2**64, size=shape, dtype=U64, endpoint=False)


def with_edges(seed, shape=SHAPE):
    w = words(seed, shape).reshape(-1)
    w[: len(EDGES)] = np.roll(EDGES, seed)[: w.size]
    return jnp.asarray(w.reshape(shape))


def key(i=0):
    return jax.random.key(i)


# ------------------------------------------------------------ plaintext circuits


def test_circuits_on_plaintext_words_match_uint64_arithmetic():
    x, y = with_edges(1), with_edges(2)
    np.testing.assert_array_equal(B.add_circuit(x, y, *PLAIN), x + y)
    np.testing.assert_array_equal(C.msb_add_circuit(x, y, *PLAIN), (x + y) >> U64(63))
    np.testing.assert_array_equal(C.msb_gp_word_circuit(x & y, x ^ y, *PLAIN), (x + y + U64(1)) >> U64(63))
    carries = B.kogge_stone_carries(x & y, x ^ y, *PLAIN)
    np.testing.assert_array_equal((x ^ y) ^ (carries << U64(1)), x + y)
    s, k = B.csa_circuit(x, y, x ^ y, *PLAIN)
    np.testing.assert_array_equal(s + k, x + y + (x ^ y))
    ones = jnp.full(SHAPE, 2**64 - 1, jnp.uint64)
    w = jnp.where(x < U64(2**63), ones, x)  # all ones, or a word with a zero bit
    np.testing.assert_array_equal(C.all_ones_circuit(w, *PLAIN), (w == ones).astype(jnp.uint64))


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_sum_circuits_on_k_words(k):
    ws = [with_edges(10 + i) for i in range(k)]
    total = sum(ws[1:], ws[0])
    two = C.compress_circuit(ws, *PLAIN)
    assert len(two) == 2
    np.testing.assert_array_equal(two[0] + two[1], total)
    np.testing.assert_array_equal(C.sum_circuit(ws, *PLAIN), total)
    np.testing.assert_array_equal(C.msb_sum_circuit(ws, *PLAIN), total >> U64(63))
    shapes = B.and_layer_shapes(C.msb_sum_circuit, [B.words_like(SHAPE)] * k)
    assert len(shapes) == CSA_LAYERS[k] + 7
    assert all(math.prod(s) <= math.prod(SHAPE) * k for s in shapes)


def test_and_layer_counts_and_sizes():
    w = B.words_like((4,))
    add = B.and_layer_shapes(B.add_circuit, w, w)
    assert len(add) == 7 and [math.prod(s) for s in add] == [4] + [8] * 5 + [4]
    msb = B.and_layer_shapes(C.msb_add_circuit, w, w)
    assert len(msb) == 7 and all(s == (4,) for s in msb)  # one word per layer
    gp = B.and_layer_shapes(C.msb_gp_word_circuit, w, w)
    assert len(gp) == 6 and all(s == (4,) for s in gp)  # g, p given: the tree alone
    assert len(B.and_layer_shapes(C.all_ones_circuit, w)) == 6


WORD = st.integers(0, 2**64 - 1)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(WORD, WORD), min_size=1, max_size=4))
def test_adder_property(pairs):
    x = jnp.asarray(np.array([p[0] for p in pairs], dtype=U64))
    y = jnp.asarray(np.array([p[1] for p in pairs], dtype=U64))
    np.testing.assert_array_equal(B.add_circuit(x, y, *PLAIN), x + y)
    np.testing.assert_array_equal(C.msb_add_circuit(x, y, *PLAIN), (x + y) >> U64(63))
    np.testing.assert_array_equal(C.msb_gp_word_circuit(x & y, x ^ y, *PLAIN), (x + y + U64(1)) >> U64(63))


# ------------------------------------------------------------ shared words


@pytest.mark.parametrize("n", PARTIES)
def test_local_ops_and_secure_and(n):
    x, y = with_edges(3), with_edges(4)
    xs, ys = B.share_bits(x, key(1), n), B.share_bits(y, key(2), n)
    assert xs.shares.shape == (n,) + SHAPE and xs.shape == SHAPE and xs.n_parties == n
    np.testing.assert_array_equal(B.reveal_bits(xs), x)
    np.testing.assert_array_equal(B.reveal_bits(xs ^ ys), x ^ y)
    np.testing.assert_array_equal(B.reveal_bits(xs ^ y), x ^ y)
    np.testing.assert_array_equal(B.reveal_bits(~xs), ~x)
    np.testing.assert_array_equal(B.reveal_bits(xs & y), x & y)
    np.testing.assert_array_equal(B.reveal_bits(xs << 3), x << U64(3))
    np.testing.assert_array_equal(B.reveal_bits(xs >> 5), x >> U64(5))
    np.testing.assert_array_equal(B.reveal_bits(B.and_bb(xs, ys, key(3))), x & y)
    c = cost.cost_of(B.and_bb, xs, ys, key(3))
    assert c.rounds == 1 and c.bytes_per_party == 2 * (n - 1) * 8 * x.size
    assert all(o.masked and o.domain == "xor" for o in c.openings)
    added = B.eval_circuit(B.add_circuit, key(4), xs, ys)
    np.testing.assert_array_equal(B.reveal_bits(added), x + y)
    add = lambda a, b: B.eval_circuit(B.add_circuit, key(4), a, b)  # noqa: E731
    assert cost.cost_of(add, xs, ys).rounds == 7
    msb = B.eval_circuit(C.msb_gp_word_circuit, key(5), B.and_bp(xs, y), xs ^ ys)  # x & y with y public
    np.testing.assert_array_equal(B.reveal_bits(msb), (x + y + U64(1)) >> U64(63))
    with pytest.raises(TypeError):
        xs & ys


@pytest.mark.parametrize("n", PARTIES)
def test_a2b_is_exact(n):
    secret = with_edges(5)
    x = tensor.SharedTensor(tensor.split(key(6), secret, n), 0)
    np.testing.assert_array_equal(B.reveal_bits(C.a2b(x, key(7))), secret)
    c = cost.cost_of(C.a2b, x, key(7))
    assert c.rounds == CSA_LAYERS[n] + 7
    # CSA words (one per group) + 12 adder words, each AND opens 2 words.
    assert c.bytes_per_party == 2 * (CSA_LAYERS[n] + 12) * (n - 1) * 8 * secret.size


@pytest.mark.parametrize("n", PARTIES)
def test_b2a_is_exact_and_ignores_high_bits(n):
    w = with_edges(8)
    bits = B.share_bits(w, key(9), n)
    out = C.b2a(bits, key(10))
    assert out.frac_bits == 0
    total = ring.to_signed(jnp.sum(out.shares, 0))
    np.testing.assert_array_equal(total, (w & U64(1)).astype(np.int64))
    c = cost.cost_of(C.b2a, bits, key(10))
    assert c.rounds == 1 and c.bytes_per_party == (n - 1) * 8 * w.size


@pytest.mark.parametrize("n", PARTIES)
@pytest.mark.parametrize("shape", [(), (1,), (3, 50)], ids=str)
def test_b2a_packed_is_exact(n, shape):
    bits = np.random.default_rng(n).integers(0, 2, size=shape).astype(U64)
    w = bitslice.n_words(bits.size)
    packed = B.share_bits(bitslice.pack_bits(jnp.asarray(bits)), key(9), n)
    out = C.b2a_packed(packed, key(10), shape)
    assert out.frac_bits == 0 and out.shape == shape
    np.testing.assert_array_equal(ring.to_signed(jnp.sum(out.shares, 0)), bits.astype(np.int64))
    c = cost.cost_of(lambda x, k: C.b2a_packed(x, k, shape), packed, key(10))
    assert c.rounds == 1 and c.bytes_per_party == (n - 1) * 8 * w  # one word per 64 bits
    assert [(o.what, o.domain, o.masked) for o in c.openings] == [("b2a_packed", "xor", True)]
    with pytest.raises(ValueError, match="packed in"):
        C.b2a_packed(packed, key(10), (65,))


def test_a2b_jit_equals_eager_and_vmaps():
    secret = with_edges(11)
    x = tensor.SharedTensor(tensor.split(key(1), secret, 2), 0)
    eager = C.a2b(x, key(2))
    np.testing.assert_array_equal(jax.jit(C.a2b)(x, key(2)).shares, eager.shares)
    batch = tensor.SharedTensor(jnp.stack([x.shares, x.shares[::-1]]), 0)  # (batch, n, ...)
    out = jax.vmap(C.a2b, in_axes=(0, None))(batch, key(2))
    assert out.shares.shape == (2, 2) + SHAPE
    for b in range(2):
        np.testing.assert_array_equal(B.reveal_bits(B.SharedBits(out.shares[b])), secret)


def test_triple_feed_checks_usage():
    t = B.circuit_triples(key(0), 2, B.add_circuit, B.words_like((3,)), B.words_like((3,)))
    assert len(t) == 7
    w = jnp.zeros((2, 3), jnp.uint64)
    with pytest.raises(RuntimeError, match="more AND calls"):
        jax.vmap(lambda s, tr: B.run_local(B.add_circuit, tr[:3], s, s), axis_name="party")(w, t)
    with pytest.raises(RuntimeError, match="used 1 of 7"):
        one_and = lambda a, b, f, g: f(a, b)  # noqa: E731
        jax.vmap(lambda s, tr: B.run_local(one_and, tr, s, s), axis_name="party")(w, t)
