"""Conversions between arithmetic shares (mod 2**64) and XOR shares of packed bits.

``a2b`` turns additive shares into XOR shares of the same 64-bit word, for
any number of parties; ``b2a`` turns an XOR-shared bit (bit 0 of each word)
into an additively shared 0/1 integer (``b2a_packed``: 64 bits per word, the
packed layout of :mod:`jaxmpc.bitslice`). Both follow the ABY framework
[ABY: Demmler, Schneider, Zohner, NDSS 2015] with a trusted dealer; a2b uses
carry-save compression and a Kogge-Stone adder as in ABY3 [Mohassel & Rindal,
CCS 2018, Section 5.3].

The circuits here combine the ``n`` parties' shares as ``n`` words; they
take ``and_fn``/``xor_fn`` like those of :mod:`jaxmpc.protocols.binary`.
Per-party cores (``*_local``) run inside :func:`jaxmpc.spmd.party_map`; the
public wrappers draw the dealer's correlations from ``key``.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

from jaxmpc import bitslice, dealer, spmd
from jaxmpc.protocols import binary
from jaxmpc.protocols.binary import AndFn, XorFn
from jaxmpc.protocols.arithmetic import _check_key
from jaxmpc.tensor import SharedTensor, _require_ring

U64 = jnp.uint64


# ----------------------------------------------------------------- circuits


def compress_circuit(words: Sequence[jax.Array], and_fn: AndFn, xor_fn: XorFn) -> list[jax.Array]:
    """Wallace tree of carry-save adders: ``k >= 2`` words to 2 with the same sum mod 2**64.

    Each layer compresses ``floor(k/3)`` groups at once (one AND layer); depth
    about ``log_{3/2}(k/2)``: 0 for 2 words, 1 for 3, 2 for 4, 3 for 5 or 6.
    """
    words = list(words)
    while len(words) > 2:
        t = len(words) // 3
        groups = (jnp.stack(words[i * t : (i + 1) * t]) for i in range(3))
        s, k = binary.csa_circuit(*groups, and_fn, xor_fn)
        words = list(s) + list(k) + words[3 * t:]
    return words


def sum_circuit(words: Sequence[jax.Array], and_fn: AndFn, xor_fn: XorFn) -> jax.Array:
    """Sum of ``k >= 2`` words mod 2**64: carry-save compression, then one adder."""
    x, y = compress_circuit(words, and_fn, xor_fn)
    return binary.add_circuit(x, y, and_fn, xor_fn)


def _pair_masks(s: int) -> tuple[jax.Array, jax.Array]:
    """Bits at positions ``= 2s-1 (mod 2s)`` (tops of high blocks) and those ``>> s``."""
    hi = sum(1 << (j + 2 * s - 1) for j in range(0, 64, 2 * s))
    return U64(hi), U64(hi >> s)


def msb_add_circuit(x: jax.Array, y: jax.Array, and_fn: AndFn, xor_fn: XorFn) -> jax.Array:
    """Bit 63 of ``x + y`` (in bit 0 of the result, other bits 0): 7 AND layers of 1 word.

    Only the carry into bit 63 is computed, by a tree over bits 0..62 (moved
    up to 1..63, with an empty block at bit 0). At stride ``s`` each block's
    ``(G, P)`` sits at its top bit; one packed AND per level computes
    ``P_hi & G_lo`` at the high tops and ``P_hi & P_lo`` at the low tops, so
    each level costs one word instead of Kogge-Stone's two.
    """
    p = xor_fn(x, y)
    return _msb_from_gp(and_fn(x, y), p, and_fn, xor_fn)


def msb_gp_word_circuit(g: jax.Array, p: jax.Array, and_fn: AndFn, xor_fn: XorFn) -> jax.Array:
    """Bit 63 of ``a + b + 1`` (in bit 0) from ``g = a & b``, ``p = a ^ b``: 6 AND layers of 1 word.

    The word layout of :func:`jaxmpc.bitslice.msb_gp_circuit` (one
    element per word): the carry-in is folded into bit 0 (``g_0 ^= p_0``), then
    the packed tree of :func:`msb_add_circuit`. For ``ltz`` on few elements,
    where a sliced word would be mostly padding.
    """
    return _msb_from_gp(xor_fn(g, p & U64(1)), p, and_fn, xor_fn)


def _msb_from_gp(g: jax.Array, p: jax.Array, and_fn: AndFn, xor_fn: XorFn) -> jax.Array:
    """``p_63 ^ carry_63`` (in bit 0) from bitwise generate/propagate words: 6 packed AND layers."""
    G, P = g << U64(1), p << U64(1)
    for s in (1, 2, 4, 8, 16, 32):
        hi, lo = _pair_masks(s)
        p_hi = P & hi
        q = and_fn(xor_fn(p_hi, p_hi >> U64(s)), xor_fn((G << U64(s)) & hi, P & lo))
        G, P = xor_fn(G & hi, q & hi), (q & lo) << U64(s)
    return xor_fn(p, G) >> U64(63)


def all_ones_circuit(w: jax.Array, and_fn: AndFn, xor_fn: XorFn) -> jax.Array:
    """1 in bit 0 iff all 64 bits of ``w`` are set: ``w &= w >> s`` for s = 1..32, 6 AND layers."""
    for s in (1, 2, 4, 8, 16, 32):
        w = and_fn(w, w >> U64(s))
    return w & U64(1)


def msb_sum_circuit(words: Sequence[jax.Array], and_fn: AndFn, xor_fn: XorFn) -> jax.Array:
    """Bit 63 of the sum of ``k >= 2`` words (in bit 0): compression, then
    :func:`msb_add_circuit` (only the carry into bit 63)."""
    return msb_add_circuit(*compress_circuit(words, and_fn, xor_fn), and_fn, xor_fn)


# ----------------------------------------------------------------- SPMD cores


def owned_words_local(s: jax.Array) -> list[jax.Array]:
    """This party's XOR shares of the ``n`` words ``x_0 .. x_{n-1}`` (the parties' own shares).

    Party ``j``'s arithmetic share ``x_j`` is trivially XOR-shared: party ``j``
    holds it, every other party holds 0. No communication.
    """
    me = spmd.party_index()
    return [jnp.where(me == j, s, jnp.zeros_like(s)) for j in range(spmd.n_parties())]


def a2b_local(s: jax.Array, triples: Sequence[dealer.Triple]) -> jax.Array:
    """One party's XOR share of ``x = sum_j x_j`` from its arithmetic share ``s = x_j``.

    Math: ``x = x_0 + ... + x_{n-1}`` evaluated as a boolean circuit on the
    trivially XOR-shared words ``x_j``.
    Steps: carry-save 3->2 compression to two words (``d`` AND layers:
    0 for n=2, 1 for 3, 2 for 4, 3 for 5-6), then a Kogge-Stone adder
    (1 + 6 AND layers) with Beaver AND triples over GF(2)^64.
    Opened: only ``x ^ a`` and ``y ^ b`` of each AND, masked by the triples.
    Cost: ``d + 7`` rounds; per element per party ``2 * (n-1) * 8`` bytes per
    AND word: ``d`` compression words (one per CSA group) + 12 adder words.
    """
    return binary.run_local(sum_circuit, triples, owned_words_local(s))


def b2a_local(b: jax.Array, r_xor: jax.Array, r_arith: jax.Array) -> jax.Array:
    """One party's arithmetic share of the XOR-shared bit ``b`` (bit 0 of its word).

    Math: with a dealer bit ``r`` shared both ways, ``b = c ^ r = c + r - 2cr``
    for the public ``c = b ^ r``.
    Steps: mask ``b`` to bit 0, open ``c = b ^ r`` (``open_xor``), then
    ``[b]_i = [r]_i * (1 - 2c) + [i = 0] c``.
    Opened: ``c``, a uniform bit (higher bits are zero).
    Cost: 1 round, ``(n-1) * 8`` bytes per element per party (one word per bit).
    """
    c = spmd.open_xor((b & U64(1)) ^ r_xor, what="b2a")
    return _b2a_from_opened(c, r_arith)


def b2a_packed_local(b: jax.Array, r_xor: jax.Array, r_arith: jax.Array) -> jax.Array:
    """:func:`b2a_local` for bits packed 64 per word (:func:`jaxmpc.bitslice.pack_bits`).

    Math and steps as :func:`b2a_local`, with ``b``, ``r_xor`` of shape ``(W,)``
    (all 64 bits of each word are bits; ``r`` from
    ``dealer.random_bits(..., packed=True)``) and ``r_arith`` of the output
    shape: open the words ``c = b ^ r``, unpack them (public, local).
    Opened: ``c``, full uniform words (the padding bits too: the dealer's are uniform).
    Cost: 1 round, ``(n-1) * 8`` bytes per 64 bits per party.
    """
    c = spmd.open_xor(b ^ r_xor, what="b2a_packed")
    return _b2a_from_opened(bitslice.unpack_bits(c, r_arith.shape), r_arith)


def _b2a_from_opened(c: jax.Array, r_arith: jax.Array) -> jax.Array:
    """``[b]_i = [r]_i (1 - 2c) + [i = 0] c`` for the opened bits ``c = b ^ r``."""
    lead = jnp.where(spmd.is_party(0), c, jnp.zeros_like(c))
    return r_arith * (U64(1) - U64(2) * c) + lead


# -------------------------------------------------------------- public wrappers


def a2b_triples(key: jax.Array, n_parties: int, shape: Sequence[int]) -> tuple[dealer.Triple, ...]:
    """The AND triples :func:`a2b_local` consumes for words of ``shape``."""
    words = [binary.words_like(shape)] * n_parties
    return binary.circuit_triples(key, n_parties, sum_circuit, words)


def a2b(x: SharedTensor, key: jax.Array) -> binary.SharedBits:
    """XOR shares of the ring elements of ``x`` (64 bits per word), for any number of parties.

    See :func:`a2b_local`: ``d + 7`` rounds (7 for 2 parties, 8 for 3, 10 for
    5), only dealer-masked values opened. The fixed-point scale is dropped:
    the words are the raw two's-complement encodings.
    """
    _require_ring(x)
    _check_key(key)
    triples = a2b_triples(key, x.n_parties, x.shape)
    return binary.SharedBits(spmd.party_map(a2b_local)(x.shares, triples))


def b2a(x: binary.SharedBits, key: jax.Array) -> SharedTensor:
    """Bit 0 of each XOR-shared word as an additively shared 0/1 integer (``frac_bits=0``).

    See :func:`b2a_local`: 1 round, one dealer random bit per element; bits
    1..63 of ``x`` are ignored (and never opened).
    """
    _check_key(key)
    r = dealer.random_bits(key, x.n_parties, x.shape)
    return SharedTensor(spmd.party_map(b2a_local)(x.shares, r.xor, r.arith), 0)


def b2a_packed(x: binary.SharedBits, key: jax.Array, shape: Sequence[int]) -> SharedTensor:
    """Packed bits (``x``: ``(W,)`` words, :func:`~jaxmpc.bitslice.pack_bits`
    layout) as additively shared 0/1 integers of ``shape`` (``frac_bits=0``).

    See :func:`b2a_packed_local`: 1 round, one word opened per 64 bits.
    """
    _check_key(key)
    shape = tuple(int(d) for d in shape)
    if x.shape != (bitslice.n_words(math.prod(shape)),):
        raise ValueError(f"{math.prod(shape)} bits are packed in {bitslice.n_words(math.prod(shape))} words, "
                         f"got words of shape {x.shape}")
    r = dealer.random_bits(key, x.n_parties, shape, packed=True)
    return SharedTensor(spmd.party_map(b2a_packed_local)(x.shares, r.xor, r.arith), 0)
