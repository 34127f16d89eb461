"""Fixed-point range checks: an opt-in debug mode, and a check for revealed values.

Fixed point on Z_2^64 fails silently: a product that leaves the ring wraps
around, and a truncation fails (with probability about ``|x| / 2**64`` per
element) by a huge amount. Neither can be seen from the shares, and the
values a protocol opens are masked, so they cannot tell either. See
``docs/fixed_point.md`` for the range of every operation.

* :func:`check_ranges` — a debug mode. Inside the block, each hooked
  truncation (every product's) reveals, *to the process running the
  simulation*, its input and output, and checks them: did the product leave
  the ring, did the truncation fail, is the result outside the encodable range,
  is the failure probability high. Problems are collected in a
  :class:`RangeReport` and issued as :class:`RangeWarning` naming the op
  (``arithmetic.matmul``, ``autodiff.matmul (backward)``, ...) and the line
  of user code that called it. Values revealed on purpose (unmasked openings)
  are checked against the encodable range too. Simulation only: in
  distributed mode no process holds the shares to do this, so it refuses.

* :func:`check_revealed` — a plain check on an opened value: raises
  :class:`WrappedValueError` when a revealed value is beyond the encodable
  range (it can only have got there by wrapping), and warns when its
  magnitude is that of a failed truncation.

The hooks. The checks are trace-time decisions read from a context variable:
with no :func:`check_ranges` active they add nothing to the program. The
protocols call them at these points (docs/fixed_point.md, "Checking a computation"):

* ``arithmetic.truncate``, last line:
  ``return debug.on_truncate(x, SharedTensor(out, x.frac_bits - bits), bits)``
* ``arithmetic.bilinear_ss``, fused branch, after ``out = SharedTensor(...)``:
  ``out = debug.on_product(x, y, out, bilinear, bits)``
* ``arithmetic.bilinear_transpose_ss``, results loop, when fused:
  ``out = debug.on_truncate(lambda: debug.transpose_product(ct, masks, bil, is_x), out, bits)``

Openings are observed through :func:`jaxmpc.cost.tap`, which the opening
helpers call.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
import re
import threading
import traceback
import warnings
from typing import Any, Callable, Iterator, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxmpc import cost, ring

ENCODE_LIMIT = ring.ENCODE_LIMIT  # 2**62: |raw| of any encodable value
RING_HALF = 2**63
_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_PLUMBING = {"truncate", "bilinear_ss", "bilinear_transpose_ss", "on_truncate", "on_product",
             "op", "carrier_op", "local", "run", "wrapped", "<lambda>", "<listcomp>", "<genexpr>"}
_SKIP_MODULES = {"debug", "spmd", "cost", "audit"}
_HOOK_CALLERS = {"truncate", "bilinear_ss", "bilinear_transpose_ss"}


class RangeWarning(UserWarning):
    """A fixed-point value left (or nearly left) the range its operation needs."""


class WrappedValueError(ValueError):
    """A revealed value lies beyond the encodable range: it wrapped around 2**64."""


class RangeError(ArithmeticError):
    """:func:`check_ranges` with ``action="raise"`` found problems."""


@dataclasses.dataclass(frozen=True)
class RangeProblem:
    """One finding of :func:`check_ranges`.

    Attributes:
      kind: ``"product_overflow"`` (a product left the ring before its
        truncation), ``"truncation_failed"`` (a truncation was off by about
        ``2**(64-bits)`` units), ``"result_out_of_range"`` (a result is beyond
        ``|x| < 2**(62-f)``), ``"failure_risk"`` (elements whose truncation
        fails with probability above the threshold), ``"revealed_out_of_range"``
        (an opened value the user asked for is beyond the encodable range), or
        ``"probe"`` (:func:`probe`).
      op: the operation, e.g. ``"arithmetic.matmul"``.
      where: the chain of jaxmpc calls that led there, and the user's line.
      count: elements affected, of ``total``.
      max_abs: the largest magnitude involved, as a real number.
    """

    kind: str
    op: str
    where: str
    count: int
    total: int
    max_abs: float
    message: str


@dataclasses.dataclass
class RangeReport:
    """Everything :func:`check_ranges` found, plus the expected number of
    truncation failures per op (the sum of ``|x| / 2**64`` over elements)."""

    max_failure_prob: float
    problems: list[RangeProblem] = dataclasses.field(default_factory=list)
    expected_failures: dict[str, float] = dataclasses.field(default_factory=dict)
    checked: int = 0
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}

    def __str__(self) -> str:
        head = f"check_ranges: {self.checked} checks, " + ("no problems" if self.ok else f"{len(self.problems)} problems")
        return "\n".join([head] + [f"  {p.message}" for p in self.problems])

    def _add(self, problem: RangeProblem, action: str) -> None:
        with self._lock:
            self.problems.append(problem)
        if action == "warn":
            warnings.warn(RangeWarning(problem.message), stacklevel=2)


@dataclasses.dataclass(frozen=True)
class _Mode:
    report: RangeReport
    action: str


_MODE: contextvars.ContextVar[_Mode | None] = contextvars.ContextVar("jaxmpc_check_ranges", default=None)


def active() -> bool:
    """True while tracing inside :func:`check_ranges`."""
    return _MODE.get() is not None


@contextlib.contextmanager
def check_ranges(
    *, max_failure_prob: float = 2.0**-20, action: Literal["warn", "raise", "record"] = "warn"
) -> Iterator[RangeReport]:
    """Debug mode: reveal intermediates (simulation only) and check their ranges.

    Args:
      max_failure_prob: report a truncation whose worst element fails with at
        least this probability (``|x| / 2**64`` for the pre-truncation raw
        value ``x``; the default ``2**-20`` is ``|x| >= 2**44``, i.e. a product
        of magnitude 4096 at 16 fractional bits).
      action: ``"warn"`` (default) issues a :class:`RangeWarning` per problem
        as it is found; ``"raise"`` raises :class:`RangeError` with all of them
        when the block ends; ``"record"`` only fills the report.

    Yields the :class:`RangeReport`. Everything must be traced inside the block
    (eager code, or ``jax.jit`` traced there; a cached jit is not re-traced).
    This reveals every checked intermediate to the process that runs the
    simulation: never use it on data whose owners have not agreed to that.
    """
    if action not in ("warn", "raise", "record"):
        raise ValueError(f"action must be 'warn', 'raise' or 'record', got {action!r}")
    if not 0 < max_failure_prob <= 1:
        raise ValueError(f"max_failure_prob must be in (0, 1], got {max_failure_prob!r}")
    _refuse_distributed()
    report = RangeReport(float(max_failure_prob))
    mode = _Mode(report, action)
    token = _MODE.set(mode)
    try:
        with cost.tapping(_open_tap):
            yield report
        jax.effects_barrier()
    finally:
        _MODE.reset(token)
    if action == "raise" and report.problems:
        raise RangeError(str(report))


# ------------------------------------------------------------------ helpers


def _refuse_distributed() -> None:
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is not None and not mesh.empty and "party" in mesh.axis_names:
        raise RuntimeError(
            "jaxmpc.debug reveals intermediates by summing the stacked shares, which only "
            "exists in simulation; it is not available with a 'party' mesh (distributed mode)"
        )


def plain(x: Any) -> jax.Array:
    """The secret of a shared tensor as a ring array (the sum of its shares).

    Debugging only, in simulation, where the stacked shares are in one place.
    """
    from jaxmpc.tensor import SharedTensor

    _refuse_distributed()
    shares = x.shares if isinstance(x, SharedTensor) else x
    return jnp.sum(shares, axis=0, dtype=ring.RING_DTYPE)


def transpose_product(ct: Any, masks: Any, bilinear: ring.Bilinear, is_x: bool) -> jax.Array:
    """The exact ring value of a backward product before its truncation:
    ``Bx(ct, y)`` (``is_x``) or ``By(x, ct)``, with ``x = e + sum a`` and
    ``y = f + sum b`` rebuilt from the forward masks (``BeaverMasks``)."""
    c = plain(ct)
    if is_x:
        return bilinear(c, masks.f[0] + plain(masks.b))
    return bilinear(masks.e[0] + plain(masks.a), c)


def _module_of(filename: str) -> str | None:
    path = os.path.abspath(filename)
    if not path.startswith(_PKG_DIR + os.sep):
        return None
    rel = os.path.relpath(path, _PKG_DIR)
    return os.path.splitext(rel)[0].replace(os.sep, ".").split(".")[-1]


def _is_library(filename: str) -> bool:
    return f"{os.sep}jax{os.sep}" in filename or f"{os.sep}jaxlib{os.sep}" in filename or (
        "site-packages" in filename or filename.startswith("<")
    ) or os.path.basename(filename) in ("contextlib.py", "functools.py")


def where() -> tuple[str, str]:
    """``(op, chain)`` from the Python stack at trace time: the first public
    jaxmpc function above the hook (``module.function``; ``(backward)`` when
    reached from a custom_vjp backward rule), and the whole jaxmpc call chain
    ending with the caller's ``file:line``."""
    chain: list[str] = []
    user = None
    op = None
    direction = None
    for fr in reversed(traceback.extract_stack()[:-1]):
        mod = _module_of(fr.filename)
        if mod is None:
            if _is_library(fr.filename):
                continue
            if fr.name in _HOOK_CALLERS:  # a wrapper standing in for the hooked library function
                if not chain:
                    chain.append(f"arithmetic.{fr.name}")
                continue
            user = f"{os.path.relpath(fr.filename) if not fr.filename.startswith('<') else fr.filename}:{fr.lineno}"
            break
        if mod in _SKIP_MODULES:
            continue
        name = f"{mod}.{fr.name}"
        if not chain or chain[-1] != name:
            chain.append(name)
        m = re.fullmatch(r"_(\w+?)_(fwd|bwd)", fr.name)
        if op is None and m and direction is None:
            direction = (f"{mod}.{m.group(1)}", "forward" if m.group(2) == "fwd" else "backward")
        if op is None and not fr.name.startswith("_") and fr.name not in _PLUMBING:
            op = name
    if direction is not None:
        op = f"{direction[0]} ({direction[1]})"
    elif op is None:
        op = chain[0] if chain else "?"
    text = " <- ".join(chain[:8]) + (f" <- {user}" if user else "")
    return op, text


def _fmt(v: float) -> str:
    return f"{v:.4g}"


# ----------------------------------------------------------- the hooks


def on_truncate(pre: Any, out: Any, bits: int) -> Any:
    """Hook for truncations: ``pre`` is the input (a SharedTensor, or a
    zero-argument callable returning its exact ring value), ``out`` the
    truncated SharedTensor. Returns ``out``; inside :func:`check_ranges` also
    checks the pair (see :class:`RangeProblem`)."""
    mode = _MODE.get()
    if mode is None or not bits:
        return out
    _refuse_distributed()
    op, chain = where()
    pre_ring = pre() if callable(pre) else plain(pre)
    _attach(mode, op, chain, pre_ring, plain(out), int(bits), int(out.frac_bits), None)
    return out


def _float_bilinear(bilinear: ring.Bilinear) -> Callable | None:
    from jaxmpc import limbs

    if bilinear is ring.mul:
        return jnp.multiply
    if bilinear in (ring.matmul, ring.matmul_reference, getattr(limbs, "matmul", None)):
        return jnp.matmul
    return None


def on_product(x: Any, y: Any, out: Any, bilinear: ring.Bilinear, bits: int) -> Any:
    """Hook for fused products ``out = B(x, y) >> bits`` (Beaver with the
    truncation folded in): like :func:`on_truncate`, and for elementwise and
    matrix products it also recomputes the product in float64 to tell whether
    it left the ring."""
    mode = _MODE.get()
    if mode is None or not bits:
        return out
    _refuse_distributed()
    op, chain = where()
    px, py = plain(x), plain(y)
    fb = _float_bilinear(bilinear)
    approx = None
    if fb is not None:
        approx = fb(ring.decode(px, x.frac_bits), ring.decode(py, y.frac_bits))
    _attach(mode, op, chain, bilinear(px, py), plain(out), int(bits), int(out.frac_bits), approx)
    return out


def _attach(mode: _Mode, op, chain, pre_ring, out_ring, bits, frac_out, approx) -> None:
    def check(pre, res, *maybe_approx):
        _check_truncation(mode, op, chain, np.asarray(pre), np.asarray(res), bits, frac_out,
                          np.asarray(maybe_approx[0]) if maybe_approx else None)

    args = (pre_ring, out_ring) + ((approx,) if approx is not None else ())
    jax.debug.callback(check, *args)


def _check_truncation(mode: _Mode, op, chain, pre, res, bits, frac_out, approx) -> None:
    report = mode.report
    pre_s = pre.astype(np.uint64).view(np.int64)
    res_s = res.astype(np.uint64).view(np.int64)
    pre_frac = frac_out + bits
    total = int(pre_s.size)
    with report._lock:
        report.checked += 1
    if total == 0:
        return
    pre_abs = np.abs(pre_s.astype(np.float64))
    fail_p = pre_abs / 2.0**64
    with report._lock:
        report.expected_failures[op] = report.expected_failures.get(op, 0.0) + float(fail_p.sum())

    def add(kind, count, max_abs, msg):
        report._add(RangeProblem(kind, op, chain, int(count), total, float(max_abs),
                                 f"{op}: {msg} [{chain}]"), mode.action)

    limit_real = RING_HALF / 2.0**pre_frac
    if approx is not None:
        over = np.abs(approx) >= limit_real
        if over.any():
            add("product_overflow", over.sum(), np.abs(approx).max(),
                f"{int(over.sum())} of {total} products have |x*y| up to {_fmt(np.abs(approx).max())}, beyond "
                f"the ring's 2**{63 - pre_frac} = {_fmt(limit_real)} at {pre_frac} fractional bits: they wrapped "
                "around 2**64 (rescale the inputs or use fewer fractional bits)")
    else:
        edge = pre_abs >= ENCODE_LIMIT
        if edge.any():
            add("product_overflow", edge.sum(), pre_abs.max() / 2.0**pre_frac,
                f"{int(edge.sum())} of {total} values before truncation are at the edge of the ring "
                f"(|raw| >= 2**62 at {pre_frac} fractional bits, i.e. |x| >= {_fmt(ENCODE_LIMIT / 2.0**pre_frac)}): "
                "they have probably wrapped around 2**64")
    expected = pre_s >> np.int64(bits)
    err = res_s - expected  # int64, wraps like the ring
    failed = np.abs(err.astype(np.float64)) > 1
    if failed.any():
        add("truncation_failed", failed.sum(), np.abs(res_s[failed].astype(np.float64)).max() / 2.0**frac_out,
            f"truncation failed on {int(failed.sum())} of {total} elements: off by about "
            f"2**{64 - bits} units = {_fmt(2.0 ** (64 - bits - frac_out))} in value (probability about "
            f"|x|/2**64 per element; here up to {_fmt(fail_p.max())})")
    out_of_range = np.abs(res_s.astype(np.float64)) >= ENCODE_LIMIT
    if out_of_range.any():
        add("result_out_of_range", out_of_range.sum(), np.abs(res_s.astype(np.float64)).max() / 2.0**frac_out,
            f"{int(out_of_range.sum())} of {total} results are beyond the encodable range "
            f"|x| < 2**{62 - frac_out} = {_fmt(ENCODE_LIMIT / 2.0**frac_out)}")
    risky = fail_p >= report.max_failure_prob
    if risky.any():
        add("failure_risk", risky.sum(), pre_abs.max() / 2.0**pre_frac,
            f"{int(risky.sum())} of {total} elements truncate with failure probability >= "
            f"{report.max_failure_prob:.3g} (values up to {_fmt(pre_abs.max() / 2.0**pre_frac)} at {pre_frac} "
            f"fractional bits; worst {fail_p.max():.3g}, expected failures in this call {fail_p.sum():.3g})")


def _open_tap(opening: cost.Opening, sent: Any, received: Any) -> Any:
    """Check the values the user reveals (unmasked arithmetic openings) against
    the encodable range. Masked openings are uniform and tell nothing."""
    mode = _MODE.get()
    if mode is None or opening.masked or opening.domain == "xor":
        return None
    op, chain = where()
    leaves, treedef = jax.tree.flatten(received)
    if not leaves:
        return None

    def check(party, *vals):
        party = np.asarray(party)
        k = party.ndim  # leading batch axes: the party axis (vmap) and any outer vmap
        lead = np.broadcast_shapes(party.shape, *(np.shape(v)[:k] for v in vals))
        parties = np.broadcast_to(party, lead)
        one = parties == parties.min()  # the opened value is the same at every party
        with mode.report._lock:
            mode.report.checked += 1
        for v in vals:
            v = np.broadcast_to(np.asarray(v), lead + np.shape(v)[k:])
            s = np.asarray(v[one]).reshape(-1).astype(np.uint64).view(np.int64)
            mag = np.abs(s.astype(np.float64))
            big = mag >= ENCODE_LIMIT
            if big.any():
                mode.report._add(RangeProblem(
                    "revealed_out_of_range", f"reveal {opening.what!r}", chain, int(big.sum()), int(s.size),
                    float(mag.max()),
                    f"reveal {opening.what!r}: {int(big.sum())} of {s.size} opened words are beyond the encodable "
                    f"range (|raw| >= 2**62): the value wrapped around 2**64 [{chain}]"), mode.action)
        return np.zeros(lead, np.uint64)

    token = jax.pure_callback(check, jax.ShapeDtypeStruct((), np.uint64), jax.lax.axis_index("party"), *leaves,
                              vmap_method="expand_dims")
    leaves[0] = leaves[0] + token.astype(leaves[0].dtype)
    return jax.tree.unflatten(treedef, leaves)


# ----------------------------------------------------------- user-facing checks


def check_revealed(raw: Any, frac_bits: int, *, what: str = "reveal") -> Any:
    """Check an opened (revealed) ring value; returns ``raw`` unchanged.

    Raises :class:`WrappedValueError` when any element is beyond the
    encodable range ``|raw| >= 2**62``: no encoded value, and no in-range sum
    or product, can be there, so it wrapped around 2**64 (an overflowing
    product, or a sum of too many large values). Warns (:class:`RangeWarning`)
    when ``|x| >= 2**(63 - 2f)``: the magnitude a failed truncation produces
    (it is off by about ``2**(64 - 2f)``), and too large to multiply anyway.

    Concrete values only; a traced value is checked by a callback inside
    :func:`check_ranges` and passed through otherwise.
    """
    if isinstance(raw, jax.core.Tracer):
        mode = _MODE.get()
        if mode is not None:
            op, chain = where()

            def cb(v):
                try:
                    _check_revealed_now(np.asarray(v), frac_bits, what)
                except WrappedValueError as e:
                    mode.report._add(RangeProblem("revealed_out_of_range", what, chain, 0, int(np.size(v)), 0.0,
                                                  str(e)), mode.action)

            jax.debug.callback(cb, raw)
        return raw
    _check_revealed_now(np.asarray(raw), frac_bits, what)
    return raw


def _check_revealed_now(raw: np.ndarray, frac_bits: int, what: str) -> None:
    s = np.asarray(raw).astype(np.uint64).view(np.int64).reshape(-1)
    if s.size == 0:
        return
    mag = np.abs(s.astype(np.float64))
    big = mag >= ENCODE_LIMIT
    if big.any():
        raise WrappedValueError(
            f"{what}: {int(big.sum())} of {s.size} revealed values are beyond the encodable range "
            f"|x| < 2**{62 - frac_bits} = {_fmt(ENCODE_LIMIT / 2.0**frac_bits)} (frac_bits={frac_bits}), "
            f"up to {_fmt(mag.max() / 2.0**frac_bits)}: they wrapped around 2**64, from a product or sum "
            "that left the range. Find the op with `with jaxmpc.debug.check_ranges(): ...`; "
            "see docs/fixed_point.md."
        )
    if frac_bits > 0:
        sus = mag / 2.0**frac_bits >= 2.0 ** (63 - 2 * frac_bits)
        if sus.any():
            warnings.warn(RangeWarning(
                f"{what}: {int(sus.sum())} of {s.size} revealed values have |x| >= 2**{63 - 2 * frac_bits} "
                f"(up to {_fmt(mag.max() / 2.0**frac_bits)}), the magnitude of a failed truncation "
                f"(off by about 2**{64 - 2 * frac_bits}); check with jaxmpc.debug.check_ranges()"), stacklevel=3)


def probe(x: Any, name: str = "probe", *, limit: float | None = None) -> Any:
    """Inside :func:`check_ranges`, check a shared tensor's magnitude (revealed to
    the simulating process) against ``limit`` (default: the encodable range
    ``2**(62 - f)``), reporting a ``"probe"`` problem. Returns ``x``. Outside
    the debug mode it does nothing. Usable on intermediates in user code."""
    mode = _MODE.get()
    if mode is None:
        return x
    _refuse_distributed()
    _, chain = where()
    bound = (ENCODE_LIMIT / 2.0**x.frac_bits) if limit is None else float(limit)

    def cb(v):
        vals = np.abs(np.asarray(v).astype(np.uint64).view(np.int64).astype(np.float64)) / 2.0**x.frac_bits
        with mode.report._lock:
            mode.report.checked += 1
        over = vals >= bound
        if over.any():
            mode.report._add(RangeProblem("probe", name, chain, int(over.sum()), int(vals.size), float(vals.max()),
                                          f"{name}: {int(over.sum())} of {vals.size} values have |x| >= "
                                          f"{_fmt(bound)} (max {_fmt(vals.max())}) [{chain}]"), mode.action)

    jax.debug.callback(cb, plain(x))
    return x
