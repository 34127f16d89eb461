"""End-to-end cases on the reference MLP (784-128-64-10, batch 64): a secure
training step, inference, encrypted evaluation and one SGD update, each with
its plain JAX float32 twin; and :func:`step_composition`, the per-op
benchmarks a step is made of (for the report's breakdown)."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmpc import losses, nn, optim, tensor, train
from jaxmpc.bench.cases import BATCH, CLASSES, Built, _key, _uniform


def _reference_model(n: int, activation: str, seed: int = 0):
    """Shared and plaintext parameters, optimizer and one batch of synthetic data.

    The data are random (inputs like normalised pixels, one-hot labels):
    timings do not depend on the values."""
    config = train.TrainConfig(parties=n, activation=activation).validate()
    root = _key(seed)
    k_init, k_model, k_data, k_opt = jax.random.split(root, 4)
    params_plain = nn.init_mlp(k_init)
    params = nn.share_params(params_plain, k_model, n, config.frac_bits)
    x = _uniform((BATCH, nn.MNIST_MLP[0]), -0.42, 2.8, 5)
    labels = np.random.default_rng(6).integers(0, CLASSES, BATCH)
    y = np.eye(CLASSES, dtype=np.float32)[labels]
    xs = tensor.share(x, jax.random.fold_in(k_data, 0), n, config.frac_bits)
    ys = tensor.share(y, jax.random.fold_in(k_data, 1), n, config.frac_bits)
    optimizer = train.make_optimizer(config, k_opt)  # (optimizer, grad_scale), as the main job
    return config, params_plain, params, optimizer, (x, y), (xs, ys)


def _plain_train_step(config: train.TrainConfig):
    """The same SGD step in plain JAX float32 (as :func:`jaxmpc.train.train_plaintext`)."""
    opt = optax.sgd(config.lr)

    def loss(p, x, y):
        return losses.mse_plain(nn.mlp_plain(p, x, activation=config.activation), y)

    def step(p, s, x, y):
        v, g = jax.value_and_grad(loss)(p, x, y)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, v

    return step, opt


def _train_step_case(n: int, activation: str) -> Callable[[], Built]:
    def build() -> Built:
        config, pp, params, (optimizer, grad_scale), (x, y), (xs, ys) = _reference_model(n, activation)
        step = train.make_train_step(config, optimizer, grad_scale)
        # as the main job: weights and inputs premasked once, before training
        params = jax.jit(functools.partial(train.training_params, config))(params, _key(8))
        xs = jax.jit(functools.partial(train.training_data, config))(xs, _key(10))
        plain_step, plain_opt = _plain_train_step(config)
        pp = jax.tree.map(jnp.asarray, pp)
        return Built(
            step,
            (params, optimizer.init(params), xs, ys, _key(9)),
            plain_step,
            (pp, plain_opt.init(pp), jnp.asarray(x), jnp.asarray(y)),
        )

    return build


def _inference_case(n: int, activation: str) -> Callable[[], Built]:
    """One batch through a model whose weights were premasked once
    (:func:`jaxmpc.nn.premask_params`, outside the timing, as a served model)."""

    def build() -> Built:
        config, pp, params, _, (x, _y), (xs, _ys) = _reference_model(n, activation)
        masked = jax.jit(nn.premask_params)(params, _key(8))
        return Built(
            lambda p, x, key: nn.mlp(p, x, key, activation=activation, trunc=config.trunc),
            (masked, xs, _key(9)),
            lambda p, x: nn.mlp_plain(p, x, activation=activation),
            (jax.tree.map(jnp.asarray, pp), jnp.asarray(x)),
        )

    return build


def _eval_step_case(n: int, activation: str) -> Callable[[], Built]:
    def build() -> Built:
        config, pp, params, _, (x, y), (xs, ys) = _reference_model(n, activation)

        def plain(p, x, y):
            pred = jnp.argmax(nn.mlp_plain(p, x, activation=activation), axis=-1)
            return jnp.sum(pred == jnp.argmax(y, axis=-1))

        return Built(
            train.make_eval_step(config),
            (jax.jit(nn.premask_params)(params, _key(8)), xs, ys, _key(9)),
            plain,
            (jax.tree.map(jnp.asarray, pp), jnp.asarray(x), jnp.asarray(y)),
        )

    return build


def _sgd_case(n: int) -> Callable[[], Built]:
    """One SGD update of all parameters of the reference MLP (gradient -> new params)."""

    def build() -> Built:
        config, pp, params, _, _, _ = _reference_model(n, "relu")
        # the classic update on plain gradients (one truncation per parameter);
        # the main job folds the learning rate into the backward pass instead
        optimizer = optim.sgd(config.lr, _key(10), config.momentum, trunc=config.trunc)
        grads = nn.share_params(jax.tree.map(lambda p: p * 0.01, pp), _key(11), n, config.frac_bits)

        def secure(params, state, grads):
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        plain_opt = optax.sgd(config.lr)
        pp = jax.tree.map(jnp.asarray, pp)
        pg = jax.tree.map(lambda p: p * 0.01, pp)

        def plain(p, s, g):
            u, s = plain_opt.update(g, s, p)
            return optax.apply_updates(p, u), s

        return Built(secure, (params, optimizer.init(params), grads), plain, (pp, plain_opt.init(pp), pg))

    return build


#: The secure ops of one training step / inference batch of the reference MLP
#: (batch 64), by activation: (per-op benchmark, how many times).
def step_composition(kind: str, activation: str) -> list[tuple[str, int]]:
    fwd = [("matmul/64x784x128", 1), ("matmul/64x128x64", 1), ("matmul/64x64x10", 1)]
    act_fwd = (
        [("relu/64x128", 1), ("relu/64x64", 1)] if activation == "relu" else [("square/64x128", 1), ("square/64x64", 1)]
    )
    if kind == "inference":
        return fwd + act_fwd
    bwd = [("matmul/64x64x128", 1), ("matmul/64x10x64", 1), ("matmul/784x64x128", 1),
           ("matmul/128x64x64", 1), ("matmul/64x64x10", 1)]
    act_bwd = (
        [("mul_bit/64x128", 1), ("mul_bit/64x64", 1)] if activation == "relu" else [("mul/64x128", 1), ("mul/64x64", 1)]
    )
    loss = [("square/64x10", 1), ("mul/64x10", 1)]
    # no sgd_update: the main job folds the learning rate into the weight
    # gradients' truncations (train.make_optimizer), the update is a negation
    return fwd + act_fwd + loss + bwd + act_bwd
