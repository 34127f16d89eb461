"""The ring Z_2^64 held in ``uint64`` arrays, and binary fixed-point encoding.

Everything above this module computes on ring elements; wrap-around uint64
arithmetic *is* the ring arithmetic. A real number ``x`` is encoded with ``f``
fractional bits as ``round(x * 2**f)`` in two's complement.

Range: encoding accepts ``|x| * 2**f < 2**62`` (:data:`ENCODE_LIMIT`), leaving
one bit of head-room for a sum and the sign bit for comparisons. A product of
two encoded values carries ``2f`` fractional bits until it is truncated, so a
product is only meaningful while ``|x*y| * 2**(2f) < 2**63``; see
``docs`` in the README for the per-op ranges.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

RING_BITS = 64
RING_DTYPE = jnp.uint64
DEFAULT_FRAC_BITS = 16
#: Largest magnitude an encoded integer may have: ``|round(x * 2**f)| < 2**62``.
ENCODE_LIMIT = 2**62


def _require_x64() -> None:
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            "jaxmpc needs 64-bit types: call jax.config.update('jax_enable_x64', True) "
            "before creating arrays (importing jaxmpc does this unless "
            "JAXMPC_NO_X64=1 is set)."
        )


def max_abs(frac_bits: int) -> float:
    """The largest magnitude a real value may have to be encoded with ``frac_bits``."""
    return ENCODE_LIMIT / 2.0**frac_bits


def check_frac_bits(frac_bits: int) -> int:
    if not isinstance(frac_bits, (int, np.integer)) or isinstance(frac_bits, bool):
        raise TypeError(f"frac_bits must be an int, got {type(frac_bits).__name__}")
    if not 0 <= frac_bits <= 40:
        raise ValueError(
            f"frac_bits={frac_bits} is outside 0..40: products need 2*frac_bits bits "
            "below the 62-bit limit, so use at most 40 (16 is the default)."
        )
    return int(frac_bits)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def encode(x, frac_bits: int = DEFAULT_FRAC_BITS) -> jax.Array:
    """Fixed-point encode a real array: ``round(x * 2**f) mod 2**64`` as uint64.

    Concrete (non-traced) inputs are checked: non-finite values and values with
    ``|x| >= 2**(62-f)`` raise ``ValueError``. Traced inputs cannot be checked
    and are clipped into range instead of wrapping.
    """
    _require_x64()
    frac_bits = check_frac_bits(frac_bits)
    if _is_concrete(x):
        xn = np.asarray(x)
        if xn.dtype.kind not in "biuf":
            raise TypeError(f"cannot encode an array of dtype {xn.dtype}; pass real numbers")
        if xn.dtype.kind == "f" and not np.all(np.isfinite(xn)):
            raise ValueError("cannot encode non-finite values (nan or inf) in fixed point")
        limit = max_abs(frac_bits)
        if xn.size and np.max(np.abs(xn.astype(np.float64))) >= limit:
            worst = float(np.max(np.abs(xn.astype(np.float64))))
            raise ValueError(
                f"value {worst:g} is out of the fixed-point range |x| < 2**{62 - frac_bits} "
                f"= {limit:g} for frac_bits={frac_bits}; rescale the input or use fewer "
                "fractional bits."
            )
    scaled = jnp.round(jnp.asarray(x, dtype=jnp.float64) * (2.0**frac_bits))
    bound = float(ENCODE_LIMIT - 2**10)  # largest float64 below 2**62 with margin
    scaled = jnp.clip(scaled, -bound, bound)
    return jax.lax.bitcast_convert_type(scaled.astype(jnp.int64), RING_DTYPE)


def decode(x: jax.Array, frac_bits: int = DEFAULT_FRAC_BITS) -> jax.Array:
    """Inverse of :func:`encode`: read uint64 as two's complement, divide by ``2**f``."""
    return to_signed(x).astype(jnp.float64) / (2.0**frac_bits)


def to_signed(x: jax.Array) -> jax.Array:
    """Reinterpret ring elements as int64 (two's complement), bit for bit."""
    return jax.lax.bitcast_convert_type(jnp.asarray(x, RING_DTYPE), jnp.int64)


def from_signed(x) -> jax.Array:
    """Reinterpret int64 as ring elements, bit for bit."""
    return jax.lax.bitcast_convert_type(jnp.asarray(x, jnp.int64), RING_DTYPE)


def ring(x) -> jax.Array:
    """Integers (any signed/unsigned dtype, or Python ints) as ring elements mod 2**64."""
    x = jnp.asarray(x)
    if x.dtype == RING_DTYPE:
        return x
    if x.dtype.kind not in "iub":
        raise TypeError(f"ring() takes integers, got {x.dtype}; use encode() for reals")
    return x.astype(jnp.int64).astype(RING_DTYPE)


def arith_shift_right(x: jax.Array, bits: int) -> jax.Array:
    """Signed (arithmetic) right shift of ring elements: ``floor(x / 2**bits)``."""
    return from_signed(jnp.right_shift(to_signed(x), jnp.int64(bits)))


def scaled_shift_right(x: jax.Array, scale: int, bits: int) -> jax.Array:
    """``floor(scale * x / 2**bits)`` for signed ring elements ``x`` and a public
    integer ``0 < scale < 2**31``, exact (the product is formed in 96 bits) and
    reduced mod 2**64. ``scale=1`` is :func:`arith_shift_right`.

    With ``x = 2**32 hi + lo`` (``hi`` signed, ``lo`` unsigned 32-bit):
    ``scale*hi`` and ``scale*lo`` fit 64 bits, and
    ``floor((scale*hi*2**32 + scale*lo) / 2**bits)`` is
    ``scale*hi*2**(32-bits) + (scale*lo >> bits)`` for ``bits <= 32`` and
    ``(scale*hi + (scale*lo >> 32)) >>_a (bits-32)`` above.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or not 0 < scale < 2**31:
        raise ValueError(f"scale must be an integer in [1, 2**31), got {scale!r}")
    if not 0 <= bits <= 63:
        raise ValueError(f"bits must be in [0, 63], got {bits}")
    if scale == 1:
        return arith_shift_right(x, bits)
    sx = to_signed(x)
    hi = jnp.right_shift(sx, jnp.int64(32)) * jnp.int64(scale)
    lo = (x & RING_DTYPE(2**32 - 1)) * RING_DTYPE(scale)
    if bits <= 32:
        return from_signed(hi) * RING_DTYPE(2 ** (32 - bits)) + (lo >> RING_DTYPE(bits))
    top = hi + to_signed(lo >> RING_DTYPE(32))
    return from_signed(jnp.right_shift(top, jnp.int64(bits - 32)))


def random_ring(key: jax.Array, shape) -> jax.Array:
    """Uniform ring elements."""
    return jax.random.bits(key, tuple(shape), RING_DTYPE)


# ---------------------------------------------------------------------------
# Bilinear maps over the ring. Beaver's protocol is written once against this
# signature, so mul, matmul and conv share it.
# ---------------------------------------------------------------------------

Bilinear = Callable[[jax.Array, jax.Array], jax.Array]


def mul(a: jax.Array, b: jax.Array) -> jax.Array:
    """Elementwise product mod 2**64 (broadcasting)."""
    return jnp.multiply(a, b)


def matmul_reference(a: jax.Array, b: jax.Array) -> jax.Array:
    """Matrix product mod 2**64 by XLA's integer dot (exact, slow on CPU and GPU)."""
    return jnp.matmul(a, b)


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """Matrix product mod 2**64, choosing the fastest exact kernel for the shapes.

    See :mod:`jaxmpc.limbs` for the float64-limb fast path.
    """
    from jaxmpc import limbs  # local import: limbs builds on this module

    return limbs.matmul(a, b)
