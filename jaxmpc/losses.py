"""Losses on shares (differentiable), with their plaintext twins."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxmpc import autodiff as ad
from jaxmpc.protocols import approx, arithmetic, comparison
from jaxmpc.protocols.arithmetic import TruncMethod
from jaxmpc.tensor import SharedTensor, check_compatible


def _check_pair(pred: SharedTensor, target: SharedTensor, name: str) -> None:
    check_compatible(pred, target)
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(
            f"{name} needs predictions and targets of equal (batch, classes) shape, "
            f"got {pred.shape} and {target.shape}"
        )


def mse(pred: SharedTensor, target: SharedTensor, key: jax.Array, *, trunc: TruncMethod = "dealer") -> SharedTensor:
    """``sum((pred - target)**2) / batch``: squared error summed over classes,
    averaged over the batch (the reference workflow's loss).

    Cost: one square (1 round + truncation) forward; backward one Beaver mul
    by the cotangent and one public scaling.
    """
    _check_pair(pred, target, "mse")
    k_sq, k_mean = jax.random.split(key)
    return ad.mul_public(ad.square(pred - target, k_sq, trunc=trunc).sum(), 1.0 / pred.shape[0], k_mean, trunc=trunc)


def mse_plain(pred: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.sum((pred - target) ** 2) / pred.shape[0]


def _xent_fwd(key, logits, target, *, trunc):
    """``log_softmax(z) = z - m - log s`` with ``m = max z`` and ``s = sum exp(z - m)``
    in ``[1, k]``, where log and reciprocal are well conditioned."""
    batch, k = logits.shape
    keys = iter(jax.random.split(key, 6))
    m = comparison.max(logits, next(keys), axis=-1, keepdims=True)
    shifted = logits - m
    e = approx.exp(shifted, next(keys), hi=0.0, trunc=trunc)
    s = e.sum(-1, keepdims=True)
    probs = arithmetic.mul(e, approx.reciprocal(s, next(keys), lo=1.0, hi=float(k), trunc=trunc), next(keys), trunc=trunc)
    log_probs = shifted - approx.log(s, next(keys), lo=1.0, hi=float(k), trunc=trunc)
    total = arithmetic.mul(target, log_probs, next(keys), trunc=trunc).sum()
    loss = arithmetic.mul_public(-total, 1.0 / batch, jax.random.fold_in(key, 99), trunc=trunc)
    return loss, (probs, target)


def _xent_bwd(key, res, ct, needs, *, trunc):
    """``d logits = ct * (softmax(z) - y) / batch`` (one Beaver mul, one public scaling)."""
    probs, target = res
    k_mul, k_scale = jax.random.split(key)
    grad = arithmetic.mul(probs - target, ct, k_mul, trunc=trunc)
    d_logits = arithmetic.mul_public(grad, 1.0 / probs.shape[0], k_scale, trunc=trunc)
    return (d_logits if needs[0] else None, None)


def softmax_cross_entropy(
    logits: SharedTensor, target: SharedTensor, key: jax.Array, *, trunc: TruncMethod = "dealer"
) -> SharedTensor:
    """``-sum(target * log_softmax(logits)) / batch``, differentiable in ``logits``.

    Forward: max (tournament), exp, reciprocal and log of the partition sum
    (:mod:`jaxmpc.protocols.approx`), one Beaver mul with the targets.
    Backward: ``(softmax - target) / batch``, reusing the forward softmax. The
    targets get no gradient. Accuracy: that of the approximations, see
    docs/approximations.md.
    """
    _check_pair(logits, target, "softmax_cross_entropy")
    return ad.secure_op(
        functools.partial(_xent_fwd, trunc=trunc), functools.partial(_xent_bwd, trunc=trunc)
    )(key, logits, target)


def softmax_cross_entropy_plain(logits: jax.Array, target: jax.Array) -> jax.Array:
    return -jnp.sum(target * jax.nn.log_softmax(logits)) / logits.shape[0]
