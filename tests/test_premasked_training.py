"""Training with premasked weights: the gradient of a :class:`Premasked`
weight comes back premasked (public part = the fused truncation's opened
value, mask = the dealer's shares), so prescaled SGD keeps the weight
premasked and it is never opened again. Checked against the plain-share step,
the cost model and what the parties actually open."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxmpc import audit, cost, nn, optim, ring, tensor, train
from jaxmpc import autodiff as ad
from jaxmpc.protocols import arithmetic
from jaxmpc.protocols.arithmetic import Premasked
from jaxmpc.tensor import SharedTensor

F = 16
SIZES = (12, 8, 6, 3)


def _setup(n: int, activation: str = "relu", lr: float = 0.05):
    config = train.TrainConfig(parties=n, activation=activation, lr=lr).validate()
    pp = nn.init_mlp(jax.random.key(0), SIZES)
    shared = nn.share_params(pp, jax.random.key(1), n, F)
    rng = np.random.default_rng(0)
    x = tensor.share(rng.uniform(0, 1, (5, SIZES[0])), jax.random.key(2), n, F)
    y = tensor.share(np.eye(SIZES[-1])[rng.integers(0, SIZES[-1], 5)], jax.random.key(3), n, F)
    opt, scale = train.make_optimizer(config, jax.random.key(4))
    step = train.make_train_step(config, opt, scale)
    masked = train.training_params(config, shared, jax.random.key(6))
    return config, shared, masked, x, y, opt, step


def _premasked_data(config, x):
    xm = train.training_data(config, x, jax.random.key(11))
    assert isinstance(xm, Premasked)
    return xm


@pytest.mark.parametrize("n", [2, 3, 5])
def test_premasked_weight_gradient_is_premasked_and_equals_the_shared_gradient(n):
    rng = np.random.default_rng(n)
    x = tensor.share(rng.normal(size=(6, 10)), jax.random.key(0), n, F)
    w = tensor.share(rng.normal(size=(10, 4)) * 0.3, jax.random.key(1), n, F)
    pw = arithmetic.premask(w, jax.random.key(2), split=False)
    loss = lambda w_: ad.matmul(x, w_, jax.random.key(3), w_grad_scale=0.125).sum()
    _, g_shared = ad.value_and_grad(loss)(w)
    _, g_masked = ad.value_and_grad(loss)(pw)
    assert isinstance(g_masked, Premasked) and g_masked.frac_bits == F
    f = np.asarray(g_masked.f)
    assert (f == f[0]).all()  # the public part is the same at every party
    expected = 0.125 * rng_sum_rows(x) @ np.ones((1, 4))
    got = np.asarray(tensor.reveal(g_masked.as_shared()))
    np.testing.assert_allclose(got, np.asarray(tensor.reveal(g_shared)), atol=3 * 2.0**-F)
    np.testing.assert_allclose(got, expected, atol=3 * 2.0**-F)


def rng_sum_rows(x: SharedTensor) -> np.ndarray:
    """``x^T @ ones``: the gradient of ``sum(x @ w)`` by ``w`` is ``x^T 1``."""
    return np.asarray(tensor.reveal(x)).sum(axis=0)[:, None]


@pytest.mark.parametrize("n,activation", [(2, "relu"), (3, "relu"), (2, "square")])
def test_premasked_training_steps_match_the_plain_share_steps(n, activation):
    """Three SGD steps: the premasked weights stay premasked and land where the
    plain-share path does (both use the same dealer truncations)."""
    config, shared, masked, x, y, opt, step = _setup(n, activation)
    assert all(isinstance(layer["w"], Premasked) and layer["w"].split is None for layer in masked)
    xm = _premasked_data(config, x)
    run = jax.jit(step)
    ps, pm, ss, sm = shared, masked, opt.init(shared), opt.init(masked)
    for t in range(3):
        k = jax.random.key(10 + t)
        ps, ss, ls = run(ps, ss, x, y, k)
        pm, sm, lm = run(pm, sm, xm if t else x, y, k)  # premasked data from the second step on
        assert abs(float(tensor.reveal(ls)) - float(tensor.reveal(lm))) <= 4 * 2.0**-F
    assert all(isinstance(layer["w"], Premasked) for layer in pm)
    for a, b in zip(jax.tree.leaves(nn.reconstruct_params(ps)), jax.tree.leaves(nn.reconstruct_params(pm))):
        assert np.abs(a - b).max() <= 8 * 2.0**-F
    # the trained model goes back to the server as plain shares
    back = nn.shared_params(pm)
    assert all(isinstance(layer["w"], SharedTensor) for layer in back)


@pytest.mark.parametrize("n", [2, 3])
def test_premasked_step_opens_no_weight(n):
    """Same rounds; per party exactly ``(n-1) * 8 * |W|`` bytes less: the
    weights' ``W - b`` openings are gone, nothing else changes."""
    config, shared, masked, x, y, opt, step = _setup(n)
    k = jax.random.key(7)
    cs = cost.cost_of(step, shared, opt.init(shared), x, y, k)
    cm = cost.cost_of(step, masked, opt.init(masked), x, y, k)
    n_w = sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:]))
    assert cs.rounds == cm.rounds
    assert cs.bytes_per_party - cm.bytes_per_party == 8 * (n - 1) * n_w
    w_shapes = {(a, b) for a, b in zip(SIZES[:-1], SIZES[1:])}
    beaver_shapes = {s for o in cm.openings if o.what == "beaver" for s in o.shapes}
    assert not beaver_shapes & w_shapes
    # premasked inputs too: the first layer's product opens nothing but its truncation
    cx = cost.cost_of(step, masked, opt.init(masked), _premasked_data(config, x), y, k)
    assert cm.bytes_per_party - cx.bytes_per_party == 8 * (n - 1) * x.size
    assert cx.rounds == cm.rounds - 1
    assert x.shape not in {s for o in cx.openings if o.what == "beaver" for s in o.shapes}


def test_premasked_weights_public_part_is_computed_from_opened_values():
    """After a step, each weight's new public part is the old one minus
    ``scaled_shift_right`` of the value opened by its gradient's truncation:
    the parties compute it from what they saw, nothing new is opened for it."""
    config, shared, masked, x, y, opt, step = _setup(2)
    with audit.capture() as log:
        new, _, _ = jax.jit(step)(masked, opt.init(masked), x, y, jax.random.key(8))
        jax.block_until_ready(new)
    trunc_opened = [m.received for m in log.opened("trunc")]
    fs = F + F - F  # the gradient's fractional bits after truncation
    scale = arithmetic._encode_scale(config.lr, fs)
    for old, layer in zip(masked, new):
        shape = old["w"].shape
        candidates = [r for rec in trunc_opened for r in rec if r.shape == shape]
        deltas = {
            np.asarray(old["w"].f[0] - layer["w"].f[0]).tobytes()
        }
        derived = {
            np.asarray(ring.scaled_shift_right(jax.numpy.asarray(z), scale, F + fs)).tobytes() for z in candidates
        }
        assert deltas & derived, f"the public part of the {shape} weight is not derived from an opened value"


def test_premasked_training_openings_are_uniform_masks():
    config, shared, masked, x, y, opt, step = _setup(2)
    xm = _premasked_data(config, x)
    with audit.capture() as log:
        p, s = masked, opt.init(masked)
        run = jax.jit(step)
        for t in range(2):
            p, s, _ = run(p, s, xm, y, jax.random.key(20 + t))
        jax.block_until_ready(p)
    audit.verify(log, secrets=[x, y, *jax.tree.leaves(shared, is_leaf=lambda v: isinstance(v, SharedTensor))],
                 reveals=()).raise_if_failed()


def test_premasked_data_needs_premasked_weights_and_gets_no_gradient():
    config, shared, masked, x, y, opt, step = _setup(2)
    xm = _premasked_data(config, x)
    with pytest.raises(TypeError, match="needs Premasked weights"):
        ad.matmul(xm, shared[0]["w"], jax.random.key(0))
    # one batch of premasked data is a slice with the same masks
    xb = train.training_data(config, tensor.stack([x, x]), jax.random.key(1))
    assert isinstance(xb[0], Premasked) and xb[0].shape == xb.shape[1:]
    assert not train.premasks_weights(train.TrainConfig(momentum=0.5).validate())
    assert train.training_data(train.TrainConfig(momentum=0.5).validate(), x, jax.random.key(1)) is x


def test_premasked_weights_refuse_updates_that_would_break_the_mask_invariant():
    config, shared, masked, x, y, opt, step = _setup(2)
    _, grads = jax.jit(ad.value_and_grad(train.loss_fn(config, config.lr)))(masked, x, y, jax.random.key(9))
    for bad in (optim.sgd(0.1, jax.random.key(0), momentum=0.9, prescaled=True), optim.sgd(0.1, jax.random.key(0))):
        with pytest.raises(ValueError, match="premasked weights take only prescaled SGD"):
            bad.init(masked)
        with pytest.raises(ValueError, match="premasked weights take only prescaled SGD"):
            bad.update(grads, bad.init(shared))
    # other settings train plain shares
    assert not train.premasks_weights(train.TrainConfig(momentum=0.9).validate())
    assert not train.premasks_weights(train.TrainConfig(trunc="local").validate())
    assert train.training_params(train.TrainConfig(trunc="local").validate(), shared, jax.random.key(0)) is shared


def test_premask_params_keeps_premasked_weights_and_only_splits_them():
    _, shared, masked, *_ = _setup(2)
    again = nn.premask_params(masked, jax.random.key(1))
    for a, b in zip(masked, again):
        np.testing.assert_array_equal(np.asarray(a["w"].f), np.asarray(b["w"].f))  # not opened again
    c = cost.cost_of(nn.premask_params, masked, jax.random.key(1))
    assert c.rounds == 0 and c.bytes_per_party == 0
