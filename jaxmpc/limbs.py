"""Exact matrix products mod 2**64 on float64 GEMM (the CryptGPU limb trick).

XLA has no fast kernel for ``uint64`` dots (on this 2-core CPU, 64x784 @ 784x128
takes ~6.1 ms), while float64 GEMM is fast. So each ring element is cut into
three *balanced* (signed) limbs small enough that float64 computes their
products and sums exactly, and the integer results are recombined mod 2**64.
Contractions of 512 and more take eight int8 byte limbs on an int8 GEMM with
int32 accumulation instead (:func:`matmul_bytes`, same idea, faster here).

Limbs. Widths 22, 21, 21 bits at offsets 0, 22, 43. With
``y = x + BIAS mod 2**64`` (``BIAS`` = half of each limb's range at its offset)::

    d0 = (y mod 2**22)          - 2**21   in [-2**21, 2**21)
    d1 = (y >> 22 mod 2**21)    - 2**20   in [-2**20, 2**20)
    d2 = (y >> 43)              - 2**20   in [-2**20, 2**20)

and ``d0 + 2**22 d1 + 2**43 d2 = y - BIAS = x (mod 2**64)``.

Product. In ``x*z = sum 2**(o_i+o_j) d_i e_j`` the pairs (1,2), (2,1), (2,2)
sit at offsets >= 64 and vanish mod 2**64. The rest need five GEMMs, using
Karatsuba for offset 22 (``d0 e1 + d1 e0 = (d0+d1)(e0+e1) - d0 e0 - d1 e1``)::

    P0 = A0 B0   P1 = A1 B1   P2 = (A0+A1)(B0+B1)   P3 = A0 B2 + A2 B0
    A B = P0 + 2**22 (P2 - P0 - P1) + 2**43 P3 + 2**44 P1   (mod 2**64)

Bound. The largest product term is in P2: ``|d0+d1| <= 2**21 + 2**20 = 3 * 2**20``
so ``|(d0+d1)(e0+e1)| <= 9 * 2**40``. (P0 terms are <= 2**42, P1 <= 2**40, each
P3 sum term <= 2 * 2**41 = 2**42.) Any partial sum a GEMM forms, in any order,
blocked, split across threads or fused (FMA), is an integer of magnitude at
most ``K * 9 * 2**40``; float64 holds every integer up to 2**53 exactly, so all
roundings vanish when ``K * 9 * 2**40 <= 2**53``, i.e. ``K <= 910``
(:data:`MAX_CHUNK_K`; 911 * 9 = 8199 > 2**13). The bound is attained: ``x =
-BIAS`` puts every limb at its minimum. This assumes a classical GEMM (sums of
products, no Strassen), which XLA's CPU (Eigen) and GPU (cuBLAS DGEMM) use.
Larger contractions are cut into ``ceil(K / 910)`` equal chunks whose uint64
results are added mod 2**64, so any K works. Every P fits int64 exactly, so
the float-to-int64 conversion is exact and uint64 wrap-around does the rest.

Layouts measured (jit, median of 50, idle 2-core CPU, 64x784 @ 784x128; uint64
dot 6.1 ms): six separate GEMMs (22/22/20 limbs, K <= 2048) 1.03 ms; one
stacked [a0;a1;a2] @ [b0 b1 b2] GEMM using 6 of its 9 blocks 1.15-1.22 ms;
grouped by output offset with concatenated contraction 1.36 ms; a 2Mx2N
four-block GEMM plus one concatenated pair 1.06-1.26 ms; the six as one
batched dot 1.31 ms; this Karatsuba layout, five GEMMs, 0.88-0.90 ms (~6.8x;
784x64 @ 64x128: 1.6 ms -> 0.88 ms). Karatsuba is why the widths are 22/21/21:
with 22/22/20, ``|d0+d1| <= 2**22`` would cap a chunk at K = 512. For large K,
chunking by a Python loop beat a zero-padded batched dot. The stacked GEMM
(192x784x384) runs ~1.5x more flop/s than a 64x784x128 one inside a jit, but
does 9/6 the flops, so it only breaks even before slicing costs. Tiny or skinny
products lose
to the limb overhead; :func:`matmul` keeps them on the uint64 dot
(rule: :func:`use_limbs`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmpc import ring

LIMB_BITS = (22, 21, 21)
LIMB_OFFSETS = (0, 22, 43)
#: Largest contraction per chunk for which every float64 sum is exact (see above).
MAX_CHUNK_K = 2**53 // (9 * 2**40)  # = 910
#: Dispatch thresholds of :func:`use_limbs` (measured on a 2-core CPU).
MIN_ROWS, MIN_COLS, MIN_K, MIN_KN = 4, 32, 64, 4096
_BIAS = 2**21 + 2**20 * 2**22 + 2**20 * 2**43


def _split(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Balanced float64 limbs ``(d0, d1, d2)`` with ``d0 + 2**22 d1 + 2**43 d2 = x``."""
    y = x + jnp.uint64(_BIAS)
    d0 = (y & jnp.uint64(2**22 - 1)).astype(jnp.float64) - 2.0**21
    d1 = ((y >> jnp.uint64(22)) & jnp.uint64(2**21 - 1)).astype(jnp.float64) - 2.0**20
    d2 = (y >> jnp.uint64(43)).astype(jnp.float64) - 2.0**20
    return d0, d1, d2


def _ring(p: jax.Array) -> jax.Array:
    """An exactly-integral float64 array (|p| <= 2**53) as ring elements."""
    return jax.lax.bitcast_convert_type(p.astype(jnp.int64), jnp.uint64)


def _shl(x: jax.Array, bits: int) -> jax.Array:
    return x << jnp.uint64(bits)  # wraps mod 2**64


class SplitOperand(NamedTuple):
    """The float64 limbs of a right operand ``b`` (:func:`split_rhs`), kept
    to multiply many left operands by the same ``b`` without re-splitting it."""

    d0: jax.Array
    d1: jax.Array
    d2: jax.Array
    d01: jax.Array  # d0 + d1, Karatsuba's middle factor


def split_rhs(b: jax.Array) -> SplitOperand:
    """Limbs of a uint64 right operand ``(..., K, N)``, for :func:`matmul_split_rhs`."""
    d0, d1, d2 = _split(b)
    return SplitOperand(d0, d1, d2, d0 + d1)


def _chunk_product(a: jax.Array, b: jax.Array | SplitOperand) -> jax.Array:
    """``a @ b mod 2**64`` for a contraction of at most :data:`MAX_CHUNK_K`."""
    a0, a1, a2 = _split(a)
    b0, b1, b2, b01 = b if isinstance(b, SplitOperand) else split_rhs(b)
    p0 = _ring(jnp.matmul(a0, b0))
    p1 = _ring(jnp.matmul(a1, b1))
    p2 = _ring(jnp.matmul(a0 + a1, b01))
    p3 = _ring(jnp.matmul(a0, b2) + jnp.matmul(a2, b0))  # |sum| <= K * 2**42: exact
    return p0 + _shl(p2 - p0 - p1, 22) + _shl(p3, 43) + _shl(p1, 44)


def _check(a, b) -> tuple[jax.Array, jax.Array]:
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.dtype != jnp.uint64 or b.dtype != jnp.uint64:
        raise TypeError(
            f"limbs.matmul takes uint64 ring elements, got {a.dtype} @ {b.dtype}; "
            "convert with jaxmpc.ring.ring() or ring.encode() first"
        )
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul needs operands with at least one dimension")
    return a, b


def matmul_limbs(a: jax.Array, b: jax.Array) -> jax.Array:
    """``jnp.matmul(a, b) mod 2**64`` for uint64 operands, always via float64 limbs.

    Same shape semantics as ``jnp.matmul`` (1-D operands, broadcast batch dims).
    Contractions longer than :data:`MAX_CHUNK_K` are chunked.
    """
    a, b = _check(a, b)
    k = a.shape[-1]
    chunks = max(1, math.ceil(k / MAX_CHUNK_K))
    size = math.ceil(k / chunks) if k else 0
    out = None
    for lo in range(0, max(k, 1), max(size, 1)):
        hi = min(lo + size, k)
        bk = b[lo:hi] if b.ndim == 1 else b[..., lo:hi, :]
        part = _chunk_product(a[..., lo:hi], bk)
        out = part if out is None else out + part
    return out


def matmul_split_rhs(a: jax.Array, b: SplitOperand) -> jax.Array:
    """``a @ b mod 2**64`` with ``b``'s limbs from :func:`split_rhs`: bit-equal
    to :func:`matmul_limbs` (tested), without splitting ``b`` again."""
    a = jnp.asarray(a)
    if a.dtype != jnp.uint64:
        raise TypeError(f"matmul_split_rhs takes uint64 ring elements on the left, got {a.dtype}")
    k = a.shape[-1]
    if b.d0.ndim < 2 or b.d0.shape[-2] != k:
        raise ValueError(f"matmul shapes {a.shape} and {b.d0.shape} do not match (inner dimensions differ)")
    chunks = max(1, math.ceil(k / MAX_CHUNK_K))
    size = math.ceil(k / chunks)
    out = None
    for lo in range(0, k, size):
        hi = min(lo + size, k)
        part = _chunk_product(a[..., lo:hi], SplitOperand(*(d[..., lo:hi, :] for d in b)))
        out = part if out is None else out + part
    return out


# ------------------------------------------------------------ byte limbs (int8)
#
# For long contractions an int8 GEMM with int32 accumulation beats float64 here
# (the int8 dot runs at ~800 G MAC/s on this CPU, float64 at ~65 G MAC/s per
# core). Each ring element becomes eight balanced bytes
#     d_i = byte_i(x + BIAS8) - 128  in [-128, 128),  sum_i 2**(8i) d_i = x (mod 2**64)
# with BIAS8 = 0x8080...80, and only the pairs with i + j < 8 matter mod 2**64:
# 36 of the 64 byte products. Two GEMMs cover them with 48 blocks: bytes 0-3
# of ``a`` against all eight of ``b``, bytes 4-7 of ``a`` against bytes 0-3.
#
# Bound: each byte product is at most 2**14 in magnitude, and a diagonal sum
# ``sum_{i+j=s}`` adds at most 8 GEMM outputs, so every int32 value is at most
# ``8 * K * 2**14``: exact for K <= 16383 (:data:`MAX_BYTE_CHUNK_K`); longer
# contractions are chunked. Measured (2-core CPU, jit, CPU time), against the
# float64 limbs: 64x784 @ 784x128 1.72 -> 1.29 ms, 64x784 @ 784x256 3.12 ->
# 2.06 ms, 128x784 @ 784x128 2.77 -> 2.07 ms, 64x512 @ 512x128 1.30 -> 0.89 ms;
# even at K = 256 and much slower for short contractions with large outputs
# (784x64 @ 64x256: 2.8 -> 24.5 ms), hence :func:`use_bytes`.

_BIAS8 = int("80" * 8, 16)
#: Largest contraction per chunk of the byte path (see above).
MAX_BYTE_CHUNK_K = (2**31 - 1) // (8 * 2**14)  # = 16383
#: The byte path is taken for contractions at least this long (measured).
MIN_BYTE_K = 512


def _biased(x: jax.Array) -> jax.Array:
    """``x`` with every byte ``b`` replaced by ``b ^ 0x80`` after adding ``BIAS8``:
    read as int8, byte ``i`` is the balanced digit ``d_i``."""
    return (x + jnp.uint64(_BIAS8)) ^ jnp.uint64(_BIAS8)


def _bytes(x: jax.Array) -> jax.Array:
    """Balanced int8 digits ``(..., 8)``, least significant first, of uint64 ``x``."""
    return jax.lax.bitcast_convert_type(_biased(x), jnp.int8)  # little-endian bytes


def _byte_chunk_product(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b mod 2**64`` for 2-D ``a`` (M, K), ``b`` (K, N), K <= :data:`MAX_BYTE_CHUNK_K`."""
    m, k = a.shape
    n = b.shape[1]
    ya, yb = _biased(a), _biased(b)
    # a's digit planes (8, M, K) built directly (no transpose of a byte array)
    planes = jnp.stack([(ya >> jnp.uint64(8 * i)).astype(jnp.uint8) for i in range(8)])
    da = jax.lax.bitcast_convert_type(planes, jnp.int8)
    db = jax.lax.bitcast_convert_type(yb, jnp.int8).reshape(k, 8 * n)  # (K, N, 8) -> (K, 8N), free
    db_low = jax.lax.bitcast_convert_type(yb.astype(jnp.uint32), jnp.int8).reshape(k, 4 * n)  # digits 0-3
    low = jax.lax.dot(da[:4].reshape(4 * m, k), db, preferred_element_type=jnp.int32)
    high = jax.lax.dot(da[4:].reshape(4 * m, k), db_low, preferred_element_type=jnp.int32)
    low, high = low.reshape(4, m, n, 8), high.reshape(4, m, n, 4)
    out = None
    for s in range(8):  # output byte offset s = i + j
        terms = [low[i, :, :, s - i] for i in range(min(s, 3) + 1)]
        terms += [high[i - 4, :, :, s - i] for i in range(4, s + 1) if s - i < 4]
        diag = jax.lax.bitcast_convert_type(sum(terms).astype(jnp.int64), jnp.uint64)
        out = diag if out is None else out + _shl(diag, 8 * s)
    return out


def matmul_bytes(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b mod 2**64`` for 2-D uint64 operands, always via int8 byte limbs
    (chunked past :data:`MAX_BYTE_CHUNK_K`). Bit-equal to :func:`matmul_limbs`."""
    a, b = _check(a, b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul_bytes takes 2-D operands with matching inner dimensions, got {a.shape} @ {b.shape}")
    k = a.shape[1]
    chunks = max(1, math.ceil(k / MAX_BYTE_CHUNK_K))
    size = math.ceil(k / chunks) if k else 1
    out = None
    for lo in range(0, max(k, 1), size):
        part = _byte_chunk_product(a[:, lo:lo + size], b[lo:lo + size])
        out = part if out is None else out + part
    return out


def use_bytes(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> bool:
    """The measured rule for the int8 byte path (True) over the float64 limbs:
    2-D operands, a contraction of at least :data:`MIN_BYTE_K`, and the limb
    rule's minimum sizes (:func:`use_limbs`)."""
    return len(a_shape) == 2 and len(b_shape) == 2 and a_shape[1] >= MIN_BYTE_K and use_limbs(a_shape, b_shape)


def use_limbs(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> bool:
    """The measured dispatch rule of :func:`matmul` (True: limb path).

    With ``M`` the rows of ``a`` (batch dims folded in when ``b`` is 2-D), the
    limb path is used iff ``M >= 4``, ``N >= 32``, ``K >= 64`` and
    ``K * N >= 4096``. XLA's uint64 dot costs ~0.2 ns per multiply-add while
    ``b`` (K x N) is small (<= ~8k elements), rising to ~0.9 ns at 784 x 128;
    the limb path pays ~2.5 ns per input element (splitting) and ~6 ns per
    output element on top of its GEMMs, so it needs a large ``b`` and enough
    reuse of each element of ``a`` (N) and of ``b`` (M) to win: 1 x 784 @
    784 x 128 and 64 x 784 @ 784 x 10 stay on the uint64 dot.
    """
    if len(a_shape) < 1 or len(b_shape) < 1:
        return False
    k = a_shape[-1]
    n = b_shape[-1] if len(b_shape) > 1 else 1
    rows = a_shape[:-1] if len(b_shape) <= 2 else a_shape[-2:-1]
    return math.prod(rows) >= MIN_ROWS and n >= MIN_COLS and k >= MIN_K and k * n >= MIN_KN


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``jnp.matmul(a, b) mod 2**64`` for uint64 operands, by the faster exact kernel.

    Picks the int8 byte path (:func:`use_bytes`), the float64 limb path
    (:func:`use_limbs`) or XLA's uint64 dot.
    Shapes are static, so the choice is made at trace time (jit/vmap safe;
    under vmap the rule sees the per-example shapes).
    """
    a, b = _check(a, b)
    if use_bytes(a.shape, b.shape):
        return matmul_bytes(a, b)
    if use_limbs(a.shape, b.shape):
        return matmul_limbs(a, b)
    return ring.matmul_reference(a, b)
