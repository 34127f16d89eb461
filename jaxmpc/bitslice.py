"""Bit slicing of 64-bit words, and the sliced carry tree of the sign bit.

Layout. A ``uint64`` array of ``N`` elements is flattened (C order), padded
with zeros to ``64 W`` elements, ``W = ceil(N / 64)``, and cut into ``W``
blocks of 64 consecutive elements. Its *sliced* form is ``uint64[64, W]``:
bit ``j`` of word ``[k, w]`` is bit ``k`` of element ``64 w + j``. So one
word holds one bit position of 64 elements, and a circuit that treats the
bit positions separately (a carry tree) works on whole words: 64 elements
per AND gate word instead of one. A *packed* bit vector (:func:`pack_bits`)
is one row of that layout: ``uint64[W]``, bit ``j`` of word ``w`` = bit 0 of
element ``64 w + j``.

:func:`slice_bits` and :func:`unslice_bits` are inverse 64x64 bit-matrix
transposes on the blocks, by the recursive block swap of [Hacker's Delight,
H. S. Warren, 2nd ed. 2012, Section 7-3]: 6 stages of shifts, XORs and masks
over the whole array (about 0.05 ms for 8192 elements on one CPU core; the
naive bit-by-bit formulation needs a 64x larger intermediate). Both are
plain ``jnp`` on plaintext words; the comparison slices only *public* words
(the opened ``x + r``), the dealer hands out its bits already sliced.

The circuit (:func:`msb_gp_circuit`) takes ``and_fn`` / ``xor_fn`` like those
of :mod:`jaxmpc.protocols.binary`, so it runs on plaintext words and, in
:func:`jaxmpc.protocols.binary.run_local`, on XOR shares.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

# below the dealer (which imports this module): nothing from jaxmpc here
AndFn = Callable[[jax.Array, jax.Array], jax.Array]
XorFn = Callable[[jax.Array, jax.Array], jax.Array]
U64 = jnp.uint64
BITS = 64
#: Stage ``s`` of the transpose swaps bit ``j + s`` of row ``i`` with bit ``j`` of
#: row ``i + s`` for ``i & s == j & s == 0``; the mask has the bits ``j & s == 0``.
_STAGES = tuple(
    (s, sum(1 << j for j in range(BITS) if not j & s)) for s in (32, 16, 8, 4, 2, 1)
)


def n_words(size: int) -> int:
    """Words per bit position for ``size`` elements: ``ceil(size / 64)``."""
    return -(-int(size) // BITS)


def transpose64(rows: jax.Array) -> jax.Array:
    """Transpose the 64x64 bit matrices along the last axis (``uint64[..., 64]``).

    Row ``i`` of a block is its word ``i``; the result's word ``k`` has bit
    ``i`` = bit ``k`` of word ``i``. An involution. 6 stages, each one
    shift-XOR-mask pass over the array [Hacker's Delight, 7-3].
    """
    if rows.shape[-1:] != (BITS,) or rows.dtype != U64:
        raise ValueError(f"transpose64 takes uint64[..., 64], got {rows.dtype}{list(rows.shape)}")
    lead = rows.shape[:-1]
    a = rows
    for s, mask in _STAGES:
        a = a.reshape(lead + (BITS // (2 * s), 2, s))
        lo, hi = a[..., 0, :], a[..., 1, :]
        t = ((lo >> U64(s)) ^ hi) & U64(mask)
        a = jnp.stack([lo ^ (t << U64(s)), hi ^ t], axis=-2)
    return a.reshape(lead + (BITS,))


def _blocks(x: jax.Array) -> jax.Array:
    """``x`` flattened and zero-padded to ``(W, 64)``."""
    flat = jnp.ravel(x)
    w = n_words(flat.size)
    return jnp.pad(flat, (0, BITS * w - flat.size)).reshape(w, BITS)


def slice_bits(x: jax.Array) -> jax.Array:
    """The sliced form ``uint64[64, W]`` of the words ``x`` (any shape; see the module doc)."""
    x = jnp.asarray(x)
    if x.dtype != U64:
        raise TypeError(f"slice_bits takes uint64 words, got {x.dtype}")
    return transpose64(_blocks(x)).T


def unslice_bits(s: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Inverse of :func:`slice_bits`: the words of ``shape`` from ``uint64[64, W]``."""
    shape = tuple(int(d) for d in shape)
    size = math.prod(shape)
    if s.shape != (BITS, n_words(size)):
        raise ValueError(f"{size} elements are sliced as {(BITS, n_words(size))}, got {s.shape}")
    return transpose64(s.T).reshape(-1)[:size].reshape(shape)


def pack_bits(b: jax.Array) -> jax.Array:
    """Bit 0 of each element of ``b`` (any shape), 64 per word: ``uint64[W]`` (row 0 of the sliced form)."""
    blocks = _blocks(jnp.asarray(b, U64) & U64(1))
    return jnp.sum(blocks << jnp.arange(BITS, dtype=U64), axis=-1, dtype=U64)  # disjoint bits: sum = OR


def unpack_bits(w: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Inverse of :func:`pack_bits`: 0/1 ``uint64`` of ``shape`` from ``uint64[W]``."""
    shape = tuple(int(d) for d in shape)
    size = math.prod(shape)
    if w.shape != (n_words(size),):
        raise ValueError(f"{size} bits are packed in {n_words(size)} words, got shape {w.shape}")
    bits = (w[:, None] >> jnp.arange(BITS, dtype=U64)) & U64(1)
    return bits.reshape(-1)[:size].reshape(shape)


# ----------------------------------------------------------------- circuits


def prefix_generate_circuit(g: jax.Array, p: jax.Array, and_fn: AndFn, xor_fn: XorFn) -> jax.Array:
    """Generate bit ``G`` of the whole range from per-position ``(g, p)`` on axis 0 (lowest first).

    ``g``: ``(m, ...)``; ``p``: ``(m - 1, ...)``, the propagate bits of
    positions ``1..m-1`` (the lowest position's is never needed). A binary
    tree of ``(G_hi, P_hi) o (G_lo, P_lo) = (G_hi ^ (P_hi & G_lo), P_hi & P_lo)``
    (``^`` is ``|`` here, the two terms are disjoint) over adjacent blocks,
    one ``and_fn`` call per level: ``ceil(log2 m)`` levels. An unpaired top
    block passes through (as if paired with the identity ``(0, 1)``), and no
    ``P`` is formed for the lowest block nor at the last level, so level
    ``m -> ceil(m/2)`` ANDs ``2 floor(m/2) - 1`` rows: 118 for ``m = 63``
    (61, 31, 15, 7, 3, 1). Returns ``(1, ...)``.
    """
    if p.shape[0] != g.shape[0] - 1:
        raise ValueError(f"{g.shape[0]} generate rows need {g.shape[0] - 1} propagate rows, got {p.shape[0]}")
    while g.shape[0] > 1:
        m, k = g.shape[0], g.shape[0] // 2
        # blocks 2j (lo) and 2j+1 (hi); p[i - 1] is the P of block i
        g_lo, g_hi = g[0 : 2 * k : 2], g[1 : 2 * k : 2]
        p_hi, p_lo_up = p[0 : 2 * k : 2], p[1 : 2 * k - 1 : 2]
        q = and_fn(jnp.concatenate([p_hi, p_hi[1:]]), jnp.concatenate([g_lo, p_lo_up]))
        g_new, p_new = xor_fn(g_hi, q[:k]), q[k:]
        if m % 2:
            g_new, p_new = jnp.concatenate([g_new, g[m - 1 :]]), jnp.concatenate([p_new, p[m - 2 :]])
        g, p = g_new, p_new
    return g


def msb_gp_circuit(g: jax.Array, p: jax.Array, and_fn: AndFn, xor_fn: XorFn) -> jax.Array:
    """Bit 63 of ``a + b + 1`` from the sliced ``g = a & b``, ``p = a ^ b`` (``uint64[64, W]``).

    Returns ``uint64[W]``, packed like :func:`pack_bits`. The carry-in 1 is
    folded into position 0 (``g_0 := g_0 ^ p_0``, the carry out of bit 0),
    the carry into bit 63 is :func:`prefix_generate_circuit` over positions
    0..62, and the result is ``p_63 ^ carry``. 6 AND levels, ``118 W`` AND words.
    """
    g0 = xor_fn(g[0], p[0])
    g = jnp.concatenate([g0[None], g[1:63]])
    carry = prefix_generate_circuit(g, p[1:63], and_fn, xor_fn)[0]
    return xor_fn(p[63], carry)
