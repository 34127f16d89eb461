"""Conversions between arithmetic shares (mod 2**64) and XOR shares of packed bits.

``a2b`` turns additive shares into XOR shares of the same 64-bit word, for
any number of parties; ``b2a`` turns an XOR-shared bit (bit 0 of each word)
into an additively shared 0/1 integer. Both follow the ABY framework
[ABY: Demmler, Schneider, Zohner, NDSS 2015] with a trusted dealer; a2b uses
carry-save compression and a Kogge-Stone adder as in ABY3 [Mohassel & Rindal,
CCS 2018, Section 5.3].

Per-party cores (``*_local``) run inside :func:`jaxmpc.spmd.party_map`; the
public wrappers draw the dealer's correlations from ``key``.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxmpc import dealer, spmd
from jaxmpc.protocols import binary
from jaxmpc.protocols.arithmetic import _check_key
from jaxmpc.tensor import SharedTensor, _require_ring

U64 = jnp.uint64


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
    return binary.run_local(binary.sum_circuit, triples, owned_words_local(s))


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
    lead = jnp.where(spmd.is_party(0), c, jnp.zeros_like(c))
    return r_arith * (U64(1) - U64(2) * c) + lead


# -------------------------------------------------------------- public wrappers


def a2b_triples(key: jax.Array, n_parties: int, shape: Sequence[int]) -> tuple[dealer.Triple, ...]:
    """The AND triples :func:`a2b_local` consumes for words of ``shape``."""
    words = [binary.words_like(shape)] * n_parties
    return binary.circuit_triples(key, n_parties, binary.sum_circuit, words)


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
