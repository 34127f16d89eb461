"""Encrypted gradients: secure ops as ``jax.custom_vjp`` over a float carrier.

JAX will not differentiate integer arrays, and a custom_vjp rule cannot hand
back uint64 cotangents. So while differentiating, a :class:`SharedTensor`
carries its shares as **complex128**, in two encodings (see
:mod:`jaxmpc.tensor`): values hold the uint64 bits themselves (free to
convert: XLA removes the conversions), tangents and cotangents hold the high
and low 32 bits as exact integers. The carrier is internal: users pass and get
uint64 shares.

Why this is exact: outside secure ops, JAX only moves value carriers
(reshape, transpose, indexing, broadcast); sums and negations of values go
through :func:`jaxmpc.tensor.linear_on_carriers`, which computes them on the
ring and gives JAX the same linear map for the tangents. JAX's own cotangent
arithmetic is additive (``ct_1 + ct_2`` when a value is used twice, sums,
negation), and integer sums of 32-bit halves stay far below 2**53, so every
cotangent converts back to the right ring element; zeros are ring zeros.
Everything else is a secure op built with :func:`secure_op`, whose forward
pass converts value carriers to uint64, runs a protocol on shares and converts
back, and whose backward pass does the same with the additive carriers.

Each rule below states its backward protocol. Randomness: an op takes one
``key``; its forward pass uses ``fold_in(key, 0)`` and its backward pass
``fold_in(key, 1)``, so the dealer never reuses a correlation.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxmpc import ring, tensor
from jaxmpc.protocols import arithmetic, comparison
from jaxmpc.protocols.arithmetic import Premasked
from jaxmpc.tensor import SharedTensor

Fwd = Callable[..., tuple[SharedTensor, Any]]
Bwd = Callable[..., tuple[SharedTensor | None, ...]]


def _is_shared(x: Any) -> bool:
    return isinstance(x, (SharedTensor, Premasked))


def as_ring(x: SharedTensor | Premasked, tangent: bool = False) -> SharedTensor | Premasked:
    """The uint64 form of a tensor (identity if it is one already); ``tangent``:
    from the additive carrier of a (co)tangent, else from a value carrier."""
    if not x.is_carrier:
        return x
    decode = tensor.from_carrier if tangent else tensor.from_value_carrier
    if isinstance(x, Premasked):
        return Premasked(decode(x.b), decode(x.f), x.frac_bits)
    return SharedTensor(decode(x.shares), x.frac_bits)


def as_carrier(x: SharedTensor | Premasked, tangent: bool = False) -> SharedTensor | Premasked:
    """The complex128 carrier of a tensor (identity if it is one already):
    additive for a (co)tangent (``tangent``), else a value carrier.

    A :class:`Premasked` weight carries its mask and its opened part, so its
    cotangent is a premasked gradient (its pre-split limbs, a function of the
    weight, are dropped: a trained weight changes)."""
    if x.is_carrier:
        return x
    encode = tensor.to_carrier if tangent else tensor.to_value_carrier
    if isinstance(x, Premasked):
        return Premasked(encode(x.b), encode(x.f), x.frac_bits)
    return SharedTensor(encode(x.shares), x.frac_bits)


def secure_op(fwd: Fwd, bwd: Bwd) -> Callable[..., SharedTensor]:
    """Make a differentiable secure op from a forward and a backward protocol.

    ``fwd(key, *xs) -> (out, residuals)`` and ``bwd(key, residuals, ct, needs)
    -> cotangents`` work on uint64 tensors; ``needs[i]`` tells ``bwd`` whether
    input ``i`` is being differentiated, so it can skip (return None for) the
    others — e.g. no gradient is computed for the input data. Static
    arguments are bound with ``functools.partial`` before calling.

    The returned ``op(key, *xs)`` runs ``fwd`` directly on uint64 inputs; if
    any input is a carrier it runs through ``jax.custom_vjp``.
    """

    def op(key: jax.Array, *xs: SharedTensor) -> SharedTensor:
        needs = tuple(x.is_carrier for x in xs)
        k_fwd, k_bwd = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        if not any(needs):
            return fwd(k_fwd, *xs)[0]

        @jax.custom_vjp
        def carrier_op(k_f, k_b, *cs):
            return as_carrier(fwd(k_f, *map(as_ring, cs))[0])

        def carrier_fwd(k_f, k_b, *cs):
            out, res = fwd(k_f, *map(as_ring, cs))
            return as_carrier(out), (k_b, res)

        def carrier_bwd(saved, ct):
            k_b, res = saved
            cts = bwd(k_b, res, as_ring(ct, tangent=True), needs)
            return (None, None) + tuple(
                as_carrier(c, tangent=True) if (c is not None and need) else None for c, need in zip(cts, needs)
            )

        carrier_op.defvjp(carrier_fwd, carrier_bwd)
        return carrier_op(k_fwd, k_bwd, *xs)

    return op


def value_and_grad(
    fn: Callable[..., Any], argnums: int = 0, has_aux: bool = False
) -> Callable[..., Any]:
    """Like ``jax.value_and_grad`` for a function of shared tensors.

    ``fn`` returns a shared scalar (or ``(scalar, aux)`` with ``has_aux``);
    argument ``argnums`` is a pytree of uint64 :class:`SharedTensor`. Returns
    ``(value, grads)`` (or ``((value, aux), grads)``) with ``grads`` a pytree
    of uint64 shared tensors of the same structure: shares of
    ``d value / d params``. The cotangent seed is the public constant 1.
    Nothing is opened by differentiation itself.
    """

    def wrapped(*args: Any, **kwargs: Any):
        params = args[argnums]
        carriers = jax.tree.map(as_carrier, params, is_leaf=_is_shared)

        def f(c):
            call_args = list(args)
            call_args[argnums] = c
            return fn(*call_args, **kwargs)

        if has_aux:
            out, vjp, aux = jax.vjp(f, carriers, has_aux=True)
        else:
            out, vjp = jax.vjp(f, carriers)
        if not isinstance(out, SharedTensor) or out.size != 1:
            raise TypeError(
                "value_and_grad needs a function returning a shared scalar "
                f"(got {out!r}); sum or average it first"
            )
        seed = tensor.from_public(jnp.ones(out.shape), out.n_parties, out.frac_bits)
        (grads,) = vjp(as_carrier(seed, tangent=True))
        grads = jax.tree.map(functools.partial(as_ring, tangent=True), grads, is_leaf=_is_shared)
        value = as_ring(out)
        return ((value, aux), grads) if has_aux else (value, grads)

    return wrapped


# ----------------------------------------------------------------- the rules


def _matmul_fwd(key, x, w, *, trunc):
    product = arithmetic.bilinear_sm if isinstance(w, Premasked) else arithmetic.bilinear_ss
    z, masks = product(x, w, key, ring.matmul, trunc=trunc, keep_masks=True)
    return z, (masks, x.frac_bits, w.frac_bits, isinstance(w, Premasked))


def _matmul_bwd(key, res, ct, needs, *, trunc, w_grad_scale):
    """``dx = ct @ w^T``, ``dw = x^T @ ct`` (only those needed), reusing the
    forward masks: one opening of ``ct - m``, one round of truncation. A
    :class:`Premasked` ``w`` gets its gradient in premasked form."""
    masks, fx, fw, premasked = res
    return arithmetic.bilinear_transpose_ss(
        ct, masks, key,
        (lambda c, y: ring.matmul(c, jnp.swapaxes(y, -1, -2))) if needs[0] else None,
        (lambda x, c: ring.matmul(jnp.swapaxes(x, -1, -2), c)) if needs[1] else None,
        x_frac=fx, y_frac=fw, trunc=trunc, y_scale=w_grad_scale, premasked_y=premasked,
    )


def matmul(
    x: SharedTensor, w: SharedTensor | Premasked, key: jax.Array, *, trunc="dealer", w_grad_scale: float | None = None
) -> SharedTensor:
    """Differentiable ``x @ w`` (2-D): Beaver matmul forward; backward reuses
    its masks (:func:`jaxmpc.protocols.arithmetic.bilinear_transpose_ss`).

    ``w_grad_scale``: the backward pass returns ``w_grad_scale * dw`` (``dx``
    unscaled), folded into ``dw``'s truncation at no cost -- e.g. a learning
    rate, so that SGD needs no truncation of its own (see
    :func:`jaxmpc.optim.sgd`'s ``prescaled``). Needs ``trunc="dealer"``.

    A :class:`~jaxmpc.protocols.arithmetic.Premasked` ``w``
    (:func:`~jaxmpc.protocols.arithmetic.premask`) opens only ``x``'s mask in
    the forward pass, and nothing when ``x`` is premasked too (training data
    premasked once; no gradient flows to it). Not differentiated, this is the
    inference-only product; differentiated (training), the gradient comes back
    premasked, so that ``w - lr dw`` stays premasked and is never opened
    again (needs the dealer's fused truncation).
    """
    premasked = isinstance(w, Premasked)
    if len(x.shape) != 2 or len(w.shape) != 2:
        raise ValueError(f"matmul takes 2-D operands, got shapes {x.shape} and {w.shape}")
    if isinstance(x, Premasked) and x.is_carrier:
        raise TypeError("a Premasked input gets no gradient; differentiate by the weights only")
    if isinstance(x, Premasked) and not premasked:
        raise TypeError(
            "a Premasked input (data opened once under its mask) needs Premasked weights (nn.premask_params)"
        )
    if premasked and not w.is_carrier and not x.is_carrier:
        return arithmetic.matmul(x, w, key, trunc=trunc)
    if w_grad_scale is not None:
        arithmetic._encode_scale(w_grad_scale, w.frac_bits)  # fail early, outside the backward pass
    if (w_grad_scale is not None or (premasked and w.is_carrier)) and trunc != "dealer":
        raise ValueError(
            "w_grad_scale and premasked training weights need the dealer's fused truncation: use "
            "trunc='dealer' (or plain shared weights, Premasked.as_shared)"
        )
    return secure_op(
        functools.partial(_matmul_fwd, trunc=trunc),
        functools.partial(_matmul_bwd, trunc=trunc, w_grad_scale=w_grad_scale),
    )(key, x, w)


def _scale_grad_fwd(key, x, *, scale, trunc):
    return x, None


def _scale_grad_bwd(key, res, ct, needs, *, scale, trunc):
    return (arithmetic.mul_public(ct, scale, key, trunc=trunc),)


def scale_grad(x: SharedTensor, scale: float, key: jax.Array, *, trunc="dealer") -> SharedTensor:
    """The identity forward; the backward pass multiplies the cotangent by the
    public ``scale`` (one truncation of ``|x|`` elements). E.g. a bias whose
    gradient must carry the learning rate like the weights' (:func:`matmul`'s
    ``w_grad_scale``)."""
    return secure_op(
        functools.partial(_scale_grad_fwd, scale=scale, trunc=trunc),
        functools.partial(_scale_grad_bwd, scale=scale, trunc=trunc),
    )(key, x)


def _sum_to_shape(z: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sum a (per-party) ring array over the axes that broadcasting added to ``shape``."""
    extra = z.ndim - len(shape)
    if extra:
        z = jnp.sum(z, axis=tuple(range(extra)), dtype=z.dtype)
    axes = tuple(i for i, (a, b) in enumerate(zip(z.shape, shape)) if b == 1 and a != 1)
    return jnp.sum(z, axis=axes, keepdims=True, dtype=z.dtype) if axes else z


def _mul_fwd(key, x, y, *, trunc):
    z, masks = arithmetic.bilinear_ss(x, y, key, ring.mul, trunc=trunc, keep_masks=True)
    return z, (masks, x.shape, y.shape, x.frac_bits, y.frac_bits)


def _mul_bwd(key, res, ct, needs, *, trunc):
    """``dx = ct * y``, ``dy = ct * x``, summed over broadcast axes, reusing the forward masks."""
    masks, xs, ys, fx, fy = res
    return arithmetic.bilinear_transpose_ss(
        ct, masks, key,
        (lambda c, y: _sum_to_shape(c * y, xs)) if needs[0] else None,
        (lambda x, c: _sum_to_shape(x * c, ys)) if needs[1] else None,
        x_frac=fx, y_frac=fy, trunc=trunc,
    )


def mul(x: SharedTensor, y: SharedTensor, key: jax.Array, *, trunc="dealer") -> SharedTensor:
    """Differentiable elementwise ``x * y`` of secrets (broadcasting)."""
    return secure_op(
        functools.partial(_mul_fwd, trunc=trunc), functools.partial(_mul_bwd, trunc=trunc)
    )(key, x, y)


def _square_fwd(key, x, *, trunc):
    return arithmetic.square(x, key, trunc=trunc), x


def _square_bwd(key, x, ct, needs, *, trunc):
    """``dx = 2 x ct``: one Beaver mul (the 2 is a local integer factor)."""
    return (arithmetic.mul(ct, x, key, trunc=trunc) * 2,)


def square(x: SharedTensor, key: jax.Array, *, trunc="dealer") -> SharedTensor:
    """Differentiable ``x * x`` (the square activation)."""
    return secure_op(
        functools.partial(_square_fwd, trunc=trunc), functools.partial(_square_bwd, trunc=trunc)
    )(key, x)


def _mul_public_fwd(key, x, *, c, trunc):
    return arithmetic.mul_public(x, c, key, trunc=trunc), None


def _mul_public_bwd(key, res, ct, needs, *, c, trunc):
    """``dx = c * ct`` (public factor, local product and truncation)."""
    return (arithmetic.mul_public(ct, c, key, trunc=trunc),)


def mul_public(x: SharedTensor, c: float, key: jax.Array, *, trunc="dealer") -> SharedTensor:
    """Differentiable ``x * c`` for a public scalar ``c``."""
    return secure_op(
        functools.partial(_mul_public_fwd, c=c, trunc=trunc),
        functools.partial(_mul_public_bwd, c=c, trunc=trunc),
    )(key, x)


def _relu_fwd(key, x):
    return comparison.relu(x, key)  # (max(x, 0), bit [x > 0]) -- the bit is the residual


def _relu_bwd(key, bit, ct, needs):
    """``dx = ct * [x > 0]`` with the bit kept from the forward pass: one Beaver
    mul by a 0/1 integer (no truncation, no second comparison)."""
    return (comparison.mul_bit(bit, ct, key),)


def relu(x: SharedTensor, key: jax.Array) -> SharedTensor:
    """Differentiable ReLU; the backward pass reuses the forward comparison bit.

    Forward: ``ltz`` + one Beaver mul by the bit; backward: one Beaver mul.
    Exact (no truncation).
    """
    return secure_op(_relu_fwd, _relu_bwd)(key, x)
