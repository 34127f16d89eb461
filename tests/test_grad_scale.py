"""A learning rate folded into the backward pass: ``ring.scaled_shift_right``
(exact against Python integers), ``autodiff.matmul(w_grad_scale=...)``,
``autodiff.scale_grad``, ``optim.sgd(prescaled=True)`` and the packaged train
step, each checked against the classic path (scale after the gradient)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmpc import autodiff as ad
from jaxmpc import cost, nn, optim, ring, tensor, train

F = 16


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=8),
    st.integers(1, 2**31 - 1),
    st.integers(0, 63),
)
def test_scaled_shift_right_is_exact(words, scale, bits):
    x = np.array(words, dtype=np.uint64)
    got = np.asarray(ring.scaled_shift_right(jnp.asarray(x), scale, bits))
    want = [((int(v) * scale) >> bits) % 2**64 for v in x.astype(np.int64).tolist()]
    np.testing.assert_array_equal(got, np.array(want, dtype=np.uint64))


def test_scaled_shift_right_rejects_bad_arguments():
    x = jnp.zeros(3, jnp.uint64)
    for scale in (0, -3, 2**31, 1.5, True):
        with pytest.raises(ValueError, match="scale must be an integer"):
            ring.scaled_shift_right(x, scale, 4)
    with pytest.raises(ValueError, match="bits must be"):
        ring.scaled_shift_right(x, 3, 64)


def _grads(n, scale, trunc="dealer"):
    rng = np.random.default_rng(n)
    x, w = rng.normal(size=(6, 9)), rng.normal(size=(9, 4)) * 0.3
    xs, ws = tensor.share(x, jax.random.key(0), n, F), tensor.share(w, jax.random.key(1), n, F)

    def loss(w_, x_, key):
        k1, k2 = jax.random.split(key)
        z = ad.matmul(x_, w_, k1, trunc=trunc, w_grad_scale=scale)
        return ad.square(z, k2, trunc=trunc).sum()

    _, g = ad.value_and_grad(loss)(ws, xs, jax.random.key(2))
    return np.asarray(tensor.reveal(g)), 2 * x.T @ (x @ w)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_folded_weight_gradient_is_the_scaled_gradient(n):
    plain, exact = _grads(n, None)
    scaled, _ = _grads(n, 0.02)
    np.testing.assert_allclose(plain, exact, atol=2e-3)
    lr = round(0.02 * 2**F) / 2**F  # the encoded scale
    # one truncation of lr * dw instead of two: within 2 units of the scaled plain gradient
    assert np.abs(scaled - lr * plain).max() <= 2 * 2.0**-F + lr * 1e-3


def test_scale_needs_dealer_truncation_and_a_representable_value():
    xs = tensor.share(np.ones((2, 3)), jax.random.key(0), 2, F)
    ws = tensor.share(np.ones((3, 2)), jax.random.key(1), 2, F)
    with pytest.raises(ValueError, match="trunc='dealer'"):
        ad.matmul(xs, ws, jax.random.key(2), trunc="local", w_grad_scale=0.1)
    for bad in (0.0, -0.1, float("nan"), 1e-9, 1e6):
        with pytest.raises(ValueError, match="gradient scale"):
            ad.matmul(xs, ws, jax.random.key(2), w_grad_scale=bad)


def test_scale_grad_is_identity_forward_and_scales_the_cotangent():
    b = tensor.share(np.array([0.5, -1.0, 2.0]), jax.random.key(0), 3, F)

    def loss(b_, key):
        return ad.scale_grad(b_, 0.25, key).sum()

    v, g = ad.value_and_grad(loss)(b, jax.random.key(1))
    assert abs(float(tensor.reveal(v)) - 1.5) < 1e-4
    np.testing.assert_allclose(np.asarray(tensor.reveal(g)), 0.25, atol=2.0**-F)


def test_prescaled_sgd_update_is_the_negated_gradient_and_costs_nothing():
    g = {"w": tensor.share(np.array([[0.01, -0.02]]), jax.random.key(0), 2, F)}
    opt = optim.sgd(0.1, jax.random.key(1), prescaled=True)
    updates, _ = opt.update(g, opt.init(g))
    np.testing.assert_array_equal(np.asarray(updates["w"].shares), np.asarray((-g["w"]).shares))
    c = cost.cost_of(lambda g_: opt.update(g_, opt.init(g_))[0], g)
    assert c.rounds == 0 and c.bytes_per_party == 0


@pytest.mark.parametrize("activation", ["relu", "square"])
def test_packaged_step_matches_the_classic_step(activation):
    """``make_optimizer`` folds lr into the backward pass; one step must land
    within a few units of ``optim.sgd(lr)`` on plain gradients, and save the
    optimizer's round and its opened words."""
    config = train.TrainConfig(parties=2, activation=activation, lr=0.05).validate()
    sizes = (12, 8, 6, 3)
    pp = nn.init_mlp(jax.random.key(0), sizes)
    params = nn.share_params(pp, jax.random.key(1), 2, F)
    rng = np.random.default_rng(0)
    x = tensor.share(rng.uniform(0, 1, (5, 12)), jax.random.key(2), 2, F)
    y = tensor.share(np.eye(3)[rng.integers(0, 3, 5)], jax.random.key(3), 2, F)
    fast_opt, scale = train.make_optimizer(config, jax.random.key(4))
    assert scale == config.lr
    slow_opt = optim.sgd(config.lr, jax.random.key(4), trunc=config.trunc)
    fast = train.make_train_step(config, fast_opt, scale)
    slow = train.make_train_step(config, slow_opt)
    k = jax.random.key(5)
    pf, _, lf = jax.jit(fast)(params, fast_opt.init(params), x, y, k)
    ps, _, ls = jax.jit(slow)(params, slow_opt.init(params), x, y, k)
    for a, b in zip(jax.tree.leaves(nn.reconstruct_params(pf)), jax.tree.leaves(nn.reconstruct_params(ps))):
        assert np.abs(a - b).max() <= 4 * 2.0**-F
    assert abs(float(tensor.reveal(lf)) - float(tensor.reveal(ls))) < 1e-9  # same forward pass
    cf = cost.cost_of(fast, params, fast_opt.init(params), x, y, k)
    cs = cost.cost_of(slow, params, slow_opt.init(params), x, y, k)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(pp))
    assert cs.rounds - cf.rounds >= 1
    # the optimizer's truncations opened every parameter; the fold opens only the biases again
    n_bias = sum(s for s in sizes[1:])
    assert cs.bytes_per_party - cf.bytes_per_party == 8 * (n_params - n_bias)


def test_local_truncation_keeps_the_classic_optimizer():
    config = train.TrainConfig(parties=2, trunc="local").validate()
    _, scale = train.make_optimizer(config, jax.random.key(0))
    assert scale is None
