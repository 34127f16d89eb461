"""Encrypted gradients equal plaintext jax.grad within a fixed-point tolerance."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmpc import autodiff as ad
from jaxmpc import losses, nn, optim, tensor

F = 16
ULP = 2.0**-F
# Every truncation is off by at most 1 ulp (plus encoding rounding); the
# gradient of a 3-layer net chains a handful of them, scaled by weights < 1.
GRAD_TOL = 64 * ULP


def _net(seed, sizes):
    return nn.init_mlp(jax.random.key(seed), sizes)


def _data(seed, batch, d_in, d_out):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, d_in)).astype(np.float32)
    y = np.eye(d_out, dtype=np.float32)[rng.integers(0, d_out, batch)]
    return x, y


@pytest.mark.parametrize(
    "n_parties, activation", [(2, "relu"), (3, "relu"), (5, "relu"), (3, "square")]
)
def test_mlp_gradients_match_plaintext(n_parties, activation):
    sizes = (6, 5, 4, 3)
    params = _net(n_parties, sizes)
    x, y = _data(n_parties, 4, sizes[0], sizes[-1])
    k = jax.random.key(7)
    sp = nn.share_params(params, jax.random.fold_in(k, 0), n_parties)
    sx = tensor.share(x, jax.random.fold_in(k, 1), n_parties)
    sy = tensor.share(y, jax.random.fold_in(k, 2), n_parties)

    def secure(p, xx, yy, key):
        k1, k2 = jax.random.split(key)
        return losses.mse(nn.mlp(p, xx, k1, activation=activation), yy, k2)

    def plain(p):
        return losses.mse_plain(nn.mlp_plain(p, x, activation=activation), y)

    value, grads = jax.jit(ad.value_and_grad(secure))(sp, sx, sy, jax.random.fold_in(k, 3))
    pv, pg = jax.value_and_grad(plain)(jax.tree.map(jnp.asarray, params))
    assert abs(float(tensor.reveal(value)) - float(pv)) < GRAD_TOL
    got = nn.reconstruct_params(grads)
    for g_layer, p_layer in zip(got, pg):
        for name in ("w", "b"):
            np.testing.assert_allclose(g_layer[name], np.asarray(p_layer[name]), atol=GRAD_TOL, rtol=0)


def test_value_used_twice_accumulates_cotangents():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4)) * 0.5
    w = rng.normal(size=(4, 4)) * 0.5
    k = jax.random.key(1)
    sx, sw = tensor.share(x, k, 3), tensor.share(w, jax.random.fold_in(k, 1), 3)

    def secure(w_, x_, key):
        k1, k2, k3 = jax.random.split(key, 3)
        h = ad.matmul(ad.matmul(x_, w_, k1), w_.T, k2)  # w used twice
        return ad.square(h, k3).sum() + w_.sum()  # and a third time, linearly

    def plain(w_):
        return jnp.sum((x @ w_ @ w_.T) ** 2) + jnp.sum(w_)

    _, g = jax.jit(ad.value_and_grad(secure))(sw, sx, jax.random.key(2))
    np.testing.assert_allclose(tensor.reveal(g), jax.grad(plain)(w), atol=GRAD_TOL)


def test_grad_is_identical_jitted_and_eager():
    params = _net(0, (5, 4, 2))
    x, y = _data(0, 3, 5, 2)
    sp = nn.share_params(params, jax.random.key(0), 2)
    sx, sy = tensor.share(x, jax.random.key(1), 2), tensor.share(y, jax.random.key(2), 2)

    def secure(p, xx, yy, key):
        k1, k2 = jax.random.split(key)
        return losses.mse(nn.mlp(p, xx, k1, activation="square"), yy, k2)

    eager = ad.value_and_grad(secure)(sp, sx, sy, jax.random.key(3))
    jitted = jax.jit(ad.value_and_grad(secure))(sp, sx, sy, jax.random.key(3))
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_no_gradient_is_computed_for_the_data():
    """The data is not differentiated: no backward matmul against it is traced."""
    from jaxmpc import cost

    params = _net(0, (5, 3))
    x, y = _data(0, 4, 5, 3)
    sp = nn.share_params(params, jax.random.key(0), 2)
    sx, sy = tensor.share(x, jax.random.key(1), 2), tensor.share(y, jax.random.key(2), 2)

    def secure(p, xx, yy, key):
        k1, k2 = jax.random.split(key)
        return losses.mse(nn.mlp(p, xx, k1), yy, k2)

    c = cost.cost_of(ad.value_and_grad(secure), sp, sx, sy, jax.random.key(3))
    # forward: matmul (beaver) + square (square) ; backward: dW only (1 beaver),
    # square's rule (1 beaver): 3 beaver rounds in all, none for dx.
    assert c.by_step()["beaver"][0] == 3


def test_sgd_step_matches_plaintext_sgd():
    params = _net(3, (6, 4, 3))
    x, y = _data(3, 4, 6, 3)
    n = 2
    sp = nn.share_params(params, jax.random.key(0), n)
    sx, sy = tensor.share(x, jax.random.key(1), n), tensor.share(y, jax.random.key(2), n)
    opt = optim.sgd(0.1, jax.random.key(5), momentum=0.5)
    state = opt.init(sp)

    def secure(p, xx, yy, key):
        k1, k2 = jax.random.split(key)
        return losses.mse(nn.mlp(p, xx, k1), yy, k2)

    popt = optax.sgd(0.1, momentum=0.5)
    pp = jax.tree.map(jnp.asarray, params)
    ps = popt.init(pp)
    @jax.jit
    def step_fn(sp, state, key):
        _, g = ad.value_and_grad(secure)(sp, sx, sy, key)
        u, state = opt.update(g, state, sp)
        return optax.apply_updates(sp, u), state

    for step in range(2):
        sp, state = step_fn(sp, state, jax.random.key(10 + step))
        pg = jax.grad(lambda p: losses.mse_plain(nn.mlp_plain(p, x), y))(pp)
        pu, ps = popt.update(pg, ps, pp)
        pp = optax.apply_updates(pp, pu)
    for a, b in zip(jax.tree.leaves(nn.reconstruct_params(sp)), jax.tree.leaves(pp)):
        np.testing.assert_allclose(a, np.asarray(b), atol=GRAD_TOL)


def test_value_and_grad_rejects_non_scalar():
    sx = tensor.share(np.ones((2, 2)), jax.random.key(0), 2)
    with pytest.raises(TypeError, match="shared scalar"):
        ad.value_and_grad(lambda x: ad.square(x, jax.random.key(1)))(sx)


def test_optimizer_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="learning_rate"):
        optim.sgd(float("nan"), jax.random.key(0))
    with pytest.raises(ValueError, match="momentum"):
        optim.sgd(0.1, jax.random.key(0), momentum=1.5)


@pytest.mark.parametrize("trunc", ["dealer", "local"])
def test_broadcast_mul_gradients(trunc):
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(4,))
    sa, sb = tensor.share(a, jax.random.key(0), 2), tensor.share(b, jax.random.key(1), 2)

    def secure(p, key):
        k1, k2 = jax.random.split(key)
        return ad.square(ad.mul(p["a"], p["b"], k1, trunc=trunc), k2, trunc=trunc).sum()

    _, g = jax.jit(ad.value_and_grad(secure))({"a": sa, "b": sb}, jax.random.key(2))
    pg = jax.grad(lambda p: jnp.sum((p["a"] * p["b"]) ** 2))({"a": a, "b": b})
    np.testing.assert_allclose(tensor.reveal(g["a"]), pg["a"], atol=GRAD_TOL)
    np.testing.assert_allclose(tensor.reveal(g["b"]), pg["b"], atol=GRAD_TOL)


def test_softmax_cross_entropy_value_and_gradient():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(4, 10)) * 3
    y = np.eye(10)[rng.integers(0, 10, 4)]
    sz, sy = tensor.share(z, jax.random.key(0), 2), tensor.share(y, jax.random.key(1), 2)
    v, g = jax.jit(ad.value_and_grad(losses.softmax_cross_entropy))(sz, sy, jax.random.key(2))
    pv, pg = jax.value_and_grad(losses.softmax_cross_entropy_plain)(z, y)
    assert abs(float(tensor.reveal(v)) - float(pv)) < 1e-3  # log/exp approximation error
    np.testing.assert_allclose(tensor.reveal(g), pg, atol=1e-3)


def test_value_carriers_keep_every_bit_through_moves():
    """Value carriers hold the uint64 bits as float64 bit patterns (NaNs, infinities,
    denormals included): moving them (reshape, transpose, gather, concatenate,
    broadcast, where) must not change a bit, jitted or not."""
    words = np.array(
        [0, 1, 2**52 - 1, 0x7FF0000000000000, 0x7FF8000000000001, 0xFFF0000000000000,
         0xFFFFFFFFFFFFFFFF, 0x8000000000000000, 0x7FF0000000000001, 12345678901234567890],
        np.uint64,
    )

    def moves(u):
        c = tensor.to_value_carrier(jnp.asarray(u).reshape(2, 5))
        c = jnp.concatenate([c.T, c.T[::-1]], axis=1)[jnp.array([4, 0, 2, 1, 3])]
        c = jnp.where(jnp.arange(4) < 2, c, c[:, ::-1])
        c = jnp.broadcast_to(c[None], (2, 5, 4))[1]
        return tensor.from_value_carrier(c)

    want = np.asarray(moves(words))
    np.testing.assert_array_equal(want, np.asarray(jax.jit(moves)(words)))
    assert set(want.ravel().tolist()) == set(words.tolist())


@pytest.mark.parametrize("n_parties", [2, 3])
def test_local_arithmetic_on_value_carriers_is_exact(n_parties):
    """Sums, negation, public offsets and mixing with uint64 tensors inside
    value_and_grad: the value is bit-exact, the gradient exact (no products)."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    k = jax.random.key(7)
    sx, sy = tensor.share(x, k, n_parties), tensor.share(y, jax.random.fold_in(k, 1), n_parties)

    def f(x_, y_):
        z = -(x_ - y_) + 2.5 + x_.sum(axis=0) - x_  # y_ stays uint64 (not differentiated)
        return (z + z).sum()

    value, g = jax.jit(ad.value_and_grad(f))(sx, sy)
    assert tensor.reconstruct(value) == tensor.reconstruct(f(sx, sy))  # same ring value
    np.testing.assert_allclose(tensor.reveal(value), 2 * np.sum(-(x - y) + 2.5 + x.sum(0) - x), atol=1e-3)
    # d/dx of 2 * sum(-x + x.sum(0) - x) = 2 * (-1 + 3 - 1) per element
    np.testing.assert_array_equal(tensor.reveal(g), np.full((3, 4), 2.0))
