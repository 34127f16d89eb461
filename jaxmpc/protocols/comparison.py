"""Comparisons on shares: sign bit, equality, ReLU, max and argmax.

Everything reduces to two bit protocols on ring elements, then a B2A of the
one result bit:

* :func:`ltz`: ``[x < 0]``, the MSB of ``x``, by the edaBit comparison
  [edaBits; ABY3; CdH10]: open ``c = x + r`` for a dealer's ``r`` whose bits
  are XOR-shared, then ``x = c + ~r + 1`` and only the carry into bit 63 is
  computed, by a carry tree whose generate/propagate bits are local (``c`` is
  public). The bits are *bit-sliced* (:mod:`jaxmpc.bitslice`): one
  word holds one bit position of 64 elements, so the tree's AND gates cost
  ``118/64`` words per element (fewer than 19 elements: one element per
  word, 6 AND words each). The circuit on the parties' own shares
  (``method="circuit"``, :func:`ltz_circuit_local`) is kept as the reference.
* :func:`eqz`: ``[x == 0]``, a boolean circuit on the parties' trivially
  XOR-shared arithmetic shares (as in :mod:`jaxmpc.protocols.conversion`).
  Party ``n-1`` subtracts 1 from its share, the words are compressed to
  ``(s, k)`` and ``x == 0`` iff ``s + k = 2**64 - 1`` iff ``s ^ k`` is all
  ones: an AND tree over 64 bits, no adder at all.

Results are additively shared 0/1 integers (``frac_bits=0``). A shared bit
times a shared value (:func:`mul_bit`) is one Beaver round with no truncation,
since the bit carries no fractional bits. ``ltz``/``eqz`` are exact for every
ring element; comparisons of two values are exact whenever ``|x - y| < 2**63``
raw, which holds for any two encodable values (``|x| < 2**(62-f)``).

Cost per element per party, ``B = (n-1) * 8`` bytes per opened word, ``d``
carry-save layers for ``n`` parties (0 for 2, 1 for 3, 2 for 4, 3 for 5-6).
``ltz`` opens ``N + 237 ceil(N/64)`` words for ``N`` elements; the figures
are for ``N`` a multiple of 64 (below 19 elements it opens ``14 N`` words,
``14 B`` per element: 112 / 224 / 448 bytes):

================  ========================  ==========================================
protocol          rounds (2p / 3p / 5p)     bytes per element per party (2p / 3p / 5p)
================  ========================  ==========================================
ltz               8  (8 / 8 / 8)            301/64 B  (37.6 / 75.3 / 150.5)
ltz "circuit"     d + 8  (8 / 9 / 11)       (2d + 15) B  (120 / 272 / 672)
eqz               d + 7  (7 / 8 / 10)       (2d + 13) B  (104 / 240 / 608)
relu              ltz + 1                   ltz + 2 B  (53.6 / 107.3 / 214.5)
max               ceil(log2 k) (ltz + 1)    about ltz + 2 B per input value
argmax            ceil(log2 k) (ltz + 1)    about ltz + (log2(k) + 1) B per input value
================  ========================  ==========================================

[edaBits] D. Escudero, S. Ghosh, M. Keller, R. Rachuri, P. Scholl, Improved
primitives for MPC over mixed arithmetic-binary circuits, CRYPTO 2020.
[ABY3] P. Mohassel, P. Rindal, CCS 2018 (bit decomposition, B2A).
[CdH10] O. Catrina, S. de Hoogh, Improved primitives for secure multiparty
integer computation, SCN 2010 (comparison through a masked opening and a
bitwise less-than with the mask's bits). [Beaver91].
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from jaxmpc import bitslice, dealer, ring, spmd, tensor
from jaxmpc.protocols import arithmetic, binary
from jaxmpc.protocols.arithmetic import _check_key
from jaxmpc.protocols.conversion import (
    all_ones_circuit,
    b2a_local,
    b2a_packed_local,
    compress_circuit,
    msb_gp_word_circuit,
    msb_sum_circuit,
    owned_words_local,
)
from jaxmpc.tensor import SharedTensor, _require_ring

U64 = jnp.uint64
#: Raw padding value for max/argmax: below every encodable value (|x| < 2**62).
_PAD = -(2**62)


# ----------------------------------------------------------------- SPMD cores


def _zero_test_circuit(words: Sequence[jax.Array], and_fn, xor_fn) -> jax.Array:
    """Bit 0 = [sum of words == 2**64 - 1]: compress to ``(s, k)``, AND-reduce ``s ^ k``."""
    s, k = compress_circuit(words, and_fn, xor_fn)
    return all_ones_circuit(xor_fn(s, k), and_fn, xor_fn)


def ltz_local(
    s: jax.Array, triples, r_arith: jax.Array, r_bits: jax.Array, rho_xor: jax.Array, rho_arith: jax.Array,
    sliced: bool = True,
) -> jax.Array:
    """One party's arithmetic share of ``[x < 0]`` (the MSB of ``x``) from its share ``s``.

    Math: ``x = c - r = c + ~r + 1`` for the public ``c = x + r``, so
    ``msb(x) = c_63 ^ ~r_63 ^ carry_63`` with ``carry_63`` the carry into bit
    63 of ``c + ~r + 1`` [edaBits, CdH10].
    Steps: open ``c = x + r`` (``r``: the dealer's edaBit); slice ``c``
    locally; with ``v = ~r`` (party 0 flips its share of the sliced bits),
    ``g = c & v`` and ``p = c ^ v`` are local; fold the carry-in into
    position 0; carry tree over positions 0..62
    (:func:`~jaxmpc.bitslice.msb_gp_circuit`, 6 AND levels on
    sliced words); ``msb = p_63 ^ carry``; B2A of the packed bits
    (:func:`~jaxmpc.protocols.conversion.b2a_packed_local`).
    ``sliced=False`` (few elements): the same with one element per word
    (:func:`~jaxmpc.protocols.conversion.msb_gp_word_circuit`, 1 AND word
    per level) and a B2A per element.
    Opened: ``c`` (uniform: ``r`` is), the Beaver-masked ``d``/``e`` of each
    AND word, and ``msb ^ rho`` (uniform words; unsliced: uniform bits).
    Cost: 8 rounds for any ``n``; ``(n-1) * 8 * (N + 237 W)`` bytes per party
    for ``N`` elements, ``W = ceil(N/64)`` (``(n-1) * 37.6`` per element);
    unsliced ``(n-1) * 8 * 14 N``.
    """
    c = spmd.open_sum(s + r_arith, what="ltz")
    c_bits = bitslice.slice_bits(c) if sliced else c
    lead = spmd.is_party(0)
    v = jnp.where(lead, ~r_bits, r_bits)
    g, p = c_bits & v, jnp.where(lead, c_bits ^ v, v)
    if not sliced:
        return b2a_local(binary.run_local(msb_gp_word_circuit, triples, g, p), rho_xor, rho_arith)
    msb = binary.run_local(bitslice.msb_gp_circuit, triples, g, p)
    return b2a_packed_local(msb, rho_xor, rho_arith)


def ltz_words(size: int, sliced: bool) -> int:
    """Words one party opens per other party in :func:`ltz_local` for ``size`` elements:
    ``c``, two per AND word, the B2A (``N + 237 W`` sliced, ``14 N`` not)."""
    return size + (2 * 118 + 1) * bitslice.n_words(size) if sliced else 14 * size


def ltz_circuit_local(s: jax.Array, triples, r_xor: jax.Array, r_arith: jax.Array) -> jax.Array:
    """The reference :func:`ltz_local`: ``msb(x_0 + ... + x_{n-1})`` as a circuit on the owned words.

    Steps: carry-save compression to two words (``d`` AND layers), ``g = u & v``
    (1), a packed tree for the carry into bit 63 (6), ``msb = p_63 ^ c_63``,
    then B2A with a dealer bit (1).
    Opened: Beaver-masked ``d`` / ``e`` of each AND word, and ``msb ^ r``.
    Cost: ``d + 8`` rounds; ``(2(d + 7) + 1) * (n-1) * 8`` bytes per element per party.
    """
    sign = binary.run_local(msb_sum_circuit, triples, owned_words_local(s))
    return b2a_local(sign, r_xor, r_arith)


def eqz_local(s: jax.Array, triples, r_xor: jax.Array, r_arith: jax.Array) -> jax.Array:
    """One party's arithmetic share of ``[x == 0]``.

    Math: ``x = 0`` iff ``x_0 + ... + (x_{n-1} - 1) = 2**64 - 1``; after
    carry-save compression to ``(s, k)``, iff ``s ^ k`` is all ones (a sum of
    two words is all ones only when no carry occurs).
    Steps: party ``n-1`` subtracts 1 locally, compression (``d`` AND layers),
    AND tree ``w &= w >> 2**i`` (6), B2A (1).
    Cost: ``d + 7`` rounds; ``(2(d + 6) + 1) * (n-1) * 8`` bytes per element per party.
    """
    s = jnp.where(spmd.is_party(spmd.n_parties() - 1), s - U64(1), s)
    bit = binary.run_local(_zero_test_circuit, triples, owned_words_local(s))
    return b2a_local(bit, r_xor, r_arith)


def _bit_protocol(x: SharedTensor, key: jax.Array, circuit: Callable, local: Callable):
    """Dealer triples for ``circuit`` and a random bit, then ``local`` in one ``party_map``."""
    _require_ring(x)
    _check_key(key)
    n = x.n_parties
    k_and, k_bit = jax.random.split(key)
    triples = binary.circuit_triples(k_and, n, circuit, [binary.words_like(x.shape)] * n)
    r = dealer.random_bits(k_bit, n, x.shape)
    return SharedTensor(spmd.party_map(local)(x.shares, triples, r.xor, r.arith), 0)


# -------------------------------------------------------------- bits of x


def ltz(x: SharedTensor, key: jax.Array, method: str = "edabits") -> SharedTensor:
    """``[x < 0]`` as a shared 0/1 integer (``frac_bits=0``), exact for every ring element.

    ``method="edabits"`` (default): :func:`ltz_local`, 8 rounds for any number
    of parties, about ``(n-1) * 37.6`` bytes per element per party; bit-sliced
    unless the elements are so few (``N < 19``) that one element per word
    opens fewer words (:func:`ltz_words`). ``"sliced"`` / ``"words"`` force
    the layout. ``"circuit"``: the reference :func:`ltz_circuit_local`,
    ``d + 8`` rounds and ``(2d + 15) (n-1) * 8`` bytes per element.
    """
    if method == "circuit":
        return _bit_protocol(x, key, msb_sum_circuit, ltz_circuit_local)
    if method not in ("edabits", "sliced", "words"):
        raise ValueError(f"unknown ltz method {method!r}; use 'edabits', 'sliced', 'words' or 'circuit'")
    _require_ring(x)
    _check_key(key)
    n, size = x.n_parties, math.prod(x.shape)
    sliced = method == "sliced" or (method == "edabits" and ltz_words(size, True) <= ltz_words(size, False))
    k_r, k_and, k_bit = jax.random.split(key, 3)
    eda = dealer.edabits(k_r, n, x.shape, sliced=sliced)
    words = binary.words_like(eda.bits.shape[1:])
    circuit = bitslice.msb_gp_circuit if sliced else msb_gp_word_circuit
    triples = binary.circuit_triples(k_and, n, circuit, words, words)
    rho = dealer.random_bits(k_bit, n, x.shape, packed=sliced)
    local = functools.partial(ltz_local, sliced=sliced)
    return SharedTensor(spmd.party_map(local)(x.shares, triples, eda.arith, eda.bits, rho.xor, rho.arith), 0)


def eqz(x: SharedTensor, key: jax.Array) -> SharedTensor:
    """``[x == 0]`` (raw ring equality) as a shared 0/1 integer; see :func:`eqz_local`."""
    return _bit_protocol(x, key, _zero_test_circuit, eqz_local)


def _diff(x: Any, y: Any) -> SharedTensor:
    """``x - y`` where at least one side is shared and the other may be public."""
    if isinstance(x, SharedTensor):
        return x - y
    if isinstance(y, SharedTensor):
        return -(y - x)
    raise TypeError("compare at least one SharedTensor (the other may be public)")


def lt(x: Any, y: Any, key: jax.Array) -> SharedTensor:
    """``[x < y]`` (strict; 0 at ties). Either side may be public. ``ltz(x - y)``."""
    return ltz(_diff(x, y), key)


def gt(x: Any, y: Any, key: jax.Array) -> SharedTensor:
    """``[x > y]`` (strict; 0 at ties). ``ltz(y - x)``."""
    return ltz(_diff(y, x), key)


def le(x: Any, y: Any, key: jax.Array) -> SharedTensor:
    """``[x <= y]`` (1 at ties) = ``1 - gt(x, y)``."""
    return 1 - gt(x, y, key)


def ge(x: Any, y: Any, key: jax.Array) -> SharedTensor:
    """``[x >= y]`` (1 at ties) = ``1 - lt(x, y)``."""
    return 1 - lt(x, y, key)


def eq(x: Any, y: Any, key: jax.Array) -> SharedTensor:
    """``[x == y]``, exact equality of the fixed-point encodings: ``eqz(x - y)``."""
    return eqz(_diff(x, y), key)


def ne(x: Any, y: Any, key: jax.Array) -> SharedTensor:
    """``[x != y]`` = ``1 - eq(x, y)``."""
    return 1 - eq(x, y, key)


# -------------------------------------------------------------- bit * value


def _mul_bit_shares(b: jax.Array, y: jax.Array, key: jax.Array) -> jax.Array:
    """Raw shares of ``b * y`` (both integer tensors): one Beaver round, no truncation."""
    return arithmetic.mul(SharedTensor(b, 0), SharedTensor(y, 0), key).shares


def mul_bit(b: SharedTensor, y: SharedTensor, key: jax.Array) -> SharedTensor:
    """``b * y`` for a shared 0/1 integer ``b`` (``frac_bits=0``) and any shared ``y``.

    :func:`jaxmpc.protocols.arithmetic.mul` with an integer factor: one Beaver
    round (``(n-1)*8*(|b| + |y|)`` bytes per party), no truncation, so it is
    exact and keeps ``y.frac_bits``. Broadcasts.
    """
    _require_ring(b)
    if b.frac_bits != 0:
        raise ValueError(f"mul_bit takes a 0/1 integer (frac_bits=0), got frac_bits={b.frac_bits}")
    return arithmetic.mul(b, y, key)


def sign(x: SharedTensor, key: jax.Array) -> SharedTensor:
    """``-1`` where ``x < 0``, else ``+1`` (so ``sign(0) = +1``), integers with ``frac_bits=0``."""
    return 1 - ltz(x, key) * 2


def abs(x: SharedTensor, key: jax.Array) -> SharedTensor:  # noqa: A001 (mirrors jnp.abs)
    """``|x| = x - 2 [x < 0] x``: ``ltz`` + 1 round."""
    k_cmp, k_mul = jax.random.split(key)
    return x - mul_bit(ltz(x, k_cmp), x, k_mul) * 2


def drelu(x: SharedTensor, key: jax.Array) -> SharedTensor:
    """ReLU's derivative ``[x > 0]``: ``ltz(-x)``; 0 at ``x = 0``, as ``jax.nn.relu``'s gradient."""
    return ltz(-x, key)


def relu(x: SharedTensor, key: jax.Array) -> tuple[SharedTensor, SharedTensor]:
    """``(max(x, 0), [x > 0])``: the output and the derivative bit (``frac_bits=0``).

    Keep the bit for the backward pass: ``mul_bit(bit, grad, key)`` is one
    round and exact, with no second comparison. Cost: ``ltz`` + 1 round.
    """
    k_cmp, k_mul = jax.random.split(key)
    bit = drelu(x, k_cmp)
    return mul_bit(bit, x, k_mul), bit


def maximum(x: Any, y: Any, key: jax.Array) -> SharedTensor:
    """Elementwise ``max(x, y)`` = ``y + [x > y](x - y)``; either side may be public."""
    k_cmp, k_mul = jax.random.split(key)
    d = _diff(x, y)
    return mul_bit(ltz(-d, k_cmp), d, k_mul) + y


def minimum(x: Any, y: Any, key: jax.Array) -> SharedTensor:
    """Elementwise ``min(x, y)`` = ``x - [x > y](x - y)``; either side may be public."""
    k_cmp, k_mul = jax.random.split(key)
    d = _diff(x, y)
    return -mul_bit(ltz(-d, k_cmp), d, k_mul) + x


# -------------------------------------------------------------- max, argmax


def _tournament(x: SharedTensor, key: jax.Array, axis: int, with_onehot: bool):
    """Knock-out tree over ``axis``: ``ceil(log2 k)`` layers of (ltz + 1 Beaver round).

    The axis is padded to a power of two with a value below every encodable
    one. Pairs ``(left, right)`` are adjacent candidates, ``left`` covering
    lower indices; ``b = [right > left]`` (strict), so ties keep the lower
    index. Each candidate carries the one-hot of its own segment, so a layer's
    selection multiplies ``b`` into ``1 + 2L`` words per pair in one round.
    """
    _require_ring(x)
    _check_key(key)
    ax = tensor._axis(axis, x.ndim) + 1
    v = jnp.moveaxis(x.shares, ax, -1)
    k = v.shape[-1]
    levels = math.ceil(math.log2(k))  # note: this module's max/abs shadow the builtins
    pad = jnp.zeros(v.shape[:-1] + (2**levels - k,), U64).at[0].set(ring.ring(_PAD))
    v = jnp.concatenate([v, pad], axis=-1)
    oh = None  # (n, ..., m, L): one-hot of each candidate's segment; None = public [1]
    for key_l in jax.random.split(key, levels) if levels else ():
        k_cmp, k_mul = jax.random.split(key_l)
        left, right = v[..., 0::2], v[..., 1::2]
        b = ltz(SharedTensor(left - right, x.frac_bits), k_cmp).shares[..., None]
        payload = (right - left)[..., None]
        if with_onehot and oh is not None:
            payload = jnp.concatenate([payload, oh[..., 0::2, :], oh[..., 1::2, :]], axis=-1)
        prod = _mul_bit_shares(b, payload, k_mul)
        v = left + prod[..., 0]
        if with_onehot and oh is None:
            one = jnp.zeros_like(b).at[0].set(U64(1))
            oh = jnp.concatenate([one - b, b], axis=-1)
        elif with_onehot:
            L = oh.shape[-1]
            left_oh = oh[..., 0::2, :] - prod[..., 1 : L + 1]
            oh = jnp.concatenate([left_oh, prod[..., L + 1 :]], axis=-1)
    if with_onehot and oh is None:  # k == 1
        oh = jnp.zeros(v.shape + (1,), U64).at[0].set(U64(1))
    value = SharedTensor(jnp.moveaxis(v, -1, ax), x.frac_bits)
    onehot = None if oh is None else SharedTensor(jnp.moveaxis(oh[..., 0, :k], -1, ax), 0)
    return value, onehot


def max(x: SharedTensor, key: jax.Array, axis: int = -1, keepdims: bool = False):  # noqa: A001
    """Maximum over ``axis``: a tree of ``ceil(log2 k)`` layers of ``ltz`` + 1 round."""
    value, _ = _tournament(x, key, axis, with_onehot=False)
    return value if keepdims else value.squeeze(axis)


def argmax(x: SharedTensor, key: jax.Array, axis: int = -1) -> SharedTensor:
    """Shared one-hot of the maximum over ``axis`` (same shape as ``x``, ``frac_bits=0``).

    Ties: the lowest index wins. Nothing is revealed; ``ceil(log2 k)`` layers
    of ``ltz`` + 1 Beaver round for ``k`` values (``9 ceil(log2 k)`` rounds).
    Use :func:`reveal_argmax` to open the index alone.
    """
    return _tournament(x, key, axis, with_onehot=True)[1]


def max_argmax(x: SharedTensor, key: jax.Array, axis: int = -1):
    """``(max over axis (kept as size 1), one-hot argmax)`` from one tournament."""
    return _tournament(x, key, axis, with_onehot=True)


def reveal_argmax(onehot: SharedTensor, axis: int = -1) -> jax.Array:
    """Open only the index ``sum_j j * onehot_j`` (int64), not the one-hot: 1 round."""
    ax = tensor._axis(axis, onehot.ndim)
    k = onehot.shape[ax]
    idx = jnp.arange(k, dtype=jnp.int64).reshape((k,) + (1,) * (onehot.ndim - ax - 1))
    opened = tensor.reveal(SharedTensor((onehot * idx).sum(ax).shares, 0), what="argmax")
    return opened.astype(jnp.int64)
