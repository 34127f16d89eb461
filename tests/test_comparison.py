"""Comparisons on shares: exact against int64 arithmetic over the whole valid range."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmpc import audit, cost, ring, tensor
from jaxmpc.protocols import comparison as C

PARTIES = (2, 3, 5)
LTZ_ROUNDS = {2: 8, 3: 8, 5: 8}  # edaBits: open x + r, 6 AND levels, packed b2a
CIRCUIT_ROUNDS = {2: 8, 3: 9, 5: 11}  # method="circuit" (and eqz + 1): 8 + carry-save layers
#: words opened by ltz on N elements: x + r, 2 per AND word of the tree, b2a. Sliced: 118 AND
#: words and one b2a word per 64 elements; one element per word (N < 19): 6 AND words and one b2a
LTZ_WORDS = lambda N: min(N + (2 * 118 + 1) * -(-N // 64), 14 * N)  # noqa: E731
F = 16
LIMIT = 2**62  # raw encodings satisfy |x| < 2**(62-f) * 2**f
EDGES = [0, 1, -1, LIMIT - 1, -(LIMIT - 1), 2**F, -(2**F), LIMIT // 2]
N_VALUES = 16


def raw_values(seed):
    """Raw int64 encodings: the edge values, then uniform over (-2**62, 2**62)."""
    rng = np.random.default_rng(seed)
    out = rng.integers(-(LIMIT - 1), LIMIT, size=N_VALUES, dtype=np.int64)
    out[: len(EDGES)] = np.roll(np.array(EDGES, np.int64), seed)
    return out


def shared(raw, n, seed=0, frac_bits=F):
    shares = tensor.split(jax.random.key(seed), ring.from_signed(raw), n)
    return tensor.SharedTensor(shares, frac_bits)


def opened(x):
    return np.asarray(ring.to_signed(jnp.sum(x.shares, axis=0, dtype=jnp.uint64)))


def key(i=0):
    return jax.random.key(i)


@pytest.mark.parametrize("n", PARTIES)
def test_ltz_and_eqz_exact_over_the_range(n):
    raw = raw_values(n)
    raw[-2:] = 0  # make eqz see several zeros
    x = shared(raw, n)
    b = C.ltz(x, key(1))
    assert b.frac_bits == 0 and b.shape == raw.shape
    np.testing.assert_array_equal(opened(b), (raw < 0).astype(np.int64))
    np.testing.assert_array_equal(opened(C.eqz(x, key(2))), (raw == 0).astype(np.int64))
    c = cost.cost_of(C.ltz, x, key(1))
    assert c.rounds == LTZ_ROUNDS[n] == 8
    assert c.bytes_per_party == LTZ_WORDS(N_VALUES) * (n - 1) * 8
    assert all(o.masked for o in c.openings)
    d = CIRCUIT_ROUNDS[n] - 8  # carry-save layers
    ref = cost.cost_of(lambda a, k: C.ltz(a, k, method="circuit"), x, key(1))
    assert ref.rounds == CIRCUIT_ROUNDS[n]
    assert ref.bytes_per_party == (2 * (d + 7) + 1) * (n - 1) * 8 * N_VALUES
    e = cost.cost_of(C.eqz, x, key(2))
    assert e.rounds == CIRCUIT_ROUNDS[n] - 1
    assert e.bytes_per_party == (2 * (d + 6) + 1) * (n - 1) * 8 * N_VALUES


#: raw int64 values at the edges of the ring and of the encodable range
RING_EDGES = [0, 1, -1, 2, -2, 2**63 - 1, -(2**63), -(2**63) + 1, 2**62, 2**62 - 1, 2**62 + 1,
              -(2**62), -(2**62) - 1, -(2**62) + 1, 3 * 2**61, -3 * 2**61]
SHAPES = [(), (1,), (7,), (64,), (65,), (3, 50)]
METHODS = ("edabits", "sliced", "words", "circuit")
#: one cheaply compiled program per (shape, parties): every method
ALL_METHODS = jax.jit(
    lambda x, k: [C.ltz(x, k, method=m) for m in METHODS],
    compiler_options={"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True},
)


def ring_values(seed, shape):
    """Uniform int64 (the whole ring), the edges first."""
    raw = np.random.default_rng(seed).integers(-(2**63), 2**63, size=shape, dtype=np.int64).reshape(-1)
    edges = np.roll(np.array(RING_EDGES, np.int64), seed)
    raw[: min(raw.size, edges.size)] = edges[: raw.size]
    return raw.reshape(shape)


@pytest.mark.parametrize("n", PARTIES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_ltz_matches_the_circuit_reference_on_the_whole_ring(n, shape):
    raw = ring_values(n + len(shape), shape)
    x = shared(raw, n, seed=n)
    want = (raw < 0).astype(np.int64)
    for method, got in zip(METHODS, ALL_METHODS(x, key(3))):
        assert got.frac_bits == 0 and got.shape == shape
        np.testing.assert_array_equal(opened(got), want, method)
    c = cost.cost_of(C.ltz, x, key(3))
    assert c.rounds == 8 and c.bytes_per_party == LTZ_WORDS(max(1, raw.size)) * (n - 1) * 8


@pytest.mark.parametrize("n", PARTIES)
def test_ltz_opens_x_plus_r_and_uniform_words_only(n):
    shape = (3, 50)  # 150 elements: 3 sliced words per bit position
    raw = ring_values(7, shape)
    x = shared(raw, n, seed=7)
    c = cost.cost_of(C.ltz, x, key(4))
    assert [(o.what, o.domain, o.shapes) for o in c.openings] == (
        [("ltz", "arith", (shape,))]
        + [("and", "xor", ((m, 3), (m, 3))) for m in (61, 31, 15, 7, 3, 1)]
        + [("b2a_packed", "xor", ((3,),))]
    )
    assert all(o.masked for o in c.openings)
    with audit.capture() as log:
        out = jax.block_until_ready(C.ltz(x, key(4)))
    np.testing.assert_array_equal(opened(out), (raw < 0).astype(np.int64))
    (masked_x,) = log.opened("ltz")
    assert audit.verify(log, secrets=[x], reveals=set()).ok
    # what is opened is x + r for the dealer's r: uniform, not x
    assert not np.any(np.isin(masked_x.received[0], np.asarray(ring.from_signed(raw))))


@pytest.mark.parametrize("n", PARTIES)
def test_ltz_on_few_elements_uses_one_element_per_word(n):
    shape = (18,)  # the largest size where a word per element opens fewer words than slicing
    raw = ring_values(8, shape)
    x = shared(raw, n, seed=8)
    c = cost.cost_of(C.ltz, x, key(5))
    assert [(o.what, o.domain, o.shapes) for o in c.openings] == (
        [("ltz", "arith", (shape,))] + [("and", "xor", (shape, shape))] * 6 + [("b2a", "xor", (shape,))]
    )
    assert c.rounds == 8 and c.bytes_per_party == 14 * 18 * (n - 1) * 8 == LTZ_WORDS(18) * (n - 1) * 8
    assert cost.cost_of(C.ltz, shared(ring_values(8, (19,)), n), key(5)).openings[-1].what == "b2a_packed"
    with audit.capture() as log:
        out = jax.block_until_ready(C.ltz(x, key(5)))
    np.testing.assert_array_equal(opened(out), (raw < 0).astype(np.int64))
    assert audit.verify(log, secrets=[x], reveals=set()).ok


def test_ltz_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="unknown ltz method"):
        C.ltz(shared(raw_values(0), 2), key(0), method="bits")
    assert C.ltz_words(18, False) < C.ltz_words(18, True) and C.ltz_words(19, True) < C.ltz_words(19, False)


@pytest.mark.parametrize("n", [2, 3])
def test_pairwise_comparisons_shared_and_public(n):
    a, b = raw_values(10), raw_values(11)
    b[::3] = a[::3]  # ties
    x, y = shared(a, n, 1), shared(b, n, 2)
    expect = {"lt": a < b, "gt": a > b, "le": a <= b, "ge": a >= b, "eq": a == b, "ne": a != b}
    for i, (name, want) in enumerate(expect.items()):
        got = opened(getattr(C, name)(x, y, key(i)))
        np.testing.assert_array_equal(got, want.astype(np.int64), name)
    # public operand on either side, exactly representable, with ties
    pub = np.array([0.0, 2.0**-F, -(2.0**-F), 1.5, -3.25, 2.0**40, -(2.0**40), 7.0] * 2)
    c = (pub * 2**F).astype(np.int64) + np.array([0, 1, -1] * 5 + [0], np.int64)
    z = shared(c, n, 3)
    craw = (pub * 2**F).astype(np.int64)
    np.testing.assert_array_equal(opened(C.lt(z, pub, key(7))), (c < craw).astype(np.int64))
    np.testing.assert_array_equal(opened(C.le(pub, z, key(8))), (craw <= c).astype(np.int64))
    np.testing.assert_array_equal(opened(C.eq(z, pub, key(9))), (c == craw).astype(np.int64))
    with pytest.raises(TypeError):
        C.lt(1.0, 2.0, key(0))


def test_sign_abs_relu_maximum_minimum_exact():
    a, b = raw_values(20), raw_values(21)
    b[::4] = a[::4]
    x, y = shared(a, 2, 1), shared(b, 2, 2)
    np.testing.assert_array_equal(opened(C.sign(x, key(1))), np.where(a < 0, -1, 1))
    np.testing.assert_array_equal(opened(C.abs(x, key(2))), np.abs(a))
    r, bit = C.relu(x, key(3))
    assert r.frac_bits == F and bit.frac_bits == 0
    np.testing.assert_array_equal(opened(r), np.maximum(a, 0))
    np.testing.assert_array_equal(opened(bit), (a > 0).astype(np.int64))  # drelu(0) = 0
    np.testing.assert_array_equal(opened(C.drelu(x, key(3))), (a > 0).astype(np.int64))
    np.testing.assert_array_equal(opened(C.mul_bit(bit, y, key(4))), np.where(a > 0, b, 0))
    np.testing.assert_array_equal(opened(C.maximum(x, y, key(5))), np.maximum(a, b))
    np.testing.assert_array_equal(opened(C.minimum(x, y, key(6))), np.minimum(a, b))
    np.testing.assert_array_equal(opened(C.maximum(x, 0.0, key(7))), np.maximum(a, 0))
    ltz_rounds = cost.cost_of(C.ltz, x, key(0)).rounds
    assert cost.cost_of(C.relu, x, key(3)).rounds == ltz_rounds + 1
    with pytest.raises(ValueError, match="frac_bits=0"):
        C.mul_bit(x, y, key(0))


ROWS = np.array(
    [[1.0, 3.0, 3.0, -1.0, 0.0], [5.0, 5.0, 5.0, 5.0, 5.0], [-1.0, -2.0, -3.0, -4.0, -0.5],
     [-7e13, -7e13, 2.0**-16, 2.0**-16, 7e13]]
)


@pytest.mark.parametrize("n,k,axis", [(2, 3, -1), (3, 2, 0), (5, 2, -1)])  # 3 pads to 4
def test_max_argmax_ties_lowest_index(n, k, axis):
    rows = ROWS[:, :k] if axis == -1 else ROWS[:, :k].T
    x = tensor.share(rows, key(n), n)
    want_idx = np.argmax(rows, axis=axis)  # numpy: first occurrence wins, as ours
    val, onehot = jax.jit(C.max_argmax, static_argnums=2)(x, key(1), axis)
    assert onehot.frac_bits == 0 and onehot.shape == rows.shape and val.frac_bits == F
    want_onehot = np.moveaxis(np.eye(k, dtype=np.int64)[want_idx], -1, axis)
    np.testing.assert_array_equal(opened(onehot), want_onehot)
    np.testing.assert_array_equal(C.reveal_argmax(onehot, axis), want_idx)
    np.testing.assert_array_equal(tensor.reveal(val), rows.max(axis, keepdims=True))
    c = cost.cost_of(lambda o: C.reveal_argmax(o, axis), onehot)
    assert c.rounds == 1 and c.openings[0].shapes == ((4,),)  # only the index is opened


def test_max_without_one_hot():
    rows = ROWS[:2, :3]  # two values per column, one tie
    x = tensor.share(rows, key(0), 2)
    mx = jax.jit(C.max, static_argnums=(2, 3))(x, key(1), 0, True)
    np.testing.assert_array_equal(tensor.reveal(mx), rows.max(0, keepdims=True))


@pytest.mark.parametrize("k", [1, 2, 5, 8, 33])
def test_argmax_rounds_are_logarithmic(k):
    x = tensor.SharedTensor(jax.ShapeDtypeStruct((2, 3, k), jnp.uint64), F)
    per_layer = LTZ_ROUNDS[2] + 1
    assert cost.cost_of(C.argmax, x, key(0)).rounds == per_layer * math.ceil(math.log2(k))
    assert cost.cost_of(C.max, x, key(0)).rounds <= per_layer * max(1, math.ceil(math.log2(k)))


def test_argmax_of_one_value():
    x = tensor.share(np.array([[2.5], [-1.0]]), key(0), 2)
    np.testing.assert_array_equal(opened(C.argmax(x, key(1))), [[1], [1]])
    np.testing.assert_array_equal(tensor.reveal(C.max(x, key(1))), [2.5, -1.0])


@pytest.mark.parametrize("n", PARTIES)
def test_jit_equals_eager(n):
    raw = ring_values(30 + n, (65,))
    x = shared(raw, n)
    eager = C.ltz(x, key(1))
    np.testing.assert_array_equal(jax.jit(C.ltz)(x, key(1)).shares, eager.shares)
    np.testing.assert_array_equal(opened(eager), (raw < 0).astype(np.int64))
    circuit = jax.jit(C.ltz, static_argnums=2)(x, key(1), "circuit")
    np.testing.assert_array_equal(opened(circuit), (raw < 0).astype(np.int64))


def test_vmap_over_batch():
    raw = raw_values(30)
    x = shared(raw, 2)
    batch = tensor.SharedTensor(jnp.stack([x.shares, (-x).shares]), F)  # (batch, n, ...)
    keys = jax.random.split(key(2), 2)
    r, bit = jax.jit(jax.vmap(C.relu))(batch, keys)
    assert r.shares.shape == (2, 2, N_VALUES)
    for i, sgn in enumerate((1, -1)):
        got = opened(tensor.SharedTensor(r.shares[i], F))
        np.testing.assert_array_equal(got, np.maximum(sgn * raw, 0))
        np.testing.assert_array_equal(opened(tensor.SharedTensor(bit.shares[i], 0)), sgn * raw > 0)


RAW = st.integers(-(LIMIT - 1), LIMIT - 1)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(RAW, RAW), min_size=N_VALUES, max_size=N_VALUES), st.integers(0, 2**31 - 1))
def test_lt_property(pairs, seed):
    a = np.array([p[0] for p in pairs], np.int64)
    b = np.array([p[1] for p in pairs], np.int64)
    got = C.lt(shared(a, 2, seed), shared(b, 2, seed + 1), key(seed))
    np.testing.assert_array_equal(opened(got), (a < b).astype(np.int64))
