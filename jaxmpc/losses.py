"""Losses on shares (differentiable), with their plaintext twins."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmpc import autodiff as ad
from jaxmpc.protocols.arithmetic import TruncMethod
from jaxmpc.tensor import SharedTensor, check_compatible


def mse(pred: SharedTensor, target: SharedTensor, key: jax.Array, *, trunc: TruncMethod = "dealer") -> SharedTensor:
    """``sum((pred - target)**2) / batch``: squared error summed over classes,
    averaged over the batch (the reference workflow's loss).

    Cost: one square (1 round + truncation) forward; backward one Beaver mul
    by the cotangent and one public scaling.
    """
    check_compatible(pred, target)
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"mse needs predictions and targets of equal (batch, classes) shape, got {pred.shape} and {target.shape}")
    k_sq, k_mean = jax.random.split(key)
    return ad.mul_public(ad.square(pred - target, k_sq, trunc=trunc).sum(), 1.0 / pred.shape[0], k_mean, trunc=trunc)


def mse_plain(pred: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.sum((pred - target) ** 2) / pred.shape[0]
