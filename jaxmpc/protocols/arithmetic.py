"""Arithmetic protocols: Beaver products over any bilinear map, and truncation.

Each protocol has a per-party (SPMD) core, named ``*_local``, that runs inside
:func:`jaxmpc.spmd.party_map`, and a public wrapper on :class:`SharedTensor`
that draws the dealer's randomness from ``key``. Suffixes say which inputs are
secret (``s``) or public (``p``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmpc import dealer, debug, limbs, ring, spmd, tensor
from jaxmpc.tensor import SharedTensor, _align, _check_broadcast, _require_ring, check_compatible

TruncMethod = Literal["dealer", "local"]
TRUNC_METHODS = ("dealer", "local")


# ----------------------------------------------------------------- SPMD cores


def beaver_opened_local(
    e: jax.Array, f: jax.Array, a: jax.Array, b: jax.Array, c: jax.Array, bilinear: ring.Bilinear
) -> jax.Array:
    """The local half of Beaver's protocol, once ``e = x - a`` and ``f = y - b`` are open.

    ``z_i = c_i + B(e, b_i + [i = 0] f) + B(a_i, f)``, since
    ``B(x, y) = B(a, b) + B(e, b) + B(a, f) + B(e, f)``. No communication.
    """
    lead = jnp.where(spmd.is_party(0), f, jnp.zeros_like(f))
    return c + bilinear(e, b + lead) + bilinear(a, f)


def beaver_local(
    x: jax.Array, y: jax.Array, a: jax.Array, b: jax.Array, c: jax.Array, bilinear: ring.Bilinear
) -> jax.Array:
    """One party's share of ``B(x, y)`` for a bilinear ``B`` [Beaver91].

    Steps: open ``e = x - a`` and ``f = y - b`` together (one round), then
    :func:`beaver_opened_local`. Opened: ``e`` and ``f``, uniform because
    ``a``, ``b`` are. Cost: 1 round; ``(n-1) * 8 * (|x| + |y|)`` bytes per
    party -- the operand sizes, not the product's.
    """
    e, f = spmd.open_sum((x - a, y - b), what="beaver")
    return beaver_opened_local(e, f, a, b, c, bilinear)


def square_local(x: jax.Array, a: jax.Array, c: jax.Array) -> jax.Array:
    """One party's share of ``x*x`` from a square pair ``(a, a*a)``.

    Open ``e = x - a`` (1 round, ``(n-1)*8*|x|`` bytes per party, half of a
    multiplication), then ``x^2 = c + 2 e a + e^2``.
    """
    e = spmd.open_sum(x - a, what="square")
    lead = jnp.where(spmd.is_party(0), e * e, jnp.zeros_like(e))
    return c + jnp.uint64(2) * e * a + lead


def truncate_local_2pc(x: jax.Array, bits: int) -> jax.Array:
    """SecureML's local truncation, 2 parties only: no communication.

    Party 0 computes ``x_0 >>_a bits``, party 1 ``-((-x_1) >>_a bits)``. The
    result is off by at most 1 unit except with probability about
    ``|x| / 2**63``, where it is off by about ``2**(64-bits)`` [SecureML,
    Mohassel & Zhang, S&P 2017]. Its error depends on the shares, which leaks
    in the simulation sense (Li et al., 2023): prefer ``"dealer"``.
    """
    first = spmd.is_party(0)
    shifted = ring.arith_shift_right(jnp.where(first, x, -x), bits)
    return jnp.where(first, shifted, -shifted)


def truncate_dealer_local(x: jax.Array, r: jax.Array, r_shifted: jax.Array, bits: int) -> jax.Array:
    """Truncation with a dealer pair ``(r, r >> bits)`` [ABY3], any number of parties.

    Open ``z = x + r`` (uniform), then party 0 adds ``z >>_a bits`` to minus its
    share of ``r >> bits``. Off by at most 1 unit, independently of the
    shares, except with probability about ``|x| / 2**64`` (wrap of ``x + r``).
    Opening ``x + r`` rather than ``x - r`` makes the error unbiased:
    ``floor(z/2^b) - floor(r/2^b)`` is ``floor(x/2^b)`` or one more.
    Cost: 1 round, ``(n-1) * 8`` bytes per element per party.
    """
    return _open_shifted(x + r, r_shifted, bits)


def _open_shifted(masked: jax.Array, r_shifted: jax.Array, bits: int) -> jax.Array:
    """Open ``z = v + r`` and return shares of ``(z >>_a bits) - (r >>_a bits)``."""
    z = spmd.open_sum(masked, what="trunc")
    lead = jnp.where(spmd.is_party(0), ring.arith_shift_right(z, bits), jnp.zeros_like(z))
    return lead - r_shifted


# -------------------------------------------------------------- public wrappers


def _check_key(key: Any) -> None:
    if not isinstance(key, jax.Array) or not (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == jnp.uint32 and key.shape[-1:] == (2,))
    ):
        raise TypeError(
            f"expected a PRNG key (jax.random.key(seed)), got {type(key).__name__}"
            + (f" of dtype {key.dtype}" if hasattr(key, "dtype") else "")
        )


def _check_trunc(method: str, n_parties: int) -> None:
    if method not in TRUNC_METHODS:
        raise ValueError(f"unknown truncation method {method!r}; use one of {TRUNC_METHODS}")
    if method == "local" and n_parties != 2:
        raise ValueError(
            f"local truncation works for 2 parties only, got {n_parties}; use method='dealer'"
        )


def truncate(
    x: SharedTensor, key: jax.Array, bits: int | None = None, *, method: TruncMethod = "dealer"
) -> SharedTensor:
    """Divide the secret by ``2**bits`` (to within 1 unit) and drop ``bits`` fractional bits.

    ``bits`` defaults to ``x.frac_bits // 2``, the usual case after a product
    of two values of equal precision. ``method="dealer"`` (default: any n,
    1 round, error independent of the shares) or ``"local"`` (2 parties, no
    communication, SecureML).
    """
    _require_ring(x)
    if bits is None:
        bits = x.frac_bits // 2
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an int, got {bits!r}")
    if not 0 <= bits <= x.frac_bits:
        raise ValueError(f"cannot truncate {bits} bits from a tensor with frac_bits={x.frac_bits}")
    _check_trunc(method, x.n_parties if bits else 2)
    if bits == 0:
        return x
    if method == "local":
        out = spmd.party_map(lambda s: truncate_local_2pc(s, bits))(x.shares)
    else:
        _check_key(key)
        pair = dealer.trunc_pair(key, x.n_parties, x.shape, bits)
        out = spmd.party_map(lambda s, r, rs: truncate_dealer_local(s, r, rs, bits))(
            x.shares, pair.r, pair.r_shifted
        )
    return debug.on_truncate(x, SharedTensor(out, x.frac_bits - bits), bits)


class BeaverMasks(NamedTuple):
    """What the parties keep from a Beaver product for its backward pass:
    their shares of the masks ``a``, ``b`` and the opened ``e = x - a``,
    ``f = y - b`` (identical at every party), all stacked on the party axis."""

    a: jax.Array
    b: jax.Array
    e: jax.Array
    f: jax.Array


def bilinear_ss(
    x: SharedTensor,
    y: SharedTensor,
    key: jax.Array,
    bilinear: ring.Bilinear,
    *,
    trunc: TruncMethod = "dealer",
    fused: bool = True,
    keep_masks: bool = False,
):
    """``B(x, y)`` for secret ``x``, ``y`` and a bilinear ring map ``B``, then truncation.

    The product carries ``fx + fy`` fractional bits; ``min(fx, fy)`` are
    truncated so the result has ``max(fx, fy)``. Cost: 1 round (Beaver) plus
    1 round for a dealer truncation. With dealer truncation the two are fused
    unless ``fused=False`` (the reference path): the dealer's triple has
    ``c = B(a, b) + r`` (:func:`jaxmpc.dealer.beaver_trunc_triple`), so the
    Beaver output is already masked for truncation and ``r`` is never dealt.
    With ``keep_masks`` also returns the :class:`BeaverMasks` that
    :func:`bilinear_transpose_ss` reuses.
    """
    _require_ring(x)
    _require_ring(y)
    _check_key(key)
    _check_factors(x, y)
    bits = min(x.frac_bits, y.frac_bits)
    _check_trunc(trunc, x.n_parties if bits else 2)

    def opened(xs, ys, a, b):
        return spmd.open_sum((xs - a, ys - b), what="beaver")

    if fused and trunc == "dealer" and bits:
        t = dealer.beaver_trunc_triple(key, x.n_parties, x.shape, y.shape, bilinear, bits)

        def local(xs, ys, a, b, c, rs):
            # c sums to B(a, b) + r, so the Beaver output sums to B(x, y) + r
            e, f = opened(xs, ys, a, b)
            return _open_shifted(beaver_opened_local(e, f, a, b, c, bilinear), rs, bits), e, f

        z, e, f = spmd.party_map(local)(x.shares, y.shares, t.a, t.b, t.c, t.r_shifted)
        out = SharedTensor(z, x.frac_bits + y.frac_bits - bits)
        out = debug.on_product(x, y, out, bilinear, bits)
    else:
        k_triple, k_trunc = jax.random.split(key)
        t = dealer.beaver_triple(k_triple, x.n_parties, x.shape, y.shape, bilinear)

        def local(xs, ys, a, b, c):
            e, f = opened(xs, ys, a, b)
            return beaver_opened_local(e, f, a, b, c, bilinear), e, f

        z, e, f = spmd.party_map(local)(x.shares, y.shares, t.a, t.b, t.c)
        out = truncate(SharedTensor(z, x.frac_bits + y.frac_bits), k_trunc, bits, method=trunc)
    return (out, BeaverMasks(t.a, t.b, e, f)) if keep_masks else out


def bilinear_transpose_ss(
    ct: SharedTensor,
    masks: BeaverMasks,
    key: jax.Array,
    bx: ring.Bilinear | None,
    by: ring.Bilinear | None,
    *,
    x_frac: int,
    y_frac: int,
    trunc: TruncMethod = "dealer",
    y_scale: float | None = None,
    premasked_y: bool = False,
) -> tuple[SharedTensor | None, SharedTensor | Premasked | None]:
    """The backward pass of ``z = B(x, y)``: ``Bx(ct, y)`` and ``By(x, ct)``.

    Reuses the forward masks (SecureML's trick): ``x = e + a`` and ``y = f + b``
    are still masked by ``a``, ``b`` with ``e``, ``f`` already public, so only
    ``g = ct - m`` is opened (1 round, ``(n-1)*8*|ct|`` bytes per party) and
    each output is :func:`beaver_opened_local` with a dealer product
    (:func:`jaxmpc.dealer.beaver_transpose_triples`); both truncations are
    opened together (1 more round). Pass ``bx`` / ``by`` as None to skip an
    output. E.g. matmul: ``Bx(c, y) = c @ y.T``, ``By(x, c) = x.T @ c``.

    ``y_scale``: return ``y_scale * By(x, ct)`` instead, a public positive
    real encoded with the output's fractional bits and applied to the opened
    value within the fused truncation (:func:`jaxmpc.ring.scaled_shift_right`):
    no extra round, words or truncation error. This is how a learning rate is
    folded into the weight gradient (:func:`jaxmpc.autodiff.matmul`'s
    ``w_grad_scale``). With ``trunc="local"`` it costs one more truncation.

    ``premasked_y``: return ``By`` as a :class:`Premasked` value: its opened
    part is the public ``L = open(z + r) >> k`` of the fused truncation and
    its mask the dealer's ``-(r >> k)`` shares -- the same shares, split so
    that a :class:`Premasked` weight can take the SGD step without being
    opened again. Needs the fused truncation.
    """
    _require_ring(ct)
    _check_key(key)
    bits_x = min(ct.frac_bits, y_frac) if bx else 0
    bits_y = min(x_frac, ct.frac_bits) if by else 0
    fuse = trunc == "dealer"
    scale_y, shift_y = 1, bits_y
    if y_scale is not None and by is not None:
        fs = x_frac + ct.frac_bits - bits_y  # the output's fractional bits
        scale_y, shift_y = _encode_scale(y_scale, fs), bits_y + fs
        if not fuse or not bits_y:
            raise ValueError("y_scale needs the dealer's fused truncation (trunc='dealer', fractional operands)")
    if premasked_y and by is not None and (not fuse or not bits_y):
        raise ValueError(
            "a premasked gradient comes from the dealer's fused truncation (trunc='dealer', fractional "
            "operands); use plain shared weights (Premasked.as_shared) otherwise"
        )
    t = dealer.beaver_transpose_triples(
        key, masks.a, masks.b, ct.shape, bx, by, bits_x if fuse else 0, shift_y if fuse else 0, 1, scale_y
    )
    wanted = [(bx, bits_x, t.c_x, t.s_x, True, 1, bits_x), (by, bits_y, t.c_y, t.s_y, False, scale_y, shift_y)]
    wanted = [w for w in wanted if w[0] is not None]

    def local(ct_s, m, a, b, e, f, cs, ss):
        g = spmd.open_sum(ct_s - m, what="beaver")
        outs = [
            beaver_opened_local(g, f, m, b, c, bil) if is_x else beaver_opened_local(e, g, a, m, c, bil)
            for (bil, _, _, _, is_x, _, _), c in zip(wanted, cs)
        ]
        to_open = [i for i, w in enumerate(wanted) if w[1] and fuse]
        if to_open:
            opened = spmd.open_sum(tuple(outs[i] for i in to_open), what="trunc")
            for i, z in zip(to_open, opened):
                *_, scale, shift = wanted[i]
                opened_part = ring.scaled_shift_right(z, scale, shift)
                if premasked_y and not wanted[i][4]:
                    outs[i] = (opened_part, -ss[i])
                else:
                    outs[i] = jnp.where(spmd.is_party(0), opened_part, jnp.zeros_like(z)) - ss[i]
        return outs

    cs = [w[2] for w in wanted]
    ss = [w[3] if w[3] is not None else jnp.zeros_like(w[2]) for w in wanted]
    # e and f are public: unmapped in the simulation (spmd.public_operand)
    (e, e_ax), (f, f_ax) = spmd.public_operand(masks.e), spmd.public_operand(masks.f)
    outs = spmd.party_map(local, in_axes=(0, 0, 0, 0, e_ax, f_ax, 0, 0))(ct.shares, t.m, masks.a, masks.b, e, f, cs, ss)
    results = []
    for (bil, bits, _, _, is_x, scale, shift), z in zip(wanted, outs):
        frac = ct.frac_bits + (y_frac if is_x else x_frac)
        if isinstance(z, tuple):  # the premasked gradient: (opened part, mask)
            out = Premasked(z[1], z[0], frac - bits)
        elif fuse:
            out = SharedTensor(z, frac - bits)
        else:
            out = truncate(SharedTensor(z, frac), jax.random.fold_in(key, 7 + is_x), bits, method=trunc)
        if fuse:
            debug.on_truncate(
                lambda bil=bil, is_x=is_x, scale=scale: debug.transpose_product(ct, masks, bil, is_x)
                * jnp.uint64(scale),
                out.as_shared() if isinstance(out, Premasked) else out,
                shift,
            )
        results.append(out)
    it = iter(results)
    return (next(it) if bx else None, next(it) if by else None)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Premasked:
    """A secret ``y`` opened once as ``f = y - b`` under a dealer mask ``b`` (:func:`premask`).

    Beaver products ``B(x, y)`` with many ``x`` -- every inference batch
    through the same weights -- then open only ``e = x - a`` with a fresh
    ``a``: the dealer reuses ``b`` (``c = B(a, b)``), the parties reuse ``f``.
    Secure because ``f`` is opened once and every later opening is masked by
    fresh randomness (the reuse of SecureML, Mohassel & Zhang, S&P 2017,
    Sec. 4.2).

    Invariant: ``b`` is always known to the dealer, which is what lets it
    deal ``c = B(a, b)``. It holds for a fresh mask, and it is kept by the two
    operations defined here: negation, and the leafwise sum with another
    premasked value -- in particular a weight gradient in premasked form,
    ``(-(r >> k), open(lr dW + r) >> k)``, whose mask is the dealer's own
    truncation mask (:func:`bilinear_transpose_ss` with ``premasked_y``). So
    SGD keeps a weight premasked across steps without opening it again
    (``W - G`` has mask ``b + (r >> k)`` and opened part ``f - L``, both
    computed locally). Any other update (a secret not of this form) would
    break the invariant: turn the weight back into shares with
    :meth:`as_shared` first. Differentiable through :func:`jaxmpc.autodiff.matmul`.
    """

    b: jax.Array  # (n, *shape) the parties' shares of the dealer's mask
    f: jax.Array  # (n, *shape) the opened y - b, the same at every party
    frac_bits: int = dataclasses.field(metadata=dict(static=True))
    # float64 limbs of each party's right operands b_i + [i=0] f and f
    # (stacked), split once for matmul's limb path (None where it is not taken)
    split: tuple[limbs.SplitOperand, limbs.SplitOperand] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.b.shape[1:])

    @property
    def n_parties(self) -> int:
        return int(self.b.shape[0])

    @property
    def is_carrier(self) -> bool:
        """True while differentiated (complex128 carriers, :mod:`jaxmpc.autodiff`)."""
        return self.b.dtype == jnp.complex128

    def as_shared(self) -> SharedTensor:
        """Shares of ``y`` again, locally: ``b_i + [i = 0] f``."""
        lead = jnp.zeros_like(self.f).at[0].set(self.f[0])
        return SharedTensor(tensor.linear_on_carriers(jnp.add, self.b, lead), self.frac_bits)

    def __getitem__(self, idx: Any) -> "Premasked":
        """A slice, e.g. one batch of premasked data: the same masks, sliced; no split."""
        idx = idx if isinstance(idx, tuple) else (idx,)
        return Premasked(self.b[(slice(None), *idx)], self.f[(slice(None), *idx)], self.frac_bits)

    def __neg__(self) -> "Premasked":
        """``-y``: mask ``-b`` (still the dealer's), opened part ``-f``; no split."""
        neg = functools.partial(tensor.linear_on_carriers, tensor.negate_words)
        return Premasked(neg(self.b), neg(self.f), self.frac_bits)


def premask(y: SharedTensor, key: jax.Array, *, split: bool = True) -> Premasked:
    """Open ``f = y - b`` once under a fresh dealer mask ``b`` (:func:`jaxmpc.dealer.mask`).

    Cost: 1 round, ``(n-1) * 8 * |y|`` bytes per party, once; each later
    product with the result (:func:`matmul`, :func:`bilinear_sm`) then opens
    only its other operand. Opened: ``y - b``, uniform. ``split``: also cut
    the right operands into float64 limbs once (:func:`presplit`), for a
    weight that stays fixed; pass False for one that SGD will update.
    """
    _require_ring(y)
    _check_key(key)
    b = dealer.mask(key, y.n_parties, y.shape)
    f = spmd.party_map(lambda ys, bs: spmd.open_sum(ys - bs, what="beaver"))(y.shares, b)
    masked = Premasked(b, f, y.frac_bits)
    return presplit(masked) if split else masked


def presplit(y: Premasked) -> Premasked:
    """``y`` with the float64 limbs of its matmul right operands (``b_i + [i=0] f``
    and ``f``) computed once, locally, for a weight used by many products
    (:func:`jaxmpc.limbs.split_rhs`). Unchanged where the float64 limb path is
    not taken (short contractions, or long ones, which take the int8 byte path:
    its split is a bitcast, and it beats the pre-split float64 limbs, 5.5 vs
    6.1 ms for the reference inference)."""
    if not isinstance(y, Premasked):
        raise TypeError(f"presplit takes a Premasked weight (arithmetic.premask), got {type(y).__name__}")
    rows = (limbs.MIN_ROWS, y.shape[0]) if len(y.shape) == 2 else None
    if y.split is not None or rows is None or not limbs.use_limbs(rows, y.shape) or limbs.use_bytes(rows, y.shape):
        return y
    split = (limbs.split_rhs(y.as_shared().shares), limbs.split_rhs(y.f))
    return dataclasses.replace(y, split=split)


def bilinear_sm(
    x: SharedTensor | Premasked,
    y: Premasked,
    key: jax.Array,
    bilinear: ring.Bilinear,
    *,
    trunc: TruncMethod = "dealer",
    keep_masks: bool = False,
):
    """``B(x, y)`` for a secret ``x`` and a :class:`Premasked` secret ``y``, then truncation.

    As :func:`bilinear_ss`, but the dealer's triple reuses ``y``'s mask
    (``c = B(a, b) + r`` with a fresh ``a`` and ``r``) and only ``e = x - a``
    is opened: 1 round, ``(n-1) * 8 * |x|`` bytes per party (plus the fused
    truncation's round). Dealer words: ``n*|a| + (2n-1)*|z|``, none for ``b``.
    A :class:`Premasked` ``x`` too (data opened once under its mask, as
    SecureML's ``X - U``) reuses both masks: nothing is opened but the
    truncation, and the dealer draws no ``a``.
    With ``keep_masks`` also returns the :class:`BeaverMasks` (the masks and
    opened parts) for :func:`bilinear_transpose_ss`.
    """
    x_masked = isinstance(x, Premasked)
    x_shared = x.as_shared() if x_masked else x
    _require_ring(x_shared)
    _check_key(key)
    if not isinstance(y, Premasked):
        raise TypeError(f"bilinear_sm takes a Premasked right operand (arithmetic.premask), got {type(y).__name__}")
    y_shared = y.as_shared()
    _check_factors(x_shared, y_shared)
    bits = min(x.frac_bits, y.frac_bits)
    n = x_shared.n_parties
    _check_trunc(trunc, n if bits else 2)

    split = (
        y.split
        if bilinear is ring.matmul and y.split is not None
        and limbs.use_limbs(x.shape, y.shape) and not limbs.use_bytes(x.shape, y.shape)
        else None
    )

    def product(xs, a, b, f, c, *split_local):
        e = xs if x_masked else spmd.open_sum(xs - a, what="beaver")
        if split_local:  # = beaver_opened_local with both right operands pre-split
            bf, ff = split_local
            return c + limbs.matmul_split_rhs(e, bf) + limbs.matmul_split_rhs(a, ff), e
        return beaver_opened_local(e, f, a, b, c, bilinear), e

    # public values (f, its limbs, a premasked x's opened part): unmapped in
    # the simulation, so a_i @ f is one GEMM for all parties (spmd.public_operand)
    f, f_ax = spmd.public_operand(y.f)
    first, x_ax = spmd.public_operand(x.f) if x_masked else (x.shares, 0)
    extra, extra_ax = (), ()
    if split is not None:
        ff, ff_ax = spmd.public_operand(split[1])
        extra, extra_ax = (split[0], ff), (0, ff_ax)
    in_axes = (0, x_ax, 0, 0, f_ax, 0) + extra_ax
    a_given = x.b if x_masked else None

    if trunc == "dealer" and bits:
        t = dealer.beaver_trunc_triple(key, n, x.shape, y.shape, bilinear, bits, b=y.b, a=a_given)

        def fused(rs, *args):
            z, e = product(*args)
            return _open_shifted(z, rs, bits), e

        z, e = spmd.party_map(fused, in_axes)(t.r_shifted, first, t.a, y.b, f, t.c, *extra)
        out = debug.on_product(x_shared, y_shared, SharedTensor(z, x.frac_bits + y.frac_bits - bits), bilinear, bits)
    else:
        k_triple, k_trunc = jax.random.split(key)
        t = dealer.beaver_triple(k_triple, n, x.shape, y.shape, bilinear, b=y.b, a=a_given)
        z, e = spmd.party_map(product, in_axes[1:])(first, t.a, y.b, f, t.c, *extra)
        out = truncate(SharedTensor(z, x.frac_bits + y.frac_bits), k_trunc, bits, method=trunc)
    return (out, BeaverMasks(t.a, y.b, e, y.f)) if keep_masks else out


def _encode_scale(scale: float, frac_bits: int) -> int:
    """A public positive real as the integer ``round(scale * 2**frac_bits)`` in ``[1, 2**31)``."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"a gradient scale must be a positive finite number, got {scale!r}")
    enc = int(round(scale * 2**frac_bits))
    if not 1 <= enc < 2**31:
        raise ValueError(
            f"gradient scale {scale} encodes to {enc} with {frac_bits} fractional bits; "
            f"use a scale in [{2.0**-frac_bits:g}, {2.0**(31 - frac_bits):g})"
        )
    return enc


def _check_factors(x: SharedTensor, y: SharedTensor) -> None:
    """Factors must share parties and precision, except that an integer tensor
    (``frac_bits=0``, e.g. a comparison bit) may scale a fixed-point one."""
    if 0 in (x.frac_bits, y.frac_bits):
        check_compatible(x, SharedTensor(y.shares, x.frac_bits), broadcast=False)
    else:
        check_compatible(x, y, broadcast=False)


def mul(x: SharedTensor, y: SharedTensor, key: jax.Array, *, trunc: TruncMethod = "dealer") -> SharedTensor:
    """Elementwise ``x * y`` of two secrets (broadcasting).

    2 rounds with dealer truncation; 1 when either factor is an integer
    tensor (``frac_bits=0``), which needs no truncation.
    """
    _check_factors(x, y)
    _check_broadcast(x.shape, y.shape)
    return bilinear_ss(x, y, key, ring.mul, trunc=trunc)


def _check_matmul_shapes(a: tuple, b: tuple) -> None:
    if len(a) < 1 or len(b) < 1 or a[-1] != (b[-2] if len(b) >= 2 else b[0]):
        raise ValueError(f"matmul shapes {a} and {b} do not match (inner dimensions differ)")


def matmul(
    x: SharedTensor | Premasked, y: SharedTensor | Premasked, key: jax.Array, *, trunc: TruncMethod = "dealer"
) -> SharedTensor:
    """Matrix product ``x @ y`` of two secrets. Bytes scale with ``|x| + |y|``,
    ``|x|`` alone when ``y`` is :class:`Premasked` (fixed weights), nothing but
    the truncation when both are."""
    if isinstance(y, Premasked):
        _check_matmul_shapes(x.shape, y.shape)
        return bilinear_sm(x, y, key, ring.matmul, trunc=trunc)
    if isinstance(x, Premasked):
        raise TypeError("a Premasked left operand needs a Premasked right operand (arithmetic.premask)")
    _check_factors(x, y)
    _check_matmul_shapes(x.shape, y.shape)
    return bilinear_ss(x, y, key, ring.matmul, trunc=trunc)


def square(x: SharedTensor, key: jax.Array, *, trunc: TruncMethod = "dealer") -> SharedTensor:
    """``x * x`` with a square pair: one opening of ``|x|`` elements, then truncation."""
    _require_ring(x)
    _check_key(key)
    k_pair, k_trunc = jax.random.split(key)
    a, c = dealer.square_pair(k_pair, x.n_parties, x.shape)
    z = spmd.party_map(square_local)(x.shares, a, c)
    return truncate(SharedTensor(z, 2 * x.frac_bits), k_trunc, x.frac_bits, method=trunc)


def _encode_public(p: Any, frac_bits: int) -> tuple[jax.Array, int]:
    """Encode a public factor: integers exactly (0 fractional bits), reals with ``frac_bits``."""
    arr = p if isinstance(p, jax.Array) else np.asarray(p)
    if arr.dtype.kind in "iub":
        return ring.ring(arr), 0
    return ring.encode(arr, frac_bits), frac_bits


def mul_public(x: SharedTensor, c: Any, key: jax.Array | None = None, *, trunc: TruncMethod = "dealer") -> SharedTensor:
    """``x * c`` for a public real ``c`` (scalar or broadcastable array).

    Local product with the encoding of ``c``, then truncation (skipped, and
    ``key`` unused, when ``c`` has an integer dtype).
    """
    _require_ring(x)
    enc, bits = _encode_public(c, x.frac_bits)
    _check_broadcast(x.shape, tuple(enc.shape))
    prod = SharedTensor(_align(x, enc.ndim) * enc, x.frac_bits + bits)
    return truncate(prod, key, bits, method=trunc) if bits else prod


def div_public(x: SharedTensor, c: Any, key: jax.Array, *, trunc: TruncMethod = "dealer") -> SharedTensor:
    """``x / c`` for a public nonzero real ``c``: multiplication by ``1/c``."""
    c_arr = np.asarray(c, dtype=np.float64)
    if np.any(c_arr == 0):
        raise ZeroDivisionError("division of a shared tensor by a public zero")
    return mul_public(x, 1.0 / c_arr, key, trunc=trunc)


def matmul_public(x: SharedTensor, p: Any, key: jax.Array, *, trunc: TruncMethod = "dealer") -> SharedTensor:
    """``x @ p`` for a public real matrix ``p``: local ring matmul, then truncation."""
    _require_ring(x)
    enc, bits = _encode_public(p, x.frac_bits)
    _check_matmul_shapes(x.shape, tuple(enc.shape))
    z = spmd.party_map(lambda s: ring.matmul(s, enc))(x.shares)
    prod = SharedTensor(z, x.frac_bits + bits)
    return truncate(prod, key, bits, method=trunc) if bits else prod


def mean(x: SharedTensor, key: jax.Array, axis: int | tuple[int, ...] | None = None, *, trunc: TruncMethod = "dealer") -> SharedTensor:
    """Mean over ``axis``: a local sum, then multiplication by the public ``1/count``."""
    total = x.sum(axis)
    count = x.size // max(total.size, 1)
    return mul_public(total, 1.0 / count, key, trunc=trunc)
