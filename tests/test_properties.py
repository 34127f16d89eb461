"""Property-based tests (hypothesis) of the core ops and the comparisons.

Drawn: values (with the edges of the range: 0, one unit, the largest
encodable magnitude), party counts, precisions (``frac_bits``) and seeds. The
example count comes from the conftest profile. Shapes come from a short list:
every new (shape, party count) costs JAX compilations, values do not.

Properties (``u = 2**-f``, one unit; ``~x`` the encoding of ``x``):

* share / reveal round trip: ``reveal(share(x)) == ~x`` and ``|~x - x| <= u/2``,
  for every party count 2..5 and precision 0..40; values beyond ``2**(62-f)``
  are refused;
* ``ltz``, ``lt``/``gt``/``eq`` and ``relu`` are EXACT over the whole
  encodable range (the sign bit of the ring sum), for 2 and 3 parties;
* ``truncate`` is ``floor(x / 2**b)`` up to one unit, for both methods,
  while ``|x| < 2**40``;
* ``mul``, ``square`` and ``matmul`` are within their stated bound of the real
  product: ``|xy - z| <= (|x| + |y|) u/2 + u**2/4 + u`` (one unit of
  truncation: floor, then 0 or +1 unit; an inner product of ``k`` terms adds
  ``k`` times the encoding part) — inputs are kept to ``|xy| 2**(2f) < 2**42`` so that the truncation
  failure probability (``|xy| 2**(2f) / 2**64`` per element) is below
  ``2**-22``;
* ``a2b`` then opening the XOR shares gives back the ring word; ``b2a`` of
  bits gives the bits;
* ``argmax`` opens (through ``reveal_argmax``) the index of the largest
  encoded value, the lowest one at ties.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxmpc import ring, tensor
from jaxmpc.protocols import arithmetic, binary, comparison, conversion
from jaxmpc.tensor import SharedTensor

LIMIT = 2**62  # |raw| of any encodable value
#: these programs are run on a few dozen examples each: compile them cheaply
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def fast_jit(fn):
    """``jax.jit`` with cheap compilation; one compile per (shape, party count)
    instead of eager dispatch of every op in every example."""
    return jax.jit(fn, compiler_options=FAST_COMPILE)


LTZ = fast_jit(comparison.ltz)
RELU = fast_jit(comparison.relu)
COMPARE = fast_jit(lambda x, y, k: (comparison.lt(x, y, k), comparison.gt(x, y, k), comparison.eq(x, y, k)))
ARGMAX = fast_jit(lambda x, k: comparison.reveal_argmax(comparison.argmax(x, k)))
A2B_OPEN = fast_jit(lambda x, k: binary.reveal_bits(conversion.a2b(x, k)))
B2A = fast_jit(conversion.b2a)


def raw_of(x: SharedTensor) -> np.ndarray:
    """The secret's raw two's-complement value (sum of the shares)."""
    return np.asarray(ring.to_signed(jnp.sum(x.shares, axis=0, dtype=jnp.uint64)))


def from_raw(raw, n: int, seed: int, frac_bits: int = 16) -> SharedTensor:
    raw = jnp.asarray(np.asarray(raw, np.int64))
    return SharedTensor(tensor.split(jax.random.key(seed), ring.from_signed(raw), n), frac_bits)


def encoded(x: np.ndarray, f: int) -> np.ndarray:
    return np.round(np.asarray(x, np.float64) * 2.0**f) / 2.0**f


#: raw values with the edges of the encodable range well represented
EDGE_RAW = st.one_of(
    st.sampled_from([0, 1, -1, 2, -2, LIMIT - 1, -(LIMIT - 1), 2**61, -(2**61), 2**32, -(2**32)]),
    st.integers(-(LIMIT - 1), LIMIT - 1),
    st.integers(-(2**20), 2**20),
)
SEEDS = st.integers(0, 2**31 - 1)


def raws(size: int):
    return st.lists(EDGE_RAW, min_size=size, max_size=size)


# ------------------------------------------------------------ sharing


@given(
    shape=st.sampled_from([(), (4,), (2, 3)]),
    n=st.integers(2, 5),
    f=st.integers(0, 40),
    seed=SEEDS,
    data=st.data(),
)
def test_share_reveal_roundtrip(shape, n, f, seed, data):
    top = 2.0 ** (62 - f)
    elements = st.one_of(
        st.floats(-1e3, 1e3, allow_nan=False),
        st.sampled_from([0.0, 2.0**-f, -(2.0**-f), np.nextafter(top, 0) * (1 - 2.0**-10), -top * (1 - 2.0**-10)]),
    )
    x = np.asarray(data.draw(st.lists(elements, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))),
                   np.float64).reshape(shape)
    t = tensor.share(x, jax.random.key(seed), n, f)
    assert t.shares.shape == (n,) + shape and t.frac_bits == f
    out = np.asarray(tensor.reveal(t))
    np.testing.assert_array_equal(out, encoded(x, f))
    assert np.all(np.abs(out - x) <= 2.0 ** -(f + 1))
    # any n-1 shares say nothing: with a different key the same secret gets other shares
    t2 = tensor.share(x, jax.random.key(seed ^ 1), n, f)
    if shape and np.prod(shape) >= 2:
        assert not np.array_equal(np.asarray(t.shares[0]), np.asarray(t2.shares[0]))


@given(f=st.integers(0, 40), sign=st.sampled_from([1.0, -1.0]))
def test_values_beyond_the_range_are_refused(f, sign):
    with pytest.raises(ValueError, match="out of the fixed-point range"):
        tensor.share(np.array([sign * 2.0 ** (62 - f)]), jax.random.key(0), 2, f)


# ------------------------------------------------------------ comparisons


@given(n=st.sampled_from([2, 3]), seed=SEEDS, values=raws(8))
def test_ltz_is_exact_over_the_whole_range(n, seed, values):
    x = from_raw(values, n, seed)
    bit = LTZ(x, jax.random.key(seed + 1))
    assert bit.frac_bits == 0
    np.testing.assert_array_equal(raw_of(bit), (np.asarray(values) < 0).astype(np.int64))


@given(n=st.just(2), seed=SEEDS, a=raws(6), data=st.data())
def test_pairwise_comparisons_are_exact(n, seed, a, data):
    # differences must stay below 2**63: halve the raw values
    a = [v // 2 for v in a]
    b = [data.draw(st.one_of(st.just(v), st.integers(-(LIMIT // 2), LIMIT // 2))) for v in a]  # ties included
    x, y = from_raw(a, n, seed), from_raw(b, n, seed + 1)
    k = jax.random.key(seed + 2)
    a, b = np.asarray(a), np.asarray(b)
    lt, gt, eq = COMPARE(x, y, k)
    np.testing.assert_array_equal(raw_of(lt), (a < b).astype(np.int64))
    np.testing.assert_array_equal(raw_of(gt), (a > b).astype(np.int64))
    np.testing.assert_array_equal(raw_of(eq), (a == b).astype(np.int64))


@given(n=st.just(3), seed=SEEDS, values=raws(8))
def test_relu_is_exact(n, seed, values):
    x = from_raw(values, n, seed)
    out, bit = RELU(x, jax.random.key(seed + 1))
    v = np.asarray(values)
    np.testing.assert_array_equal(raw_of(out), np.maximum(v, 0))
    np.testing.assert_array_equal(raw_of(bit), (v > 0).astype(np.int64))


@given(seed=SEEDS, data=st.data())
def test_argmax_is_the_lowest_index_of_the_maximum(seed, data):
    # few distinct values, so ties are common
    values = np.array(data.draw(st.lists(st.sampled_from([-(2**40), -3, 0, 5, 2**40]), min_size=6, max_size=6)))
    x = from_raw(values.reshape(2, 3), 2, seed)
    index = ARGMAX(x, jax.random.key(seed + 1))
    np.testing.assert_array_equal(np.asarray(index), np.argmax(values.reshape(2, 3), -1))


# ------------------------------------------------------------ truncation and products


@given(method=st.sampled_from(["dealer", "local"]), bits=st.integers(1, 24), seed=SEEDS,
       values=st.lists(st.integers(-(2**40), 2**40), min_size=8, max_size=8))
def test_truncation_is_floor_within_one_unit(method, bits, seed, values):
    x = from_raw(values, 2, seed, frac_bits=24)
    out = arithmetic.truncate(x, jax.random.key(seed + 1), bits, method=method)
    assert out.frac_bits == 24 - bits
    diff = raw_of(out) - (np.asarray(values) >> bits)
    assert set(np.unique(diff).tolist()) <= {-1, 0, 1}


def _product_bound(x, y, f):
    u = 2.0**-f
    return (np.abs(x) + np.abs(y)) * u / 2 + u * u / 4 + u + 1e-12 * np.abs(x * y)


@given(n=st.sampled_from([2, 3]), f=st.integers(8, 20), seed=SEEDS, data=st.data())
def test_mul_and_square_are_within_their_bound(n, f, seed, data):
    mag = 2.0 ** (21 - f)  # |xy| 2**(2f) <= 2**42
    xs = np.array(data.draw(st.lists(st.floats(-mag, mag, allow_nan=False), min_size=6, max_size=6)))
    ys = np.array(data.draw(st.lists(st.floats(-mag, mag, allow_nan=False), min_size=6, max_size=6)))
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    a, b = tensor.share(xs, k1, n, f), tensor.share(ys, k2, n, f)
    z = np.asarray(tensor.reveal(arithmetic.mul(a, b, k3)))
    assert np.all(np.abs(z - xs * ys) <= _product_bound(xs, ys, f)), (xs, ys, z)
    s = np.asarray(tensor.reveal(arithmetic.square(a, k3)))
    assert np.all(np.abs(s - xs * xs) <= _product_bound(xs, xs, f))


@given(f=st.integers(8, 20), seed=SEEDS, data=st.data())
def test_matmul_is_within_its_bound(f, seed, data):
    k = 3
    mag = 2.0 ** (20 - f)  # k |x||y| 2**(2f) < 2**42
    xs = np.array(data.draw(st.lists(st.floats(-mag, mag, allow_nan=False), min_size=6, max_size=6))).reshape(2, k)
    ys = np.array(data.draw(st.lists(st.floats(-mag, mag, allow_nan=False), min_size=6, max_size=6))).reshape(k, 2)
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    z = np.asarray(tensor.reveal(arithmetic.matmul(tensor.share(xs, k1, 2, f), tensor.share(ys, k2, 2, f), k3)))
    u = 2.0**-f
    # sum_t (|x_it| + |y_tj|) u/2 + k u**2/4 from the encodings, u from the truncation
    bound = (np.abs(xs).sum(1)[:, None] + np.abs(ys).sum(0)[None, :]) * u / 2 + k * u * u / 4 + u
    bound = bound + 1e-12 * (np.abs(xs) @ np.abs(ys))
    assert np.all(np.abs(z - xs @ ys) <= bound), (xs, ys, z)


# ------------------------------------------------------------ conversions


@given(n=st.sampled_from([2, 4]), seed=SEEDS, values=raws(5))
def test_a2b_then_open_gives_the_ring_word(n, seed, values):
    x = from_raw(values, n, seed)
    opened = np.asarray(A2B_OPEN(x, jax.random.key(seed + 1)))
    np.testing.assert_array_equal(opened.view(np.int64), np.asarray(values, np.int64))


@given(n=st.sampled_from([2, 3]), seed=SEEDS, bits=st.lists(st.integers(0, 1), min_size=5, max_size=5),
       noise=st.lists(st.integers(0, 2**63 - 1), min_size=5, max_size=5))
def test_b2a_turns_bit_zero_into_an_integer(n, seed, bits, noise):
    # bits 1..63 of the words are ignored
    words = (np.asarray(noise, np.uint64) << np.uint64(1)) | np.asarray(bits, np.uint64)
    x = binary.share_bits(words, jax.random.key(seed), n)
    out = B2A(x, jax.random.key(seed + 1))
    assert out.frac_bits == 0
    np.testing.assert_array_equal(raw_of(out), np.asarray(bits))
