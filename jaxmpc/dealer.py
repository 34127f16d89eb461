"""The dealer (crypto provider): correlated randomness, as a pure function of a key.

Every function here takes a PRNG ``key`` and the number of parties and returns
shares stacked on a leading party axis, exactly what each party is handed.
The dealer never sees a party's input; the parties never see the dealer's
secrets (``a``, ``b``, ``r``) except through their own share.

Share layout, the same for every correlation: shares of uniformly random
values (``a``, ``b``, ``r``) are all drawn from ``fold_in(key, party)``-style
seeds, so in a deployment each party can expand them from a seed it shares
with the dealer. Shares of *derived* values (``c = a*b``, ``r >> f``) are
uniform for parties ``0..n-2`` (seeded likewise) and the dealer sends only the
last party's correction. Traffic from the dealer is therefore one share per
derived value, and it is offline (not counted in :mod:`jaxmpc.cost`).

Correlations and their invariants (sum over parties mod 2**64, ``^`` = XOR
over parties for binary shares):

=================  ============================================  ==============
function           invariant                                      used by
=================  ============================================  ==============
beaver_triple      ``sum c = B(sum a, sum b)`` for bilinear ``B``  mul, matmul,
                                                                  conv [Beaver91]
beaver_trunc_...   ``sum c = B(sum a, sum b) + r``,                mul/matmul with
                   ``sum s = r >>_arith f``                        dealer truncation
square_pair        ``sum c = (sum a)**2``                          square
trunc_pair         ``sum s = (sum r) >>_arith f``                  truncate [ABY3]
and_triple         ``^c = (^a) & (^b)`` bitwise on 64-bit words    and_bb
random_bits        ``sum r_a = ^r_b`` in {0, 1}                    b2a
edabits            ``sum arith = r`` uniform, ``^bits = slice(r)``  ltz [edaBits]
                   (r's bits, bit-sliced), or ``= r`` unsliced
=================  ============================================  ==============

[Beaver91] D. Beaver, Efficient multiparty protocols using circuit
randomization, CRYPTO 1991. [ABY3] P. Mohassel, P. Rindal, ABY3, CCS 2018
(the truncation pair). [edaBits] D. Escudero, S. Ghosh, M. Keller, R. Rachuri,
P. Scholl, Improved primitives for MPC over mixed arithmetic-binary
circuits, CRYPTO 2020.

Words come from ``jax.random`` with the caller's key implementation: the main
job uses :data:`jaxmpc.prg.AES` (AES-128 in counter mode); see SECURITY.md.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import math

import jax
import jax.numpy as jnp

from jaxmpc import bitslice, ring


class Triple(NamedTuple):
    """Shares of ``(a, b, c)`` with ``c = B(a, b)``, each stacked on the party axis."""

    a: jax.Array
    b: jax.Array
    c: jax.Array


class TruncTriple(NamedTuple):
    """Shares of ``(a, b, c)`` with ``c = B(a, b) + r``, and of ``r >>_arith f``."""

    a: jax.Array
    b: jax.Array
    c: jax.Array
    r_shifted: jax.Array


class TruncPair(NamedTuple):
    """Shares of ``r`` and of ``r >>_arith f``."""

    r: jax.Array
    r_shifted: jax.Array


class SharedBit(NamedTuple):
    """A random bit, arithmetically shared (``arith``) and XOR-shared in bit 0 (``xor``)."""

    arith: jax.Array
    xor: jax.Array


def _draw(keys: jax.Array, shapes: list[tuple[int, ...]]) -> list[jax.Array]:
    """Uniform words from each key (one PRNG call per key), one ``(len(keys), *shape)`` array per shape."""
    sizes = [math.prod(s) for s in shapes]
    # one call per key, stacked: a vmapped call lays the key axis out minor-most
    # (measured with rbg), so every consumer of a party's words read them strided
    flat = jnp.stack([ring.random_ring(keys[i], (sum(sizes),)) for i in range(keys.shape[0])])
    out, start = [], 0
    for shape, size in zip(shapes, sizes):
        out.append(flat[:, start : start + size].reshape((keys.shape[0],) + shape))
        start += size
    return out


def _party_randomness(
    key: jax.Array, n_parties: int, shapes: Sequence[Sequence[int]], derived: Sequence[Sequence[int]] = ()
) -> tuple[list[jax.Array], list[jax.Array]]:
    """Each party's seeded words: ``(uniform, others)``.

    ``uniform``: one ``(n_parties, *shape)`` array per shape in ``shapes``
    (shares of random values, every party's from its own seed). ``others``:
    one ``(n_parties - 1, *shape)`` array per shape in ``derived``, the seeded
    shares of parties ``0..n-2`` of a derived value; the dealer computes the
    last party's share (:func:`_correct_last`), so no words are drawn for it.

    Party ``i``'s words come from ``fold_in(key, i)`` alone (so a party can
    expand them from a seed it shares with the dealer): ``uniform`` from that
    key, ``others`` from ``fold_in(fold_in(key, i), 1)``; one PRNG call each.
    """
    shapes = [tuple(int(d) for d in s) for s in shapes]
    derived = [tuple(int(d) for d in s) for s in derived]
    party_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_parties, dtype=jnp.uint32))
    uniform = _draw(party_keys, shapes) if shapes else []
    others = []
    if derived:
        derived_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(party_keys[:-1])
        others = _draw(derived_keys, derived)
    return uniform, others


def _correct_last(others: jax.Array, secret: jax.Array) -> jax.Array:
    """Seeded shares ``others`` of parties ``0..n-2`` (from :func:`_party_randomness`);
    the last share is the dealer's correction ``secret - sum(others)``."""
    last = secret - jnp.sum(others, axis=0, dtype=ring.RING_DTYPE)
    return jnp.concatenate([others, last[None]])


def _total(shares: jax.Array) -> jax.Array:
    return jnp.sum(shares, axis=0, dtype=ring.RING_DTYPE)


def _xor_total(shares: jax.Array) -> jax.Array:
    return jax.lax.reduce(shares, jnp.uint64(0), jax.lax.bitwise_xor, (0,))


def mask(key: jax.Array, n_parties: int, shape: Sequence[int]) -> jax.Array:
    """Shares of a uniform mask ``b`` that the dealer keeps for later triples
    (``beaver_triple(..., b=b)``): a secret ``y`` opened once as ``y - b``
    can then enter many products. ``n*|b|`` words, nothing sent."""
    (b,), _ = _party_randomness(key, n_parties, [shape])
    return b


def _triple_masks(key, n_parties, a_shape, b_shape, b, derived, a=None):
    """Fresh ``a`` and ``b``, except either that is given (shares of the
    dealer's earlier :func:`mask`), plus the seeded shares of the derived values."""
    fresh = [shape for shape, given in ((a_shape, a), (b_shape, b)) if given is None]
    drawn, others = _party_randomness(key, n_parties, fresh, derived)
    drawn = iter(drawn)
    a = next(drawn) if a is None else a
    b = next(drawn) if b is None else b
    return a, b, others


def _product_shape(bilinear: ring.Bilinear, a_shape, b_shape) -> tuple[int, ...]:
    return jax.eval_shape(bilinear, jax.ShapeDtypeStruct(a_shape, ring.RING_DTYPE),
                          jax.ShapeDtypeStruct(b_shape, ring.RING_DTYPE)).shape


def beaver_triple(
    key: jax.Array,
    n_parties: int,
    a_shape: Sequence[int],
    b_shape: Sequence[int],
    bilinear: ring.Bilinear,
    b: jax.Array | None = None,
    a: jax.Array | None = None,
) -> Triple:
    """Beaver triple for any bilinear map over the ring: ``c = bilinear(a, b)``.

    Dealer work: one ``bilinear`` on ring elements plus ``n*(|a|+|b|) + (n-1)*|c|``
    random words (no ``n*|b|`` when ``b``, shares of a :func:`mask` dealt
    earlier, is given; likewise ``a``). Sent: ``|c|`` words (the last party's
    correction).
    """
    a_shape, b_shape = tuple(a_shape), tuple(b_shape)
    c_shape = _product_shape(bilinear, a_shape, b_shape)
    a, b, (c_rand,) = _triple_masks(key, n_parties, a_shape, b_shape, b, [c_shape], a)
    c = _correct_last(c_rand, bilinear(_total(a), _total(b)))
    return Triple(a, b, c)


def beaver_trunc_triple(
    key: jax.Array,
    n_parties: int,
    a_shape: Sequence[int],
    b_shape: Sequence[int],
    bilinear: ring.Bilinear,
    bits: int,
    b: jax.Array | None = None,
    a: jax.Array | None = None,
) -> TruncTriple:
    """A Beaver triple whose product is pre-masked for truncation.

    ``c = bilinear(a, b) + r`` and ``r_shifted = r >>_arith bits`` for a
    uniform ``r``: the parties' Beaver output then sums to ``B(x, y) + r``,
    which they open and shift. Compared with a triple plus a separate
    truncation pair, ``r`` itself is never dealt: ``n*(|a|+|b|) + (2n-1)*|c|``
    words (no ``n*|b|`` when ``b``, shares of an earlier :func:`mask`, is
    given; likewise ``a``).
    """
    a_shape, b_shape = tuple(a_shape), tuple(b_shape)
    c_shape = _product_shape(bilinear, a_shape, b_shape)
    k_r, k_shares = jax.random.split(key)
    r = ring.random_ring(k_r, c_shape)
    a, b, (c_rand, s_rand) = _triple_masks(k_shares, n_parties, a_shape, b_shape, b, [c_shape, c_shape], a)
    c = _correct_last(c_rand, bilinear(_total(a), _total(b)) + r)
    return TruncTriple(a, b, c, _correct_last(s_rand, ring.arith_shift_right(r, bits)))


class TransposeTriples(NamedTuple):
    """Correlations for the backward pass of a Beaver product, reusing its masks.

    ``m`` masks the cotangent; ``c_x = Bx(m, b) + r_x``, ``c_y = By(a, m) + r_y``
    with ``s_* = r_* >> bits_*`` (``r = 0`` and ``s = None`` where no
    truncation is fused). Entries not needed are None.
    """

    m: jax.Array
    c_x: jax.Array | None
    s_x: jax.Array | None
    c_y: jax.Array | None
    s_y: jax.Array | None


def beaver_transpose_triples(
    key: jax.Array,
    a: jax.Array,
    b: jax.Array,
    m_shape: Sequence[int],
    bx: ring.Bilinear | None,
    by: ring.Bilinear | None,
    bits_x: int,
    bits_y: int,
    scale_x: int = 1,
    scale_y: int = 1,
) -> TransposeTriples:
    """Triples for ``Bx(ct, y)`` and ``By(x, ct)`` that reuse the forward masks ``a``, ``b``.

    The dealer dealt ``a`` and ``b`` for the forward product and remembers
    them (here: their stacked shares are passed back in). Only the
    cotangent's mask ``m`` is fresh, so the backward pass opens ``ct - m``
    alone. Invariants: ``sum c_x = Bx(m, b) + r_x``,
    ``sum s_x = floor(scale_x * r_x / 2**bits_x)`` (likewise for y; the public
    integer ``scale`` lets the parties scale the opened ``Bx + r_x`` within
    the truncation, see :func:`jaxmpc.ring.scaled_shift_right`).
    Words: ``n*|m| + (2n-1)*(|dx| + |dy|)`` at most.
    """
    n = a.shape[0]
    a_tot, b_tot = _total(a), _total(b)
    spec = lambda arr: jax.ShapeDtypeStruct(arr.shape, ring.RING_DTYPE)  # noqa: E731
    m_spec = jax.ShapeDtypeStruct(tuple(m_shape), ring.RING_DTYPE)
    x_shape = jax.eval_shape(bx, m_spec, spec(b_tot)).shape if bx else ()
    y_shape = jax.eval_shape(by, spec(a_tot), m_spec).shape if by else ()
    k_r, k_shares = jax.random.split(key)
    kx, ky = jax.random.split(k_r)
    (m,), derived = _party_randomness(
        k_shares, n, [m_shape], [s for s, used in ((x_shape, bx), (x_shape, bx and bits_x), (y_shape, by),
                                                   (y_shape, by and bits_y)) if used]
    )
    derived = iter(derived)
    cx_rand = next(derived) if bx else None
    sx_rand = next(derived) if bx and bits_x else None
    cy_rand = next(derived) if by else None
    sy_rand = next(derived) if by and bits_y else None
    m_tot = _total(m)

    def deal(product, bits, scale, c_rand, s_rand, k):
        if bits == 0:
            if scale != 1:
                raise ValueError("a scaled backward product needs a truncation (bits > 0)")
            return _correct_last(c_rand, product), None
        r = ring.random_ring(k, product.shape)
        return (
            _correct_last(c_rand, product + r),
            _correct_last(s_rand, ring.scaled_shift_right(r, scale, bits)),
        )

    c_x = s_x = c_y = s_y = None
    if bx is not None:
        c_x, s_x = deal(bx(m_tot, b_tot), bits_x, scale_x, cx_rand, sx_rand, kx)
    if by is not None:
        c_y, s_y = deal(by(a_tot, m_tot), bits_y, scale_y, cy_rand, sy_rand, ky)
    return TransposeTriples(m, c_x, s_x, c_y, s_y)


def square_pair(key: jax.Array, n_parties: int, shape: Sequence[int]) -> tuple[jax.Array, jax.Array]:
    """Shares of ``(a, a*a)``: half a triple, for squaring."""
    (a,), (c_rand,) = _party_randomness(key, n_parties, [shape], [shape])
    a_tot = _total(a)
    return a, _correct_last(c_rand, a_tot * a_tot)


def trunc_pair(key: jax.Array, n_parties: int, shape: Sequence[int], bits: int) -> TruncPair:
    """Shares of a uniform ``r`` and of ``r >>_arith bits`` (ABY3's truncation pair)."""
    (r,), (s_rand,) = _party_randomness(key, n_parties, [shape], [shape])
    return TruncPair(r, _correct_last(s_rand, ring.arith_shift_right(_total(r), bits)))


def and_triple(key: jax.Array, n_parties: int, shape: Sequence[int]) -> Triple:
    """XOR shares of 64-bit words ``a``, ``b`` and ``c = a & b`` (64 AND gates per word)."""
    (a, b), (others,) = _party_randomness(key, n_parties, [shape, shape], [shape])
    last = (_xor_total(a) & _xor_total(b)) ^ _xor_total(others)
    return Triple(a, b, jnp.concatenate([others, last[None]]))


def random_bits(key: jax.Array, n_parties: int, shape: Sequence[int], packed: bool = False) -> SharedBit:
    """A uniform bit per element, shared both arithmetically and by XOR (in bit 0).

    ``packed=True``: the XOR shares are packed 64 bits per word instead,
    ``xor`` is ``(n, W)`` in the layout of :func:`jaxmpc.bitslice.pack_bits`
    (the padding bits of the last word are uniform too). The bits are then the
    XOR of ``n`` seeded word vectors: ``n W + (n-1) N`` words for ``N`` bits
    instead of ``(2n-1) N``.
    """
    if packed:
        return _random_bits_packed(key, n_parties, shape)
    k_bit, k_shares = jax.random.split(key)
    bit = ring.random_ring(k_bit, tuple(shape)) & jnp.uint64(1)
    _, (arith_rand, xor_rand) = _party_randomness(k_shares, n_parties, [], [shape, shape])
    arith = _correct_last(arith_rand, bit)
    others = xor_rand & jnp.uint64(1)
    xor = jnp.concatenate([others, (bit ^ _xor_total(others))[None]])
    return SharedBit(arith, xor)


def _random_bits_packed(key: jax.Array, n_parties: int, shape: Sequence[int]) -> SharedBit:
    """:func:`random_bits` with ``packed=True``."""
    shape = tuple(int(d) for d in shape)
    words = bitslice.n_words(math.prod(shape))
    (xor,), (arith_rand,) = _party_randomness(key, n_parties, [(words,)], [shape])
    bit = bitslice.unpack_bits(_xor_total(xor), shape)
    return SharedBit(_correct_last(arith_rand, bit), xor)


class EdaBits(NamedTuple):
    """A uniform ring element ``r`` shared arithmetically and its bits XOR-shared.

    ``arith``: ``(n, *shape)``, summing to ``r``. ``bits``: bit-sliced (the
    default), ``(n, 64, W)`` with ``W = ceil(N / 64)``, XOR-ing to
    :func:`jaxmpc.bitslice.slice_bits` of ``r`` (bit ``j`` of word
    ``[k, w]`` = bit ``k`` of element ``64 w + j``; the padding elements are 0);
    or, with ``sliced=False``, ``(n, *shape)`` XOR-ing to ``r`` itself.
    """

    arith: jax.Array
    bits: jax.Array


def edabits(key: jax.Array, n_parties: int, shape: Sequence[int], sliced: bool = True) -> EdaBits:
    """An edaBit per element [edaBits]: uniform ``r``, shared arithmetically and bit by bit.

    ``r`` is the sum of the parties' seeded arithmetic shares; the dealer
    slices it (unless ``sliced=False``) and sends only the last party's XOR
    share of the bits. Words: ``n N + (n-1) 64 W`` for ``N`` elements
    (``(2n-1) N`` when 64 divides ``N``; ``(2n-1) N`` unsliced). Sent: ``64 W``
    words (``N`` unsliced).
    """
    shape = tuple(int(d) for d in shape)
    layout = (bitslice.BITS, bitslice.n_words(math.prod(shape))) if sliced else shape
    (arith,), (bits_rand,) = _party_randomness(key, n_parties, [shape], [layout])
    r = _total(arith)
    last = (bitslice.slice_bits(r) if sliced else r) ^ _xor_total(bits_rand)
    return EdaBits(arith, jnp.concatenate([bits_rand, last[None]]))
