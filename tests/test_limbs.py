"""The float64-limb matrix product must agree bit for bit with XLA's uint64 dot."""

from __future__ import annotations

import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmpc import limbs, ring

U64_MAX = 2**64 - 1
EDGES = [0, 1, 2**63, U64_MAX, 2**63 - 1]
#: Drives every limb to its most negative value: the largest float64 partial sums.
WORST = (-limbs._BIAS) % 2**64
K_MAX = limbs.MAX_CHUNK_K


@functools.cache
def _jitted(fn):
    return jax.jit(fn)


def limb_product(a, b):
    return _jitted(limbs.matmul_limbs)(a, b)


def reference(a, b):
    return _jitted(ring.matmul_reference)(a, b)


def u64(x) -> jax.Array:
    return jnp.asarray(np.asarray(x, dtype=np.uint64))


def rand(seed: int, shape) -> jax.Array:
    rng = np.random.default_rng(seed)
    return u64(rng.integers(0, 2**64, size=tuple(shape), dtype=np.uint64))


def full(value: int, shape) -> jax.Array:
    return jnp.full(shape, np.uint64(value), dtype=jnp.uint64)


def assert_same(x: jax.Array, y: jax.Array) -> None:
    assert x.dtype == jnp.uint64 and y.dtype == jnp.uint64
    assert x.shape == y.shape
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


elements = st.one_of(st.integers(0, U64_MAX), st.sampled_from(EDGES + [WORST]))
dims = st.integers(1, 6)


@st.composite
def operands(draw, max_k: int = 40):
    m, k, n = draw(dims), draw(st.integers(1, max_k)), draw(dims)
    a = draw(hnp.arrays(np.uint64, (m, k), elements=elements))
    b = draw(hnp.arrays(np.uint64, (k, n), elements=elements))
    return u64(a), u64(b)


# --- the decomposition and its bound --------------------------------------


def test_bound_constant_is_the_largest_exact_chunk():
    assert K_MAX == 910
    assert K_MAX * 9 * 2**40 <= 2**53 < (K_MAX + 1) * 9 * 2**40


@pytest.mark.parametrize("value", EDGES + [WORST, WORST + 1, 2**43, 2**22 - 1])
def test_split_reconstructs_and_stays_in_range(value):
    d0, d1, d2 = (np.asarray(d).astype(np.int64) for d in limbs._split(full(value, (1,))))
    assert -(2**21) <= d0[0] < 2**21 and -(2**20) <= d1[0] < 2**20 and -(2**20) <= d2[0] < 2**20
    assert (int(d0[0]) + (int(d1[0]) << 22) + (int(d2[0]) << 43)) % 2**64 == value


# --- bit-exactness against the uint64 dot ----------------------------------


@settings(max_examples=25)
@given(operands())
def test_limbs_match_reference_small(ab):
    a, b = ab
    assert_same(limb_product(a, b), reference(a, b))


@settings(max_examples=10)
@given(st.integers(0, 2**31), st.integers(1, 3), st.integers(1, 3), st.sampled_from([1, 2, 7]))
def test_limbs_match_reference_uniform(seed, m, n, k):
    a, b = rand(seed, (m, k)), rand(seed + 1, (k, n))
    assert_same(limb_product(a, b), reference(a, b))


@pytest.mark.parametrize("va", EDGES + [WORST])
@pytest.mark.parametrize("vb", EDGES + [WORST])
def test_whole_edge_matrices(va, vb):
    a, b = full(va, (3, 17)), full(vb, (17, 2))
    assert_same(limb_product(a, b), reference(a, b))


@pytest.mark.parametrize("k", [1, K_MAX - 1, K_MAX, K_MAX + 1, 2 * K_MAX + 1])
@pytest.mark.parametrize("fill", ["worst", "max", "uniform"])
def test_contraction_at_and_above_the_chunk_bound(k, fill):
    """K = MAX_CHUNK_K is the largest single chunk; K above it must chunk."""
    if fill == "worst":  # every float64 partial sum at its largest magnitude
        a, b = full(WORST, (2, k)), full(WORST, (k, 3))
    elif fill == "max":
        a, b = full(U64_MAX, (2, k)), full(2**63, (k, 3))
    else:
        a, b = rand(k, (2, k)), rand(k + 1, (k, 3))
    assert_same(limb_product(a, b), reference(a, b))


@pytest.mark.parametrize("k", [1, 64, K_MAX, K_MAX + 1, 2 * K_MAX + 1])
@pytest.mark.parametrize("fill", ["worst", "uniform"])
def test_presplit_right_operand_is_bit_equal(k, fill):
    """matmul_split_rhs(a, split_rhs(b)) == matmul_limbs(a, b), across the chunk bound,
    and batched over a leading party axis as premasked weights are."""
    if fill == "worst":
        a, b = full(WORST, (2, 3, k)), full(WORST, (2, k, 4))
    else:
        a, b = rand(k, (2, 3, k)), rand(k + 1, (2, k, 4))
    got = _jitted(jax.vmap(lambda x, y: limbs.matmul_split_rhs(x, limbs.split_rhs(y))))(a, b)
    assert_same(got, _jitted(jax.vmap(limbs.matmul_limbs))(a, b))
    assert_same(got[0], reference(a[0], b[0]))


def test_presplit_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="inner dimensions differ"):
        limbs.matmul_split_rhs(rand(0, (2, 5)), limbs.split_rhs(rand(1, (4, 3))))
    with pytest.raises(TypeError, match="uint64"):
        limbs.matmul_split_rhs(jnp.ones((2, 4)), limbs.split_rhs(rand(1, (4, 3))))


def test_reference_network_layer():
    a, b = rand(7, (64, 784)), rand(8, (784, 128))
    expected = reference(a, b)
    assert_same(limb_product(a, b), expected)
    assert_same(_jitted(limbs.matmul)(a, b), expected)
    assert_same(_jitted(ring.matmul)(a, b), expected)


def test_worst_case_large_contraction():
    a, b = full(WORST, (4, 3000)), full(WORST, (3000, 5))
    assert_same(limb_product(a, b), reference(a, b))


# --- shapes, dispatch, transformations ------------------------------------


@pytest.mark.parametrize(
    "sa,sb",
    [
        ((2, 3, 4, 9), (9, 5)),  # batch dims on a only
        ((3, 4, 9), (3, 9, 5)),  # equal batch dims
        ((2, 1, 4, 9), (3, 9, 5)),  # broadcast batch dims
        ((9,), (9, 5)),  # 1-D operands, as jnp.matmul
        ((4, 9), (9,)),
        ((9,), (9,)),
        ((2, 4, 0), (0, 3)),  # empty contraction
    ],
)
def test_batched_and_vector_shapes(sa, sb):
    a, b = rand(1, sa), rand(2, sb)
    expected = reference(a, b)
    assert_same(limb_product(a, b), expected)
    assert_same(_jitted(limbs.matmul)(a, b), expected)


def test_batched_above_chunk_bound():
    a, b = rand(3, (2, 3, K_MAX + 5)), rand(4, (2, K_MAX + 5, 4))
    assert_same(limb_product(a, b), reference(a, b))


def test_dispatch_rule():
    assert limbs.use_limbs((64, 784), (784, 128))
    assert limbs.use_limbs((784, 64), (64, 128))
    assert limbs.use_limbs((2, 2, 784), (784, 128))  # batch folds into rows
    assert not limbs.use_limbs((64, 64), (64, 10))
    assert not limbs.use_limbs((64, 10), (10, 64))
    assert not limbs.use_limbs((1, 784), (784, 128))
    assert not limbs.use_limbs((784,), (784, 128))
    assert not limbs.use_limbs((64, 784), (784, 10))
    assert not limbs.use_limbs((64, 4096), (4096,))


@pytest.mark.parametrize("shape,limb_path", [((64, 64, 10), False), ((8, 128, 64), True)])
def test_matmul_both_paths_exact(shape, limb_path):
    m, k, n = shape
    a, b = rand(m, (m, k)), rand(n, (k, n))
    assert limbs.use_limbs(a.shape, b.shape) == limb_path
    assert_same(_jitted(limbs.matmul)(a, b), reference(a, b))


def test_jit_equals_eager():
    a, b = rand(5, (6, 70)), rand(6, (70, 64))  # limb path under the rule
    assert limbs.use_limbs(a.shape, b.shape)
    eager = limbs.matmul(a, b)
    assert_same(jax.jit(limbs.matmul)(a, b), eager)
    assert_same(jax.jit(limbs.matmul_limbs)(a, b), limbs.matmul_limbs(a, b))
    assert_same(eager, reference(a, b))


def test_vmap_over_parties():
    a, b = rand(9, (3, 5, 70)), rand(10, (3, 70, 64))
    expected = jnp.stack([reference(a[i], b[i]) for i in range(3)])
    got = jax.jit(jax.vmap(limbs.matmul, axis_name="party"))(a, b)
    assert_same(got, expected)
    got = jax.jit(jax.vmap(limbs.matmul_limbs, in_axes=(0, None), axis_name="party"))(a, b[0])
    assert_same(got, jnp.stack([reference(a[i], b[0]) for i in range(3)]))

    def opened(x, y):  # party-local products summed across the named axis
        return jax.lax.psum(limbs.matmul_limbs(x, y), "party")

    total = jax.jit(jax.vmap(opened, axis_name="party"))(a, b)
    assert_same(total[0], expected[0] + expected[1] + expected[2])


def test_rejects_non_ring_dtypes():
    with pytest.raises(TypeError, match="uint64"):
        limbs.matmul(jnp.ones((2, 2), jnp.int64), jnp.ones((2, 2), jnp.uint64))
    with pytest.raises(TypeError, match="uint64"):
        limbs.matmul_limbs(jnp.ones((2, 2), jnp.float64), jnp.ones((2, 2), jnp.float64))


# ------------------------------------------------------------ the int8 byte path

#: Drives every byte digit to -128: the largest int32 diagonal sums.
WORST_BYTES = (-limbs._BIAS8) % 2**64


def byte_product(a, b):
    return _jitted(limbs.matmul_bytes)(a, b)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(1, 5),
    n=st.integers(1, 5),
    k=st.integers(1, 700),
)
def test_bytes_match_reference_uniform(seed, m, n, k):
    a, b = rand(seed, (m, k)), rand(seed + 1, (k, n))
    assert_same(byte_product(a, b), reference(a, b))


@pytest.mark.parametrize("va,vb", [(WORST_BYTES, WORST_BYTES), (U64_MAX, U64_MAX), (2**63, 2**63 - 1), (0, WORST_BYTES)])
def test_bytes_whole_edge_matrices(va, vb):
    a, b = full(va, (3, 40)), full(vb, (40, 2))
    assert_same(byte_product(a, b), reference(a, b))


@pytest.mark.parametrize("k", [limbs.MAX_BYTE_CHUNK_K, limbs.MAX_BYTE_CHUNK_K + 1])
def test_bytes_at_and_above_the_chunk_bound_with_the_worst_digits(k):
    """At the bound every int32 diagonal sum reaches 8 * K * 2**14 < 2**31; one more
    element starts a second chunk."""
    assert 8 * limbs.MAX_BYTE_CHUNK_K * 2**14 < 2**31 <= 8 * (limbs.MAX_BYTE_CHUNK_K + 1) * 2**14
    a, b = full(WORST_BYTES, (2, k)), full(WORST_BYTES, (k, 3))
    assert_same(byte_product(a, b), reference(a, b))


def test_bytes_digits_reconstruct():
    x = rand(12, (50,))
    d = np.asarray(limbs._bytes(x)).astype(np.int64)
    assert d.min() >= -128 and d.max() <= 127
    back = sum((d[:, i].astype(object) * 2 ** (8 * i)) for i in range(8))
    np.testing.assert_array_equal(np.array([int(v) % 2**64 for v in back], dtype=np.uint64), np.asarray(x))


def test_byte_dispatch_rule_and_vmap():
    assert limbs.use_bytes((64, 784), (784, 128))
    assert limbs.use_bytes((64, 512), (512, 128))
    assert not limbs.use_bytes((64, 256), (256, 128))  # K too short: float64 limbs
    assert not limbs.use_bytes((784, 64), (64, 128))
    assert not limbs.use_bytes((1, 784), (784, 128))  # uint64 dot (use_limbs)
    assert not limbs.use_bytes((2, 64, 784), (784, 128))  # 2-D only
    a, b = rand(13, (2, 6, 600)), rand(14, (600, 40))
    assert limbs.use_bytes(a.shape[1:], b.shape)
    got = jax.jit(jax.vmap(limbs.matmul, in_axes=(0, None)))(a, b)  # the party axis folds into rows
    assert_same(got, jnp.stack([reference(a[i], b) for i in range(2)]))
    with pytest.raises(ValueError, match="2-D"):
        limbs.matmul_bytes(a, b)
