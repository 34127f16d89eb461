"""Premasked operands: a secret opened once as ``y - b`` and reused in many
Beaver products (fixed weights at inference), checked against the plain
secret-secret product, the NumPy reference and the cost model."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import reference
from jaxmpc import audit, cost, limbs, nn, tensor, train
from jaxmpc.protocols import arithmetic
from jaxmpc.protocols.arithmetic import Premasked
from jaxmpc.tensor import SharedTensor

F = 16
ULP = 2.0**-F


def _u64(rng, shape):
    return rng.integers(0, 2**64, size=shape, dtype=np.uint64, endpoint=False)


def _ring_shared(u: np.ndarray, key, n: int) -> SharedTensor:
    return SharedTensor(tensor.split(key, jax.numpy.asarray(u), n), 0)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize(
    "xshape,wshape",
    # (8,96)x(96,64) takes the float64 limbs split once; (4,1000)x(1000,40) the int8 byte path
    [((4, 6), (6, 3)), ((1, 9), (9, 2)), ((2, 3, 5), (5, 4)), ((8, 96), (96, 64)), ((4, 1000), (1000, 40))],
)
def test_premasked_matmul_is_exact_over_the_whole_ring(n, xshape, wshape):
    """frac_bits=0: no truncation, so every batch through the same premasked
    weight must equal NumPy's uint64 product bit for bit."""
    rng = np.random.default_rng(n * 100 + len(xshape))
    w = _u64(rng, wshape)
    pre = arithmetic.premask(_ring_shared(w, jax.random.key(1), n), jax.random.key(2))
    assert isinstance(pre, Premasked) and pre.shape == wshape and pre.n_parties == n
    assert (pre.split is not None) == (64 <= wshape[0] < limbs.MIN_BYTE_K)  # long ones take the byte path
    np.testing.assert_array_equal(reference.open_shares(np.asarray(pre.as_shared().shares)), w)
    for batch in range(3):  # the same mask b serves every batch
        x = _u64(rng, xshape)
        xs = _ring_shared(x, jax.random.key(10 + batch), n)
        out = arithmetic.matmul(xs, pre, jax.random.key(20 + batch))
        np.testing.assert_array_equal(reference.open_shares(np.asarray(out.shares)), reference.ring_matmul(x, w))


@pytest.mark.parametrize("n,trunc", [(2, "dealer"), (3, "dealer"), (5, "dealer"), (2, "local")])
def test_premasked_matmul_matches_the_secret_product_in_fixed_point(n, trunc):
    rng = np.random.default_rng(n)
    x, w = rng.normal(size=(8, 12)), rng.normal(size=(12, 5))
    xs, ws = tensor.share(x, jax.random.key(3), n, F), tensor.share(w, jax.random.key(4), n, F)
    pre = arithmetic.premask(ws, jax.random.key(5))
    z = arithmetic.matmul(xs, pre, jax.random.key(6), trunc=trunc)
    assert z.frac_bits == F
    # encoding error of x and w (<= ULP/2 each, times the other factor) plus 1 unit of truncation
    bound = ULP * (0.5 * (np.abs(x).sum(1, keepdims=True) + np.abs(w).sum(0, keepdims=True)) + 1.5)
    assert np.all(np.abs(np.asarray(tensor.reveal(z)) - x @ w) <= bound)


def test_premasked_jit_equals_eager_bitwise():
    rng = np.random.default_rng(0)
    xs = tensor.share(rng.normal(size=(4, 7)), jax.random.key(0), 3, F)
    pre = arithmetic.premask(tensor.share(rng.normal(size=(7, 2)), jax.random.key(1), 3, F), jax.random.key(2))
    fn = lambda a, p, k: arithmetic.matmul(a, p, k)  # noqa: E731
    eager, jitted = fn(xs, pre, jax.random.key(3)), jax.jit(fn)(xs, pre, jax.random.key(3))
    np.testing.assert_array_equal(np.asarray(eager.shares), np.asarray(jitted.shares))


@pytest.mark.parametrize("n", [2, 3])
def test_premasked_product_opens_only_its_input(n):
    """Per product: the masked input ``x - a`` and the truncation's ``z + r``;
    the weight's mask was opened once, by premask."""
    xs = tensor.share(np.ones((64, 784)), jax.random.key(0), n, F)
    ws = tensor.share(np.ones((784, 128)), jax.random.key(1), n, F)
    word = 8 * (n - 1)
    assert cost.cost_of(arithmetic.premask, ws, jax.random.key(2)).bytes_per_party == word * 784 * 128
    pre = arithmetic.premask(ws, jax.random.key(2))
    c = cost.cost_of(lambda a, p, k: arithmetic.matmul(a, p, k), xs, pre, jax.random.key(3))
    assert c.rounds == 2
    assert c.bytes_per_party == word * (64 * 784 + 64 * 128)
    full = cost.cost_of(lambda a, p, k: arithmetic.matmul(a, p, k), xs, ws, jax.random.key(3))
    assert full.bytes_per_party - c.bytes_per_party == word * 784 * 128


def test_premasked_openings_are_uniform_masks():
    rng = np.random.default_rng(1)
    xs = tensor.share(rng.normal(size=(32, 40)), jax.random.key(0), 2, F)
    ws = tensor.share(rng.normal(size=(40, 16)), jax.random.key(1), 2, F)
    with audit.capture() as log:
        pre = arithmetic.premask(ws, jax.random.key(2))
        for i in range(3):
            jax.block_until_ready(arithmetic.matmul(xs, pre, jax.random.key(3 + i)).shares)
    audit.verify(log, secrets=[xs, ws], reveals=()).raise_if_failed()


def test_mlp_with_premasked_weights_matches_plaintext_and_the_shared_pass():
    config = train.TrainConfig(parties=3)
    p = nn.init_mlp(jax.random.key(0), (20, 16, 8, 4))
    shared = nn.share_params(p, jax.random.key(1), 3, F)
    masked = nn.premask_params(shared, jax.random.key(2))
    assert all(isinstance(layer["w"], Premasked) and isinstance(layer["b"], SharedTensor) for layer in masked)
    x = np.random.default_rng(2).uniform(0, 1, size=(5, 20)).astype(np.float32)
    xs = tensor.share(x, jax.random.key(3), 3, F)
    mlp = jax.jit(lambda params, x_, k: nn.mlp(params, x_, k, activation=config.activation))
    out = np.asarray(tensor.reveal(mlp(masked, xs, jax.random.key(4))))
    np.testing.assert_allclose(out, np.asarray(nn.mlp_plain(p, x)), atol=2e-3)
    ref = np.asarray(tensor.reveal(mlp(shared, xs, jax.random.key(4))))
    np.testing.assert_allclose(out, ref, atol=2e-3)


def test_premask_errors_name_the_fix():
    xs = tensor.share(np.ones((2, 3)), jax.random.key(0), 2, F)
    with pytest.raises(TypeError, match="Premasked right operand"):
        arithmetic.bilinear_sm(xs, tensor.share(np.ones((3, 2)), jax.random.key(1), 2, F),
                               jax.random.key(2), np.matmul)
    pre3 = arithmetic.premask(tensor.share(np.ones((3, 2)), jax.random.key(1), 3, F), jax.random.key(2))
    with pytest.raises(ValueError, match="part"):
        arithmetic.matmul(xs, pre3, jax.random.key(3))
    pre = arithmetic.premask(tensor.share(np.ones((4, 2)), jax.random.key(1), 2, F), jax.random.key(2))
    with pytest.raises(ValueError, match="inner dimensions differ"):
        arithmetic.matmul(xs, pre, jax.random.key(3))
    with pytest.raises(TypeError, match="PRNG key"):
        arithmetic.premask(xs, 0)


def test_top_level_matmul_takes_a_premasked_weight():
    import jaxmpc as mpc

    x, w = np.array([[1.5, -2.0], [0.25, 3.0]]), np.eye(2) * 0.5
    xs = mpc.share(x, jax.random.key(0), n_parties=3)
    fixed = mpc.premask(mpc.share(w, jax.random.key(1), n_parties=3), jax.random.key(2))
    np.testing.assert_allclose(np.asarray(mpc.reveal(mpc.matmul(xs, fixed, jax.random.key(3)))), x @ w, atol=1e-4)
    with pytest.raises(ValueError, match="fused truncation"):
        mpc.value_and_grad(lambda w: mpc.matmul(xs, w, jax.random.key(3), trunc="local").sum())(
            mpc.premask(mpc.share(w, jax.random.key(1), n_parties=2), jax.random.key(2), split=False)
        )
