"""Optimizers on shared parameters, as optax ``GradientTransformation``s.

Updates are shared tensors of the same structure as the parameters, so
``optax.apply_updates`` (ring addition of uint64 leaves) applies them. The
public hyper-parameters are fixed-point encoded; multiplying by them needs a
truncation, hence a PRNG key carried in the optimizer state (like optax's
noise transforms).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import optax

from jaxmpc.protocols import arithmetic
from jaxmpc.protocols.arithmetic import Premasked, TruncMethod
from jaxmpc.tensor import SharedTensor


def _is_shared(x: Any) -> bool:
    return isinstance(x, (SharedTensor, Premasked))


class SGDState(NamedTuple):
    key: jax.Array
    momentum: Any  # pytree of SharedTensor, or None without momentum


def _check_hyper(name: str, value: float, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not low <= value < high:
        raise ValueError(f"{name}={value} is outside [{low}, {high})")
    return float(value)


def sgd(
    learning_rate: float,
    key: jax.Array,
    momentum: float = 0.0,
    *,
    trunc: TruncMethod = "dealer",
    prescaled: bool = False,
) -> optax.GradientTransformation:
    """SGD on shares: ``m <- momentum * m + g``, update ``-learning_rate * m``.

    Each step costs one truncation per parameter (plus one with momentum).
    With ``frac_bits=f`` the learning rate is encoded as ``round(lr * 2**f) / 2**f``.

    ``prescaled=True``: the gradients given to ``update`` already carry the
    learning rate (``g = lr * grad``, e.g. from ``nn.mlp(..., grad_scale=lr)``,
    which folds it into the backward pass's truncations), so the update is
    ``-m``: no truncation, no dealer words, no round without momentum.
    This is also the one update a :class:`~jaxmpc.protocols.arithmetic.Premasked`
    weight takes (its gradient is premasked, and so is ``-g``); with momentum
    or an unscaled gradient it would need a product, so those raise.
    """
    arithmetic._check_key(key)
    lr = _check_hyper("learning_rate", learning_rate, 0.0, 1e6)
    mu = _check_hyper("momentum", momentum, 0.0, 1.0)

    def check(tree: Any) -> None:
        if (mu or not prescaled) and any(isinstance(v, Premasked) for v in jax.tree.leaves(tree, is_leaf=_is_shared)):
            raise ValueError(
                "premasked weights take only prescaled SGD without momentum (optim.sgd(..., prescaled=True)); "
                "turn them into shares first (nn.shared_params) for momentum or a learning-rate product"
            )

    def init(params: Any) -> SGDState:
        check(params)
        zeros = None
        if mu:
            zeros = jax.tree.map(lambda p: p * 0, params, is_leaf=_is_shared)
        return SGDState(key, zeros)

    def update(grads: Any, state: SGDState, params: Any = None):
        del params
        check(grads)
        leaves, treedef = jax.tree.flatten(grads, is_leaf=_is_shared)
        key, step_key = jax.random.split(state.key)
        keys = jax.random.split(step_key, 2 * len(leaves)).reshape(2, len(leaves))
        if mu:
            m_leaves = jax.tree.leaves(state.momentum, is_leaf=_is_shared)
            m_leaves = [
                arithmetic.mul_public(m, mu, k, trunc=trunc) + g for m, g, k in zip(m_leaves, leaves, keys[0])
            ]
            new_momentum = jax.tree.unflatten(treedef, m_leaves)
        else:
            m_leaves, new_momentum = leaves, None
        if prescaled:
            updates = [-m for m in m_leaves]
        else:
            updates = [arithmetic.mul_public(m, -lr, k, trunc=trunc) for m, k in zip(m_leaves, keys[1])]
        return jax.tree.unflatten(treedef, updates), SGDState(key, new_momentum)

    return optax.GradientTransformation(init, update)
