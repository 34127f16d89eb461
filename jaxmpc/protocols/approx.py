"""Smooth functions on shares: exp, reciprocal, inverse square root, log, sigmoid, softmax.

Method (one engine for all but ``exp(method="squaring")``): **secret piecewise
cubics**. The input's real line is cut into segments by public thresholds
``t_1 < ... < t_T``. One batched :func:`jaxmpc.protocols.comparison.ltz` call
gives the shared bits ``b_i = [x >= t_i]``; because the thresholds are sorted,
*any* function of the segment index ``q = sum_i b_i`` is a local linear
combination of the bits (telescoping: ``g(q) = g(0) + sum_i b_i (g(i) - g(i-1))``),
with no communication. So every segment gets its own cubic
``C0 + C1 u + C2 u^2 + C3 u^3`` in a local variable ``u``, its coefficients
selected in secret, and the cubic is evaluated in two multiplication stages::

    stage 1 (1 Beaver round + 1 truncation round):   u^2,  C1*u,  C3*u
    stage 2 (1 Beaver round + 1 truncation round):   u^2 * (C2 + C3*u) + C1*u + C0

* ``exp`` and ``sigmoid`` use segments of the input itself, ``u = x - c_q``
  (``c_q`` a per-segment centre, exact in fixed point): no extra stage.
  Segment widths are chosen automatically (wide where the function is flat)
  so that every segment's best cubic is within ``2**-(f+3)`` of the function
  (relative to ``max(1, |f(x)|)``). Below/above the range the coefficients are
  exact constants (``exp``: 0; ``sigmoid``: 0 and 1), so the result saturates
  exactly however large ``|x|`` is.
* ``reciprocal``, ``inv_sqrt`` and ``log`` use geometric segments
  (``per_octave`` per factor of two) and the normalized variable
  ``u = x * z_q - 1`` with ``z_q ~ 1/t_q``: one more stage (a Beaver product
  of ``x`` with the secret-selected ``z_q``, then a truncation). The cubic of
  each segment is fitted to the exact normalization used, so ``z_q`` needs only
  8 significant bits.

Cost with dealer truncation (``ltz`` is 8 rounds for any number of parties,
see :mod:`jaxmpc.protocols.comparison`): ``exp``/``sigmoid`` 12 rounds,
``reciprocal``/``inv_sqrt``/``log`` 14 rounds; ``trunc="local"`` (2 parties,
SecureML local truncation) removes the truncation rounds. Bytes are dominated
by the comparisons: about ``(n-1) * 38`` bytes per threshold per element for
large inputs (``thresholds(...)`` says how many).
Measured errors and rounds: ``docs/approximations.md``
(``benchmarks/approx_errors.py``).

Fixed-point details. Truncations here use the ABY3 pair ``(r, r >> b)`` with
the mask *negated*: open ``z = x + r``, result ``(z >> b) - (r >> b)``. Its
error lies in ``(-1, 1)`` unit with mean 0 (plain ``x - r`` gives ``(-2, 0]``,
mean -1), and it is exact whenever ``x`` is a multiple of ``2**b``, in
particular for ``x = 0`` — which is what makes the saturated segments (zero
coefficients) exact even when ``u`` itself is garbage. Like every truncation
here it fails (an error of about ``2**(64-b)``) with probability about
``|x| * 2**-64``; each function checks at trace time that, over its documented
range, no truncated value exceeds ``2**46`` (failure below ``2**-18`` per
element and truncation at the extreme of a range; about ``2**-28`` for
results near 1) and raises ``ValueError`` otherwise.

References: CrypTen (Knott et al., NeurIPS 2021) for the baseline methods
(limit-method exp, Newton reciprocal, Householder log), which
``benchmarks/approx_errors.py --crypten`` rebuilds on the same primitives;
piecewise approximations selected by secure comparisons go back to SecureML's
piecewise-linear sigmoid (Mohassel & Zhang, S&P 2017); the truncation pair is
ABY3's (Mohassel & Rindal, CCS 2018).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmpc import dealer, ring, spmd
from jaxmpc.protocols.arithmetic import TRUNC_METHODS, TruncMethod, _check_key, truncate_local_2pc
from jaxmpc.tensor import SharedTensor, _axis, _require_ring

U64 = jnp.uint64
#: Largest magnitude (log2 of the raw ring integer) any truncated value may reach
#: over a function's documented range; checked at trace time.
MAX_RAW_BITS = 46
#: Fractional bits kept beyond the input's in intermediate values.
GUARD_BITS = 2


# =============================================================================
# Ring-level building blocks (no rounds unless stated)
# =============================================================================


class _Keys:
    """Fresh keys ``fold_in(key, 0), fold_in(key, 1), ...`` (trace-time counter)."""

    def __init__(self, key: jax.Array):
        self._key, self._i = key, 0

    def __call__(self) -> jax.Array:
        k = jax.random.fold_in(self._key, self._i)
        self._i += 1
        return k


def _enc_ints(values: Any, frac: int) -> list[int]:
    """Public reals as Python ints ``round(v * 2**frac)`` (exact big-int arithmetic after)."""
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    return [int(round(float(v) * 2.0**frac)) for v in arr]


def _as_ring(ints: Sequence[int]) -> jax.Array:
    """Python ints (any sign, any size) as uint64 ring elements mod 2**64."""
    return jnp.asarray(np.array([i % 2**64 for i in ints], dtype=np.uint64))


def _with_frac(x: SharedTensor, frac: int) -> SharedTensor:
    """Same ring integers, reinterpreted with ``frac`` fractional bits (divides by 2**(frac - f))."""
    return SharedTensor(x.shares, frac)


def _upshift(x: SharedTensor, frac: int) -> SharedTensor:
    """Exact local change to more fractional bits: multiply the shares by ``2**(frac - f)``."""
    if frac < x.frac_bits:
        raise ValueError(f"_upshift cannot lower precision ({x.frac_bits} -> {frac})")
    if frac == x.frac_bits:
        return x
    return SharedTensor(x.shares * U64(2 ** (frac - x.frac_bits)), frac)


def _add_const(x: SharedTensor, c: float) -> SharedTensor:
    """``x + c`` for a public scalar ``c``, encoded at ``x.frac_bits`` (party 0 adds it)."""
    enc = _as_ring(_enc_ints(c, x.frac_bits))[0]
    return SharedTensor(x.shares.at[0].add(enc), x.frac_bits)


def _add(*xs: SharedTensor) -> SharedTensor:
    """Sum of tensors at a common precision (the largest; others shifted up exactly)."""
    frac = max(x.frac_bits for x in xs)
    out = _upshift(xs[0], frac).shares
    for x in xs[1:]:
        out = out + _upshift(x, frac).shares
    return SharedTensor(out, frac)


def _size(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _offsets(shapes: Sequence[tuple[int, ...]]) -> list[int]:
    return [0] + list(np.cumsum([_size(s) for s in shapes], dtype=np.int64))


def _split(flat: jax.Array, shapes: Sequence[tuple[int, ...]]) -> list[jax.Array]:
    """Cut a flat per-party vector into pieces of the given shapes (static offsets)."""
    off = _offsets(shapes)
    return [flat[int(a):int(b)].reshape(s) for a, b, s in zip(off[:-1], off[1:], shapes)]


def _flat(xs: Sequence[jax.Array]) -> jax.Array:
    return jnp.concatenate([x.reshape(-1) for x in xs])


def _beaver(pairs: Sequence[tuple[SharedTensor, SharedTensor | None]], key: jax.Array) -> list[SharedTensor]:
    """Raw products of several pairs in ONE round; ``(x, None)`` squares ``x`` (square pair).

    No truncation: a product carries ``fx + fy`` fractional bits. Operands
    broadcast by their logical shapes. The dealer makes one triple for all the
    products (a bilinear map on their concatenation) and one square pair for all
    the squares. Opened: ``x - a`` (and ``y - b``), uniform. Cost: 1 round,
    ``(n-1) * 8 * sum(|x| + |y|)`` bytes per party (``|x|`` for a square).
    """
    n = pairs[0][0].n_parties
    k_mul, k_sq = jax.random.split(key)
    prods = [(x, y) for x, y in pairs if y is not None]
    sqs = [x for x, y in pairs if y is None]
    xs_shapes = [x.shape for x, _ in prods]
    ys_shapes = [y.shape for _, y in prods]
    sq_shapes = [x.shape for x in sqs]

    def bilinear(a_flat, b_flat):
        a_parts, b_parts = _split(a_flat, xs_shapes), _split(b_flat, ys_shapes)
        return _flat([a * b for a, b in zip(a_parts, b_parts)])

    triple = (
        dealer.beaver_triple(k_mul, n, (_size_all(xs_shapes),), (_size_all(ys_shapes),), bilinear)
        if prods else None
    )
    square = dealer.square_pair(k_sq, n, (_size_all(sq_shapes),)) if sqs else None

    def local(xs, ys, zs, t, sq):
        first = spmd.is_party(0)
        masked_p = ()
        if t is not None:
            a = _split(t[0], xs_shapes)
            b = _split(t[1], ys_shapes)
            masked_p = tuple((x - a_, y - b_) for x, y, a_, b_ in zip(xs, ys, a, b))
        masked_s = ()
        if sq is not None:
            sa = _split(sq[0], sq_shapes)
            masked_s = tuple(z - a_ for z, a_ in zip(zs, sa))
        opened_p, opened_s = spmd.open_sum((masked_p, masked_s), what="beaver")
        out_p, out_s = [], []
        if t is not None:
            out_shapes = [tuple(np.broadcast_shapes(p, q)) for p, q in zip(xs_shapes, ys_shapes)]
            c = _split(t[2], out_shapes)
            for (e, f), a_, b_, c_ in zip(opened_p, a, b, c):
                out_p.append(c_ + e * (b_ + jnp.where(first, f, jnp.zeros_like(f))) + a_ * f)
        if sq is not None:
            sc = _split(sq[1], sq_shapes)
            for e, a_, c_ in zip(opened_s, sa, sc):
                out_s.append(c_ + U64(2) * e * a_ + jnp.where(first, e * e, jnp.zeros_like(e)))
        return out_p, out_s

    out_p, out_s = spmd.party_map(local)(
        [x.shares for x, _ in prods], [y.shares for _, y in prods], [x.shares for x in sqs], triple, square
    )
    out_p, out_s = iter(out_p), iter(out_s)
    return [
        SharedTensor(next(out_s), 2 * x.frac_bits)
        if y is None
        else SharedTensor(next(out_p), x.frac_bits + y.frac_bits)
        for x, y in pairs
    ]


def _size_all(shapes: Sequence[tuple[int, ...]]) -> int:
    return int(sum(_size(s) for s in shapes))


def _truncate(items: Sequence[tuple[SharedTensor, int]], key: jax.Array, trunc: TruncMethod) -> list[SharedTensor]:
    """Bring each ``(x, frac)`` to ``frac`` fractional bits: all truncations in ONE round.

    Values already at or below ``frac`` are shifted up locally (exact).
    ``trunc="dealer"``: ABY3 pair with a negated mask (open ``z = x + r``, result
    ``(z >> b) - (r >> b)``): error in ``(-1, 1)`` unit, mean 0, exact on
    multiples of ``2**b``; fails with probability ``~|x| / 2**64``. One dealer
    pair per distinct shift ``b``.
    ``trunc="local"``: SecureML's 2-party local shift, no communication.
    """
    out: list[SharedTensor | None] = [None] * len(items)
    todo = []
    for i, (x, frac) in enumerate(items):
        if x.frac_bits <= frac:
            out[i] = _upshift(x, frac)
        else:
            todo.append((i, x, x.frac_bits - frac, frac))
    if not todo:
        return out  # type: ignore[return-value]
    if trunc == "local":
        for i, x, bits, frac in todo:
            s = spmd.party_map(lambda s, b=bits: truncate_local_2pc(s, b))(x.shares)
            out[i] = SharedTensor(s, frac)
        return out  # type: ignore[return-value]
    n = todo[0][1].n_parties
    widths = sorted({bits for _, _, bits, _ in todo})
    groups = [[t for t in todo if t[2] == b] for b in widths]
    g_shapes = [[x.shape for _, x, _, _ in g] for g in groups]
    keys = jax.random.split(key, len(groups))
    pairs = [dealer.trunc_pair(k, n, (_size_all(sh),), b) for k, sh, b in zip(keys, g_shapes, widths)]

    def local(xs, rs, rss):
        first = spmd.is_party(0)
        masked = tuple(
            tuple(x + r for x, r in zip(gx, _split(r_flat, sh))) for gx, r_flat, sh in zip(xs, rs, g_shapes)
        )
        opened = spmd.open_sum(masked, what="trunc")
        res = []
        for gz, rs_flat, sh, b in zip(opened, rss, g_shapes, widths):
            for z, rs_ in zip(gz, _split(rs_flat, sh)):
                res.append(jnp.where(first, ring.arith_shift_right(z, b), jnp.zeros_like(z)) - rs_)
        return res

    res = spmd.party_map(local)(
        [[x.shares for _, x, _, _ in g] for g in groups], [p.r for p in pairs], [p.r_shifted for p in pairs]
    )
    for (i, _, _, frac), s in zip([t for g in groups for t in g], res):
        out[i] = SharedTensor(s, frac)
    return out  # type: ignore[return-value]


def _check_trunc(x: SharedTensor, trunc: str) -> None:
    if trunc not in TRUNC_METHODS:
        raise ValueError(f"unknown truncation method {trunc!r}; use one of {TRUNC_METHODS}")
    if trunc == "local" and x.n_parties != 2:
        raise ValueError(f"local truncation works for 2 parties only, got {x.n_parties}; use trunc='dealer'")


def _check_input(x: Any, key: Any, trunc: str) -> None:
    if not isinstance(x, SharedTensor):
        raise TypeError(f"expected a SharedTensor, got {type(x).__name__}")
    _require_ring(x)
    _check_key(key)
    _check_trunc(x, trunc)
    if x.frac_bits < 8:
        raise ValueError(f"these approximations need frac_bits >= 8, got {x.frac_bits}")


# =============================================================================
# Segment bits and secret segment functions
# =============================================================================


def _segment_bits(x: SharedTensor, thresholds: np.ndarray, key: jax.Array) -> SharedTensor:
    """Shared bits ``[x >= t_i]`` for sorted public thresholds, stacked on axis 0 (``frac_bits=0``).

    One :func:`~jaxmpc.protocols.comparison.ltz` call on all ``x - t_i`` at once.
    """
    from jaxmpc.protocols import comparison  # noqa: PLC0415 (sibling module, import on use)

    T = len(thresholds)
    enc = _as_ring(_enc_ints(thresholds, x.frac_bits)).reshape((T,) + (1,) * x.ndim)
    d = jnp.broadcast_to(x.shares[:, None], (x.n_parties, T) + x.shape)
    d = d.at[0].add(U64(0) - enc)
    lt = comparison.ltz(SharedTensor(d, x.frac_bits), key)
    ge = (U64(0) - lt.shares).at[0].add(U64(1))
    return SharedTensor(ge, 0)


def _select_many(bits: SharedTensor, tables: Sequence[np.ndarray], frac: int) -> list[SharedTensor]:
    """``table[q]`` at ``frac`` bits for each table, ``q = sum_i bits_i`` the secret segment (local).

    Each table has ``T + 1`` entries for ``T`` bits. Telescoping over the
    encodings, so each selected value is exactly ``round(table[q] * 2**frac)``.
    """
    ints = [_enc_ints(t, frac) for t in tables]
    deltas = jnp.stack([_as_ring([b - a for a, b in zip(i[:-1], i[1:])]) for i in ints])  # (K, T)
    firsts = _as_ring([i[0] for i in ints])  # (K,)
    ndim = bits.ndim - 1
    out = _dot_bits(deltas, bits.shares)
    out = out.at[:, 0].add(firsts.reshape((-1,) + (1,) * ndim))
    return [SharedTensor(o, frac) for o in out]


def _dot_bits(deltas: jax.Array, bits: jax.Array) -> jax.Array:
    """``sum_i deltas[k, i] * bits[:, i]`` mod 2**64 -> ``(K, n, *shape)``.

    An integer contraction over the threshold axis (wraps mod 2**64, exact),
    so no ``K * T`` times larger intermediate is materialized.
    """
    return jnp.tensordot(deltas, bits, axes=([1], [1]))


# =============================================================================
# Piecewise cubic tables (public, NumPy, cached)
# =============================================================================


def _fit_cubic(fn: Callable[[np.ndarray], np.ndarray], a: float, b: float, weight: Callable | None = None, points=None):
    """Near-minimax cubic for ``fn`` on ``[a, b]`` (Lawson-reweighted least squares).

    ``weight(x)`` scales the error (1/|f| for relative error). With ``points``
    (the segment's few representable inputs), the fit is over those points
    only (exact through up to 4 of them). Returns the coefficients (increasing
    powers) and the max weighted error.
    """
    if points is not None:
        xs = np.asarray(points, dtype=np.float64)
    else:
        m = 64
        xs = (a + b) / 2 + (b - a) / 2 * np.cos(np.pi * (np.arange(m) + 0.5) / m)
    w = np.ones_like(xs) if weight is None else weight(xs)
    V = np.vander(xs, 4, increasing=True)
    y = fn(xs)
    lw = np.ones_like(xs)
    c = None
    for _ in range(30 if len(xs) > 4 else 1):
        s = w * np.sqrt(lw)
        c = np.linalg.lstsq(V * s[:, None], y * s, rcond=None)[0]
        e = np.abs(V @ c - y) * w
        lw = lw * (e + 1e-300)
        lw /= lw.sum()
    g = xs if points is not None else np.linspace(a, b, 257)
    wg = np.ones_like(g) if weight is None else weight(g)
    err = float(np.max(np.abs(np.vander(g, 4, increasing=True) @ c - fn(g)) * wg))
    return c, err


@dataclasses.dataclass(frozen=True)
class _Pieces:
    """A public piecewise-cubic table.

    thresholds: ``T`` sorted thresholds; segment ``q`` (``0..T``) is
      ``[t_q, t_{q+1})`` with ``t_0 = -inf``, ``t_{T+1} = +inf``.
    scale: per-segment ``z_q`` (``T + 1``) for ``u = x * z_q - 1``, or None for
      ``u = x - centre_q``.
    centre: per-segment centre (additive variable; unused with ``scale``).
    coeffs: ``(T + 1, 4)`` cubic coefficients in ``u``.
    scale_frac: fractional bits of ``z_q``.
    u_abs: per-segment largest ``|u|`` over the documented range (0 for
      saturated segments, whose coefficients are exact constants).
    out_max: largest ``|f|`` over the documented range.
    fit_err: largest (weighted) fit error over the documented range.
    """

    thresholds: tuple[float, ...]
    scale: tuple[float, ...] | None
    centre: tuple[float, ...]
    coeffs: tuple[tuple[float, float, float, float], ...]
    scale_frac: int
    u_abs: tuple[float, ...]
    out_max: float
    fit_err: float


def _round_to(v: float, frac: int) -> float:
    return round(v * 2.0**frac) / 2.0**frac


def _adaptive_pieces(fn, lo: float, hi: float, tol: Callable[[float, float], float], frac: int, below, above):
    """Segments of ``[lo, hi]`` as wide as a cubic within ``tol(a, b)`` allows (greedy, from ``lo``).

    ``below``/``above``: coefficients for ``x < lo`` / ``x >= hi`` (None: extend
    the neighbouring piece). Centres are rounded to ``frac`` bits so that
    ``u = x - centre`` is exact.
    """
    lo, hi = _round_to(lo, frac), _round_to(hi, frac)
    edges, pieces, worst = [lo], [], 0.0
    a = lo
    while a < hi - 1e-12:
        if _try(fn, a, hi, tol, frac):
            best = hi - a
        else:  # largest width that passes, by bisection on a log scale
            lo_w, hi_w = 2.0**-8, hi - a
            for _ in range(16):
                mid = math.sqrt(lo_w * hi_w)
                if _try(fn, a, a + mid, tol, frac):
                    lo_w = mid
                else:
                    hi_w = mid
            best = lo_w
        b = min(hi, max(_round_to(a + best, frac), a + 2.0**-frac))
        c = _round_to((a + b) / 2, frac)
        coef, err = _fit_cubic(lambda u: fn(u + c), a - c, b - c)
        pieces.append((c, tuple(coef)))
        worst = max(worst, err / max(tol(a, b), 1e-300))
        edges.append(b)
        a = b
    thresholds = list(edges[:-1]) if below is not None else list(edges[1:-1])
    centres = [p[0] for p in pieces]
    coeffs = [p[1] for p in pieces]
    u_abs = [max(abs(a - c), abs(b - c)) for (a, b), c in zip(zip(edges[:-1], edges[1:]), centres)]
    if below is not None:
        centres, coeffs, u_abs = [0.0] + centres, [tuple(below)] + coeffs, [0.0] + u_abs
    if above is not None:
        thresholds = thresholds + [hi]
        centres, coeffs, u_abs = centres + [0.0], coeffs + [tuple(above)], u_abs + [0.0]
    return thresholds, centres, coeffs, tuple(u_abs), worst


def _try(fn, a, b, tol, frac) -> bool:
    c = _round_to((a + b) / 2, frac)
    return _fit_cubic(lambda u: fn(u + c), a - c, b - c)[1] <= tol(a, b)


@functools.lru_cache(maxsize=None)
def _exp_pieces(frac: int, hi: float) -> _Pieces:
    lo = -(frac + 2) * math.log(2.0)  # e**lo = 2**-(f+2): below, 0 is within a quarter unit

    def tol(a, b):
        return 2.0 ** -(frac + 3) * max(1.0, math.exp(b))

    th, ce, co, u_abs, worst = _adaptive_pieces(np.exp, lo, hi, tol, frac, below=(0.0, 0.0, 0.0, 0.0), above=None)
    return _Pieces(tuple(th), None, tuple(ce), tuple(co), 0, u_abs, math.exp(hi), worst * 2.0 ** -(frac + 3))


@functools.lru_cache(maxsize=None)
def _sigmoid_pieces(frac: int) -> _Pieces:
    edge = (frac + 2) * math.log(2.0)  # sigmoid(edge) = 1 - 2**-(f+2) roughly

    def fn(x):
        return 1.0 / (1.0 + np.exp(-x))

    def tol(a, b):
        return 2.0 ** -(frac + 3)

    th, ce, co, u_abs, worst = _adaptive_pieces(
        fn, -edge, edge, tol, frac, below=(0.0, 0.0, 0.0, 0.0), above=(1.0, 0.0, 0.0, 0.0)
    )
    return _Pieces(tuple(th), None, tuple(ce), tuple(co), 0, u_abs, 1.0, worst * 2.0 ** -(frac + 3))


_GEOMETRIC = {
    # name: (function, relative error?)
    "reciprocal": (lambda x: 1.0 / x, True),
    "inv_sqrt": (lambda x: 1.0 / np.sqrt(x), True),
    "log": (np.log, False),
}


@functools.lru_cache(maxsize=None)
def _geometric_pieces(name: str, lo_e: int, hi_e: int, per_octave: int, frac: int) -> _Pieces:
    """Segments ``[2**(lo_e + k/p), 2**(lo_e + (k+1)/p))`` with ``u = x z_k - 1``.

    Thresholds are rounded to ``frac`` bits first (comparisons are exact on the
    encodings), and each cubic is fitted on its segment between the rounded ends.
    """
    fn, relative = _GEOMETRIC[name]
    t = sorted({_round_to(2.0 ** (lo_e + k / per_octave), frac) for k in range(per_octave * (hi_e - lo_e) + 1)})
    t = [v for v in t if v > 0]
    Q = len(t) - 1
    scale_frac = max(0, 8 + hi_e)  # z_k with >= 8 significant bits
    scales, coeffs, worst, u_abs = [], [], 0.0, []
    for k in range(Q):
        z = _round_to(1.0 / t[k], scale_frac)
        a, b = t[k] * z - 1.0, t[k + 1] * z - 1.0

        def g(u, z=z):
            return fn((1.0 + u) / z)

        weight = (lambda u, g=g: 1.0 / np.abs(g(u))) if relative else None
        lo_m, hi_m = round(t[k] * 2.0**frac), round(t[k + 1] * 2.0**frac)
        pts = np.arange(lo_m, hi_m) * 2.0**-frac * z - 1.0 if hi_m - lo_m <= 64 else None
        c, err = _fit_cubic(g, a, b, weight, pts)
        scales.append(z)
        coeffs.append(tuple(c))
        worst = max(worst, err)
        u_abs.append(max(abs(a), abs(b)) + 2.0**-10)
    # thresholds t_1..t_{Q-1}: below t_1 the first piece extends, above t_{Q-1} the last
    out_max = max(abs(float(fn(np.float64(2.0**lo_e)))), abs(float(fn(np.float64(2.0**hi_e)))))
    return _Pieces(
        tuple(t[1:Q]), tuple(scales), (0.0,) * Q, tuple(coeffs), scale_frac, tuple(u_abs), out_max, worst
    )


def _bits_needed(v: float) -> float:
    return math.log2(max(v, 1e-300))


def _check_magnitudes(p: _Pieces, f: int, w: int, pc: int, what: str) -> None:
    """Static bound on every truncated value over the documented range (see MAX_RAW_BITS)."""
    c = np.abs(np.asarray(p.coeffs))
    ua = np.asarray(p.u_abs)
    u = float(ua.max())
    bounds = {
        "u^2": u * u * 2.0 ** (2 * w),
        "C1*u": float((c[:, 1] * ua).max()) * 2.0 ** (pc + w),
        "C3*u": float((c[:, 3] * ua).max()) * 2.0 ** (pc + w),
        "u^2*(C2+C3*u)": float((ua**2 * (c[:, 2] + c[:, 3] * ua)).max()) * 2.0 ** (pc + w),
        "result": (p.out_max + 1.0) * 2.0 ** (pc + w),
    }
    if p.scale is not None:
        bounds["x*z"] = (1.0 + u) * 2.0 ** (f + p.scale_frac)
    worst = max(bounds, key=bounds.get)
    if _bits_needed(bounds[worst]) > MAX_RAW_BITS:
        raise ValueError(
            f"{what}: over the requested range the truncated value {worst} reaches "
            f"2**{_bits_needed(bounds[worst]):.1f} > 2**{MAX_RAW_BITS} with frac_bits={f}, so a "
            "truncation would fail too often; narrow the range or use fewer fractional bits"
        )


# =============================================================================
# The engine
# =============================================================================


def _piecewise(x: SharedTensor, key: jax.Array, p: _Pieces, trunc: TruncMethod, what: str) -> SharedTensor:
    """Evaluate the secret piecewise cubic ``p`` at ``x``; result at ``x.frac_bits``.

    Rounds: ltz + [1 + 1 for the normalization if ``p.scale``] + 4
    (2 with ``trunc="local"``).
    """
    f = x.frac_bits
    keys = _Keys(key)
    pc = f + GUARD_BITS  # coefficients
    w = f + GUARD_BITS if p.scale is not None else f  # the local variable u
    _check_magnitudes(p, f, w, pc, what)
    shape = x.shape
    x = x.reshape(x.size)  # elementwise: work flat (one compiled program per element count)
    bits = _segment_bits(x, np.asarray(p.thresholds), keys())
    coeffs = np.asarray(p.coeffs, dtype=np.float64)
    C = _select_many(bits, [coeffs[:, k] for k in range(4)], pc)
    if p.scale is None:
        (centre,) = _select_many(bits, [np.asarray(p.centre)], f)
        out = _cubic_core(x - centre, *C, keys(), f=f, w=w, pc=pc, trunc=trunc)
    else:
        (z,) = _select_many(bits, [np.asarray(p.scale)], p.scale_frac)
        out = _normalized_cubic_core(x, z, *C, keys(), w=w, pc=pc, trunc=trunc)
    return out.reshape(shape)


def _normalized_cubic_core(x, z, c0, c1, c2, c3, key, *, w, pc, trunc):
    """``u = x z - 1`` (1 Beaver + 1 truncation round), then :func:`_cubic_core`."""
    k1, k2, k3 = jax.random.split(key, 3)
    (xz,) = _beaver([(x, z)], k1)
    (u,) = _truncate([(xz, w)], k2, trunc)
    return _cubic_core(_add_const(u, -1.0), c0, c1, c2, c3, k3, f=x.frac_bits, w=w, pc=pc, trunc=trunc)


def _cubic_core(u, c0, c1, c2, c3, key, *, f, w, pc, trunc):
    """``c0 + c1 u + c2 u^2 + c3 u^3`` with secret coefficients (at ``pc`` bits), result at ``f`` bits.

    Stage 1: ``u^2, c1 u, c3 u`` (1 Beaver round), truncate ``u^2`` to ``w`` and
    ``c3 u`` to ``pc`` bits (1 round). Stage 2: ``u^2 (c2 + c3 u)`` (1 Beaver
    round), add the untruncated ``c1 u`` and ``c0``, truncate once to ``f`` (1 round).
    """
    k1, k2, k3, k4 = jax.random.split(key, 4)
    uu, c1u, c3u = _beaver([(u, None), (c1, u), (c3, u)], k1)
    u2, c3u = _truncate([(uu, w), (c3u, pc)], k2, trunc)
    (r,) = _beaver([(u2, c2 + c3u)], k3)
    (out,) = _truncate([(_add(r, c1u, c0), f)], k4, trunc)
    return out


def thresholds(fn: str, frac_bits: int = ring.DEFAULT_FRAC_BITS, **kwargs: Any) -> int:
    """Number of comparison thresholds (``ltz`` evaluations per element) ``fn`` uses.

    ``fn`` is one of ``"exp"``, ``"sigmoid"``, ``"reciprocal"``, ``"inv_sqrt"``,
    ``"log"``; ``kwargs`` are that function's range arguments.
    """
    return len(_pieces_for(fn, frac_bits, **kwargs).thresholds)


def exp_max_input(frac_bits: int = ring.DEFAULT_FRAC_BITS) -> float:
    """Default (and largest) ``hi`` for :func:`exp`: the largest integer with
    ``(e**hi + 1) * 2**(2f + 2) <= 2**MAX_RAW_BITS`` (8 at ``f = 16``)."""
    room = MAX_RAW_BITS - 2 * frac_bits - 2 * GUARD_BITS + 2
    if room < 1:
        raise ValueError(f"exp needs frac_bits <= {(MAX_RAW_BITS - 2 * GUARD_BITS + 1) // 2}, got {frac_bits}")
    return float(math.floor(math.log(2.0**room - 1.0)))


def _pieces_for(fn: str, f: int, **kw: Any) -> _Pieces:
    if fn == "exp":
        hi = kw.get("hi")
        return _exp_pieces(f, exp_max_input(f) if hi is None else float(hi))
    if fn == "sigmoid":
        return _sigmoid_pieces(f)
    if fn in _GEOMETRIC:
        lo_e, hi_e = _octaves(kw.get("lo", _DEFAULT_RANGE[fn][0]), kw.get("hi", _DEFAULT_RANGE[fn][1]))
        return _geometric_pieces(fn, lo_e, hi_e, int(kw.get("per_octave", 4)), f)
    raise ValueError(f"unknown function {fn!r}")


_DEFAULT_RANGE = {"reciprocal": (2.0**-8, 2.0**8), "inv_sqrt": (2.0**-8, 2.0**8), "log": (2.0**-16, 2.0**8)}


def _octaves(lo: float, hi: float) -> tuple[int, int]:
    lo, hi = float(lo), float(hi)
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < lo < hi, got lo={lo}, hi={hi}")
    return math.floor(math.log2(lo)), math.ceil(math.log2(hi))


# =============================================================================
# Public functions
# =============================================================================


def exp(
    x: SharedTensor,
    key: jax.Array,
    iterations: int = 8,
    *,
    method: str = "pieces",
    hi: float | None = None,
    trunc: TruncMethod = "dealer",
) -> SharedTensor:
    """``e**x`` elementwise.

    ``method="pieces"`` (default): secret piecewise cubics on automatically
    chosen segments of ``[-(f+2) ln 2, hi]`` (module docstring). Valid for
    every ``x <= hi``: below ``-(f+2) ln 2`` (``-12.5`` at ``f = 16``) the
    result is exactly 0 (the true value is under a quarter unit), however
    negative ``x``; above ``hi`` the last segment extrapolates. ``hi``
    defaults to :func:`exp_max_input` (8 at ``f = 16``: the result ``e**hi``
    must leave head-room for the truncations; larger values are refused).
    Rounds: ltz + 4 (12 at any party count); ``trunc="local"``: ltz + 2.
    Comparisons per element: ``thresholds("exp", f, hi=hi)`` (42 at
    ``f = 16``, ``hi = 8``: 1,660 bytes per element per party at 2 parties for a
    64x64 input).
    Measured at 2 parties, ``f = 16``, 2,000 points on ``[-16, 8]``: max
    relative error ``2.9e-5`` where ``e**x >= 1/2`` (``6e-6`` at the top),
    max absolute error ``3.5e-5`` (2.3 units of ``2**-16``) where
    ``e**x <= 1``.

    ``method="squaring"``: no comparisons: ``(1 + t + t**2/2)**(2**k)`` with
    ``t = x / 2**k``, ``k = iterations``, by ``k`` squarings of ``y - 1``
    (CrypTen's limit method ``(1 + t)**(2**k)`` with one more Taylor term;
    the precision falls by one bit per squaring from ``f + k``, so rounding
    is not amplified). Relative error about ``x**3 / (6 * 4**k)`` (measured
    with ``k = 8`` on ``[-16, 6]``: ``5.5e-4`` at ``x = 6``, 1.9 units where
    ``e**x <= 1``). Valid for ``-128 <= x <= 6.9`` at ``f = 16`` (truncated
    values stay below ``2**46``; not checked, as it depends on the data);
    the polynomial ``1 + t + t**2/2`` stays below 1 down to
    ``x = -2**(k+1)``. Rounds ``2 (k + 1)`` (``k + 1`` with
    ``trunc="local"``); ``16 (k + 1)`` bytes per element per party at 2
    parties.
    """
    _check_input(x, key, trunc)
    if method == "pieces":
        top = exp_max_input(x.frac_bits) if hi is None else float(hi)
        if top <= -(x.frac_bits + 1) * math.log(2.0):
            raise ValueError(f"exp: hi={top} is below the range where e**x is nonzero at frac_bits={x.frac_bits}")
        return _piecewise(x, key, _exp_pieces(x.frac_bits, top), trunc, "exp")
    if method == "squaring":
        return _exp_squaring(x, key, int(iterations), trunc)
    raise ValueError(f"unknown exp method {method!r}; use 'pieces' or 'squaring'")


def _exp_squaring(x: SharedTensor, key: jax.Array, k: int, trunc: TruncMethod) -> SharedTensor:
    if k < 1:
        raise ValueError(f"iterations must be >= 1, got {k}")
    f = x.frac_bits
    keys = _Keys(key)
    f0 = f + k
    t = _with_frac(x, f0)  # x / 2**k, exact
    # u0 = y0 - 1 = t + t**2 / 2 at f0 + 1 bits: t**2 truncated to f0 bits *is* t**2/2 at f0 + 1
    (tt,) = _beaver([(t, None)], keys())
    (half_tt,) = _truncate([(tt, f0)], keys(), trunc)
    u = SharedTensor(t.shares * U64(2) + half_tt.shares, f0 + 1)
    # u' = 2u + u**2: 2u at (F - 1) bits is u's integer; u**2 (at 2F) is truncated to F - 1
    for j in range(k):
        F = u.frac_bits
        (uu,) = _beaver([(u, None)], keys())
        if j < k - 1:
            (sq,) = _truncate([(uu, F - 1)], keys(), trunc)
            u = SharedTensor(u.shares + sq.shares, F - 1)
        else:  # last: land on f bits
            sq, two_u = _truncate([(uu, f), (_with_frac(u, F - 1), f)], keys(), trunc)
            u = SharedTensor(sq.shares + two_u.shares, f)
    return _add_const(u, 1.0)


def sigmoid(x: SharedTensor, key: jax.Array, *, trunc: TruncMethod = "dealer") -> SharedTensor:
    """The logistic function ``1 / (1 + e**-x)`` elementwise, for every ``x``.

    Secret piecewise cubics on automatically chosen segments of
    ``[-(f+2) ln 2, (f+2) ln 2]`` (``+-12.5`` at ``f = 16``); outside, the
    result is exactly 0 or 1 (the true value is within a quarter unit), however
    large ``|x|``. Rounds: ltz + 4 (12 at any party count);
    ``trunc="local"``: ltz + 2. Comparisons per element:
    ``thresholds("sigmoid", f)`` (23 at ``f = 16``; 945 bytes per element
    per party at 2 parties, 64x64 input). Measured at 2 parties, ``f = 16``, 2,000 points
    on ``[-16, 16]``: max absolute error ``3.2e-5`` (2.1 units of ``2**-16``),
    max relative error ``2.6e-5`` where ``sigmoid(x) >= 1/2``.
    """
    _check_input(x, key, trunc)
    return _piecewise(x, key, _sigmoid_pieces(x.frac_bits), trunc, "sigmoid")


def _geometric(
    name: str, x: SharedTensor, key: jax.Array, lo: float, hi: float, per_octave: int, trunc: TruncMethod
) -> SharedTensor:
    _check_input(x, key, trunc)
    if int(per_octave) < 1:
        raise ValueError(f"per_octave must be >= 1, got {per_octave}")
    lo_e, hi_e = _octaves(lo, hi)
    return _piecewise(x, key, _geometric_pieces(name, lo_e, hi_e, int(per_octave), x.frac_bits), trunc, name)


def reciprocal(
    x: SharedTensor,
    key: jax.Array,
    *,
    lo: float = 2.0**-8,
    hi: float = 2.0**8,
    per_octave: int = 4,
    trunc: TruncMethod = "dealer",
) -> SharedTensor:
    """``1 / x`` elementwise for ``lo <= x <= hi`` (rounded out to powers of two).

    Secret piecewise cubics on ``per_octave`` geometric segments per octave,
    in the normalized variable ``u = x z_q - 1``. Error of the cubics alone
    (relative): ``1.7e-3, 1.1e-4, 7.0e-6, 4.4e-7`` for ``per_octave = 1, 2,
    4, 8``. Outside ``[lo, hi]`` the end pieces extrapolate (inaccurate;
    ``x <= 0`` is garbage). ``lo`` is limited by the size of the output
    (``1/lo`` at most ``2**8`` at ``f = 16``; checked); ``hi`` is not.
    Rounds: ltz + 6 (14 at any party count); ``trunc="local"``:
    ltz + 3. Comparisons per element: about ``per_octave * log2(hi/lo) - 1``
    (63 by default: 2,474 bytes per element per party at 2 parties, 64x64 input). Measured
    at 2 parties, ``f = 16``, 2,000 points on ``[2**-8, 2**8]`` (against
    ``1/x`` at the encoded ``x``): max relative error ``2.9e-5`` where
    ``1/x >= 1/2`` (``1.2e-5`` at the largest outputs), max absolute error
    1.4 units of ``2**-16`` where ``1/x <= 1``.
    """
    return _geometric("reciprocal", x, key, lo, hi, per_octave, trunc)


def inv_sqrt(
    x: SharedTensor,
    key: jax.Array,
    *,
    lo: float = 2.0**-8,
    hi: float = 2.0**8,
    per_octave: int = 4,
    trunc: TruncMethod = "dealer",
) -> SharedTensor:
    """``1 / sqrt(x)`` elementwise for ``lo <= x <= hi`` (rounded out to powers of two).

    Same engine as :func:`reciprocal`. Cubic error alone (relative):
    ``4.8e-4, 3.1e-5, 1.9e-6, 1.2e-7`` for ``per_octave = 1, 2, 4, 8``.
    Rounds: ltz + 6 (14 at any party count); ``trunc="local"``:
    ltz + 3; 63 comparisons per element by default. Measured at 2 parties,
    ``f = 16``, 2,000 points on ``[2**-8, 2**8]``: max relative error
    ``2.9e-5`` where ``x**-0.5 >= 1/2``, max absolute error ``5.3e-5`` (at
    ``x = 0.0054``, output 13.7; relative ``3.9e-6``).
    """
    return _geometric("inv_sqrt", x, key, lo, hi, per_octave, trunc)


def log(
    x: SharedTensor,
    key: jax.Array,
    *,
    lo: float = 2.0**-16,
    hi: float = 2.0**8,
    per_octave: int = 4,
    trunc: TruncMethod = "dealer",
) -> SharedTensor:
    """Natural logarithm elementwise for ``lo <= x <= hi`` (rounded out to powers of two).

    Same engine as :func:`reciprocal` (``log x = log t_q + log(1 + u)``, the
    constant selected in secret). Cubic error alone (absolute):
    ``4.4e-4, 2.8e-5, 1.8e-6, 1.1e-7`` for ``per_octave = 1, 2, 4, 8``.
    Rounds: ltz + 6 (14 at any party count); ``trunc="local"``:
    ltz + 3; 90 comparisons per element by default (segments narrower than a
    unit merge; 3,490 bytes per element per party at 2 parties, 64x64 input). Measured at
    2 parties, ``f = 16``, 2,000 points on ``[2**-16, 2**8]``: max absolute
    error ``2.1e-5`` (1.3 units of ``2**-16``), max relative error ``2.5e-5``
    where ``|log x| >= 1/2``. For cross-entropy on probabilities the default
    ``lo = 2**-16`` is one unit at ``f = 16``; a probability of a few units is
    itself known only to a few bits, so prefer ``z - log(sum(exp(z)))``
    (log-softmax) when you can: its ``log`` argument is in ``[1, k]``.
    """
    return _geometric("log", x, key, lo, hi, per_octave, trunc)


def softmax(x: SharedTensor, key: jax.Array, axis: int = -1, *, trunc: TruncMethod = "dealer") -> SharedTensor:
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``.

    Steps: ``m = comparison.max(x, axis)`` (a tournament: ``ceil(log2 k)``
    layers of ltz + 1 round), ``z = x - m <= 0`` (exact), ``e = exp(z)``
    (pieces with ``hi = 0``: the top piece is exact at 0), ``s = sum e`` in
    ``[1, k]``, ``r = reciprocal(s, lo=1, hi=k)``, ``e * r`` (1 Beaver + 1
    truncation round). Any logits work: differences below ``-12.5`` give an
    exact 0 term. Rounds for ``k = 10``: 36 + 12 + 14 + 2 = 64 at any party
    count; 771 bytes per element per party at 2 parties (64x10 logits).
    Measured at 2 parties, ``f = 16``, 200 rows of 10 logits ``N(0, s**2)``
    with ``s`` from 0.5 to 8: max absolute error ``4.4e-5`` (2.9 units of
    ``2**-16``).
    """
    _check_input(x, key, trunc)
    from jaxmpc.protocols import comparison  # noqa: PLC0415

    ax = _axis(axis, x.ndim)
    k = x.shape[ax]
    keys = _Keys(key)
    if k == 1:
        return SharedTensor(jnp.zeros_like(x.shares).at[0].set(U64(2**x.frac_bits)), x.frac_bits)
    m = comparison.max(x, keys(), axis=ax, keepdims=True)
    e = _piecewise(x - m, keys(), _exp_pieces(x.frac_bits, 0.0), trunc, "softmax/exp")
    s = e.sum(ax, keepdims=True)
    lo_e, hi_e = _octaves(1.0, float(k))
    r = _piecewise(s, keys(), _geometric_pieces("reciprocal", lo_e, hi_e, 4, x.frac_bits), trunc, "softmax/reciprocal")
    (prod,) = _beaver([(e, r)], keys())
    (out,) = _truncate([(prod, x.frac_bits)], keys(), trunc)
    return out
