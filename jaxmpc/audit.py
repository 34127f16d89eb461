"""Opening audit: record every value a party sends and learns, and check it.

MPC's promise is about *views*: what each party sees must not depend on the
secrets beyond what the user chose to reveal. Every value that leaves a party
goes through :func:`jaxmpc.spmd.open_sum`, :func:`~jaxmpc.spmd.open_xor` or
:func:`~jaxmpc.spmd.send_to`; :func:`capture` taps those helpers (through
:func:`jaxmpc.cost.tap`) and records, for every opening and every party:

* the trace-time record (:class:`jaxmpc.cost.Opening`: which protocol step
  opened it — ``what`` — its domain, shapes, and whether it is a
  dealer-masked value or one the user asked to reveal);
* the party's own words it sent (its share of the opened value);
* the value it learned (the opened sum / XOR; for ``send_to`` only the owner
  learns anything).

Usage::

    with audit.capture() as log:
        out = jaxmpc_function(...)          # eager, or jax.jit traced in here
    report = audit.verify(log, secrets=[x], reveals={"reveal"})
    report.raise_if_failed()

How it works: while a capture is active, each opening helper adds a host
callback (``jax.pure_callback``, tied to the opened value by a zero token) to
the traced program — a trace-time decision read from a context variable: with
no capture active nothing is added, zero cost. Under ``jax.jit`` the callback
fires on every run of the compiled function. Like
:func:`jaxmpc.cost.recording`, a function JAX has already traced (a cached jit
called again with the same shapes) is not re-traced and so is not observed;
trace inside the block (e.g. ``jax.jit`` of a fresh ``lambda``). Callbacks of
a program traced in a capture keep firing after the block ends but are
dropped.

In simulation one process sees every party's messages (it sees every share
anyway); in distributed mode each process records only the messages of the
parties whose devices it drives.

:func:`verify` looks at the *values*, not only the labels. For a value opened
with ``masked=True`` the protocol claims it is uniformly random (a secret
plus fresh dealer randomness); so it checks

1. **uniformity** of every masked opening (and of all openings with the same
   ``what`` pooled): a chi-square test on the 64 bit positions and, with
   enough words, on the byte histograms;
2. **no known secret** appears among masked opened words (a uniform word
   equals a given one with probability ``2**-64``);
3. **no mask reuse**: the difference (XOR for binary shares) of two masked
   openings of the same size must be uniform too — a reused Beaver triple or
   truncation pair makes it the difference of two secrets;
4. **reveals**: unmasked openings carry only the labels the caller allows.

All statistical tests of one :func:`verify` call share one significance level
``alpha`` (Bonferroni), so a sound protocol fails with probability at most
``alpha``. These are necessary conditions, not a proof of security: they
catch gross leaks (an unmasked secret, a reused mask, a biased mask).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading
from typing import Any, Iterable, Iterator, Sequence

import jax
import numpy as np
from jax import lax

from jaxmpc import cost

PARTY = "party"

#: Bits of an opened word that carry the masked value, per ``what`` label.
#: ``b2a`` opens one masked bit (bit 0); every other masked opening is a full
#: 64-bit word (a ring element or 64 packed bits masked by dealer words).
SUPPORT_BITS = {"b2a": 1}

#: Fewest words for the per-opening bit test / byte test.
MIN_WORDS_BITS = 16
MIN_WORDS_BYTES = 1280


class AuditError(AssertionError):
    """:meth:`AuditReport.raise_if_failed`: a masked opening does not look masked."""


# --------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class Message:
    """One party's part in one opening, at run time.

    Attributes:
      index: position of the opening in :attr:`AuditLog.openings` (trace order).
      opening: the trace-time record (``what``, ``domain``, ``masked``, ...).
      party: the party id.
      sent: the party's own words, one array per opened leaf (its share).
      received: what it learned, one array per leaf; ``None`` for a party
        that is not the owner of a ``send_to``.
    """

    index: int
    opening: cost.Opening
    party: int
    sent: tuple[np.ndarray, ...]
    received: tuple[np.ndarray, ...] | None

    @property
    def what(self) -> str:
        return self.opening.what

    @property
    def masked(self) -> bool:
        return self.opening.masked

    @property
    def domain(self) -> str:
        return self.opening.domain


class AuditLog:
    """What :func:`capture` saw: trace-time openings and run-time messages."""

    def __init__(self) -> None:
        self.openings: list[cost.Opening] = []
        self.messages: list[Message] = []
        self._closed = False
        self._lock = threading.Lock()

    # called at trace time
    def _register(self, opening: cost.Opening) -> int:
        self.openings.append(opening)
        return len(self.openings) - 1

    # called at run time (host callback)
    def _receive(self, index: int, opening: cost.Opening, party, sent, received) -> np.ndarray:
        """Host side of the tap. Under ``vmap`` (simulation) the arguments carry
        leading batch axes, the party axis among them; split them into one
        :class:`Message` per party (and per element of any outer ``vmap``)."""
        party = np.asarray(party)
        k = party.ndim
        sent = [np.asarray(a) for a in sent]
        received = [np.asarray(a) for a in received]
        lead = np.broadcast_shapes(party.shape, *(a.shape[:k] for a in sent + received))
        token = np.zeros(lead, np.uint64)
        if self._closed:
            return token
        parties = np.broadcast_to(party, lead)
        sent = [np.broadcast_to(a, lead + a.shape[k:]) for a in sent]
        received = [np.broadcast_to(a, lead + a.shape[k:]) for a in received]
        out = []
        for idx in np.ndindex(*lead):
            p = int(parties[idx])
            got = None
            if opening.owner is None or p == opening.owner:
                got = tuple(np.array(a[idx]) for a in received)
            out.append(Message(index, opening, p, tuple(np.array(a[idx]) for a in sent), got))
        with self._lock:
            self.messages.extend(out)
        return token

    def close(self) -> None:
        self._closed = True

    # ------------------------------------------------------------ queries
    def labels(self) -> set[tuple[str, bool]]:
        """``{(what, masked)}`` of the openings that actually ran."""
        return {(m.what, m.masked) for m in self.messages}

    def parties(self) -> list[int]:
        return sorted({m.party for m in self.messages})

    def view(self, party: int) -> list[Message]:
        """Messages of one party, in trace order (stable for repeated runs)."""
        return sorted((m for m in self.messages if m.party == party), key=lambda m: m.index)

    def opened(self, what: str | None = None, *, masked: bool | None = None, party: int | None = None) -> list[Message]:
        """Messages of one party (the lowest that took part, by default) that
        learned something, filtered by ``what`` and ``masked``."""
        if party is None:
            ps = self.parties()
            party = ps[0] if ps else 0
        return [
            m for m in self.view(party)
            if m.received is not None
            and (what is None or m.what == what)
            and (masked is None or m.masked == masked)
        ]

    def summary(self) -> str:
        """A table: ``what``, domain, masked, rounds and words opened (one party's view)."""
        rows: dict[tuple[str, str, bool], list[int]] = {}
        for m in self.opened():
            r = rows.setdefault((m.what, m.domain, m.masked), [0, 0])
            r[0] += 1
            r[1] += sum(int(a.size) for a in m.received)
        lines = [f"{'what':<16}{'domain':<8}{'masked':<8}{'rounds':>8}{'words':>12}"]
        for (what, dom, masked), (rounds, words) in sorted(rows.items()):
            lines.append(f"{what:<16}{dom:<8}{str(masked):<8}{rounds:>8}{words:>12,}")
        return "\n".join(lines)



def _tap(log: AuditLog, opening: cost.Opening, sent: Any, received: Any) -> Any:
    """Trace-time tap: one host callback per opening.

    ``jax.pure_callback`` with ``vmap_method="expand_dims"`` is called once
    with every party's words (a ``jax.debug.callback`` would be unrolled per
    party by ``vmap`` and made a training step compile several times slower).
    Its zero token is added to the received value, so the callback runs
    exactly when the opening does.
    """
    index = log._register(opening)
    leaves, treedef = jax.tree.flatten(received)
    if not leaves:
        return None
    callback = functools.partial(log._receive, index, opening)
    party = lax.axis_index(PARTY)
    token = jax.pure_callback(
        callback, jax.ShapeDtypeStruct((), np.uint64), party, jax.tree.leaves(sent), leaves,
        vmap_method="expand_dims",
    )
    leaves[0] = leaves[0] + token.astype(leaves[0].dtype)
    return jax.tree.unflatten(treedef, leaves)


@contextlib.contextmanager
def capture() -> Iterator[AuditLog]:
    """Record every opening traced inside the block, with its values (see module doc).

    Everything the block computed has run when it ends (the callbacks feed the
    results), unless it returns unfinished async results; call
    ``jax.block_until_ready`` on them inside the block.
    """
    log = AuditLog()
    try:
        with cost.tapping(functools.partial(_tap, log)):
            yield log
    finally:
        log.close()


# ------------------------------------------------------------------ statistics


def chi2_sf(x: float, df: int) -> float:
    """Survival function of the chi-square distribution, ``P(X >= x)``.

    Regularized upper incomplete gamma ``Q(df/2, x/2)`` by its series or
    continued fraction (Numerical Recipes 6.2), in log space, so tiny
    p-values come out as tiny numbers rather than NaN. No SciPy needed.
    """
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    if x <= 0:
        return 1.0
    a, z = df / 2.0, x / 2.0
    log_pre = -z + a * math.log(z) - math.lgamma(a)
    if z < a + 1.0:  # series for P, Q = 1 - P
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1.0
            term *= z / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - math.exp(log_pre + math.log(total)))
    # continued fraction for Q (modified Lentz)
    tiny = 1e-300
    b = z + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return min(1.0, math.exp(log_pre + math.log(h)))


def words(x: Any) -> np.ndarray:
    """Flatten arrays (or a :class:`~jaxmpc.tensor.SharedTensor`: its secret, i.e.
    the sum of its shares) into a 1-D ``uint64`` array of ring words."""
    from jaxmpc.tensor import SharedTensor  # local: tensor imports spmd, which imports cost

    if isinstance(x, SharedTensor):
        x = np.sum(np.asarray(x.shares, np.uint64), axis=0, dtype=np.uint64)
    return np.asarray(x).astype(np.uint64, copy=False).reshape(-1)


def _bit_stat(w: np.ndarray, bits: int) -> float:
    n = w.size
    shifts = np.arange(bits, dtype=np.uint64)
    ones = ((w[:, None] >> shifts) & np.uint64(1)).sum(axis=0, dtype=np.int64)
    return float(np.sum((2.0 * ones - n) ** 2) / n)


def bit_uniformity_pvalue(w: np.ndarray, bits: int = 64) -> float:
    """p-value that the low ``bits`` bits of the words are uniform, by two tests:

    * each bit position is a fair coin: ``sum_j (2 c_j - N)**2 / N`` over
      positions ``j`` with ``c_j`` ones among ``N`` words, chi-square with
      ``bits`` degrees of freedom;
    * the same on ``w ^ (w >> 1)`` (a bijection, so uniform too), i.e. each
      pair of neighbouring bits differs half the time: this catches values
      whose bits are each fair but tied together, like the sign extension of
      small signed numbers.

    Returns twice the smaller p-value (Bonferroni over the two), at most 1.
    """
    w = words(w)
    if w.size == 0:
        return 1.0
    w = w & np.uint64(2**bits - 1) if bits < 64 else w
    p = chi2_sf(_bit_stat(w, bits), bits)
    if bits > 1:
        gray = (w ^ (w >> np.uint64(1))) & np.uint64(2 ** (bits - 1) - 1)
        p = min(p, chi2_sf(_bit_stat(gray, bits - 1), bits - 1))
        p = min(1.0, 2 * p)
    return p


def byte_uniformity_pvalue(w: np.ndarray) -> float:
    """p-value that each of the 8 bytes of the words is uniform (chi-square on the
    8 x 256 histogram, ``8 * 255`` degrees of freedom)."""
    w = words(w)
    n = w.size
    if n == 0:
        return 1.0
    b = w.view(np.uint8).reshape(n, 8)
    counts = np.stack([np.bincount(b[:, j], minlength=256) for j in range(8)])
    expected = n / 256.0
    stat = float(np.sum((counts - expected) ** 2) / expected)
    return chi2_sf(stat, 8 * 255)


def homogeneity_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample chi-square test that two samples of small integers (e.g. bytes)
    come from the same distribution; empty bins are dropped. 1.0 when only one
    value occurs."""
    a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    m = int(max(a.max(initial=0), b.max(initial=0))) + 1
    ca, cb = np.bincount(a, minlength=m), np.bincount(b, minlength=m)
    keep = (ca + cb) > 0
    ca, cb = ca[keep].astype(np.float64), cb[keep].astype(np.float64)
    if ca.size < 2:
        return 1.0
    tot = ca + cb
    ea, eb = tot * a.size / (a.size + b.size), tot * b.size / (a.size + b.size)
    stat = float(np.sum((ca - ea) ** 2 / ea) + np.sum((cb - eb) ** 2 / eb))
    return chi2_sf(stat, ca.size - 1)


# ----------------------------------------------------------------- the checks


@dataclasses.dataclass(frozen=True)
class Finding:
    """One check of :func:`verify`: ``kind``, which opening(s), a p-value for
    statistical checks, and a message."""

    kind: str
    what: str
    index: int | tuple[int, int] | None
    detail: str
    pvalue: float | None = None


@dataclasses.dataclass
class AuditReport:
    """Result of :func:`verify`."""

    alpha: float
    n_tests: int
    threshold: float
    checked_openings: int
    checked_words: int
    failures: list[Finding]
    skipped: list[Finding]

    @property
    def ok(self) -> bool:
        return not self.failures

    def kinds(self) -> set[str]:
        return {f.kind for f in self.failures}

    def __str__(self) -> str:
        head = (
            f"audit: {self.checked_openings} masked openings, {self.checked_words:,} words, "
            f"{self.n_tests} statistical tests at alpha={self.alpha:g} (per test {self.threshold:.3g}): "
            + ("OK" if self.ok else f"{len(self.failures)} FAILED")
        )
        return "\n".join([head] + [f"  [{f.kind}] {f.what} #{f.index}: {f.detail}" for f in self.failures])

    def raise_if_failed(self) -> None:
        if self.failures:
            raise AuditError(str(self))


def _learned(log: AuditLog) -> list[Message]:
    """For each opening, the messages of the lowest party that learned its value
    (every party for an opening to all, the owner for ``send_to``), in trace order."""
    first: dict[int, int] = {}
    for m in log.messages:
        if m.received is not None:
            first[m.index] = min(first.get(m.index, m.party), m.party)
    chosen = [m for m in log.messages if m.received is not None and first[m.index] == m.party]
    return sorted(chosen, key=lambda m: m.index)


def _leaf_words(m: Message) -> list[np.ndarray]:
    return [words(r) for r in m.received or ()]


def verify(
    log: AuditLog,
    *,
    secrets: Iterable[Any] = (),
    reveals: Iterable[str] | None = None,
    alpha: float = 1e-3,
    party: int | None = None,
    check_reuse: bool = True,
) -> AuditReport:
    """Check the captured openings (see the module docstring). Returns an
    :class:`AuditReport`; call :meth:`~AuditReport.raise_if_failed` to assert.

    Capture each computation once with its keys: running the same jitted
    step twice with the same key and data repeats every opened word, which
    the reuse check reports (it is a reuse of the dealer's masks).

    Args:
      log: from :func:`capture`.
      secrets: values that must never appear in a masked opening: arrays of
        ring words, or :class:`~jaxmpc.tensor.SharedTensor` (their secret).
        Their negations are checked too.
      reveals: the ``what`` labels allowed for unmasked openings (the values
        the user explicitly revealed); ``None`` allows any.
      alpha: family-wise significance level of all statistical tests together.
      party: whose view to check (default: for each opening, the lowest
        party that learned it: the opened values are the same for every
        party, and only the owner learns a ``send_to``).
      check_reuse: run the pairwise mask-reuse test.
    """
    msgs = log.opened(party=party) if party is not None else _learned(log)
    masked = [m for m in msgs if m.masked]
    allowed = None if reveals is None else set(reveals)
    failures: list[Finding] = []
    skipped: list[Finding] = []
    tests: list[tuple[Finding, float]] = []  # (finding if it fails, p-value)

    for m in msgs:
        if not m.masked and allowed is not None and m.what not in allowed:
            failures.append(Finding("unexpected_reveal", m.what, m.index,
                                    f"unmasked opening {m.what!r} is not among the allowed reveals {sorted(allowed)}"))

    pooled: dict[tuple[str, int], list[np.ndarray]] = {}
    full_words: list[tuple[Message, int, np.ndarray]] = []  # 64-bit supported leaves
    total_words = 0
    for m in masked:
        bits = SUPPORT_BITS.get(m.what, 64)
        for leaf, w in enumerate(_leaf_words(m)):
            total_words += w.size
            if bits < 64:
                outside = int(np.count_nonzero(w >> np.uint64(bits)))
                if outside:
                    failures.append(Finding("outside_support", m.what, m.index,
                                            f"{outside} of {w.size} words have bits above bit {bits - 1} set"))
                w = w & np.uint64(2**bits - 1)
            else:
                full_words.append((m, leaf, w))
            pooled.setdefault((m.what, bits), []).append(w)
            if w.size >= MIN_WORDS_BITS:
                tests.append((Finding("not_uniform", m.what, m.index,
                                      f"leaf {leaf}: {w.size} words, bit frequencies are not those of fair coins"),
                              bit_uniformity_pvalue(w, bits)))
            else:
                skipped.append(Finding("too_small", m.what, m.index, f"leaf {leaf}: {w.size} words"))
            if bits == 64 and w.size >= MIN_WORDS_BYTES:
                tests.append((Finding("not_uniform", m.what, m.index,
                                      f"leaf {leaf}: {w.size} words, byte histograms are not uniform"),
                              byte_uniformity_pvalue(w)))

    # the same label pooled over all its openings
    for (what, bits), ws in sorted(pooled.items()):
        w = np.concatenate(ws)
        if len(ws) > 1 and w.size >= MIN_WORDS_BITS:
            tests.append((Finding("not_uniform", what, None,
                                  f"all {len(ws)} openings pooled ({w.size} words): bit frequencies are biased"),
                          bit_uniformity_pvalue(w, bits)))
        if len(ws) > 1 and bits == 64 and w.size >= MIN_WORDS_BYTES:
            tests.append((Finding("not_uniform", what, None,
                                  f"all {len(ws)} openings pooled ({w.size} words): byte histograms are biased"),
                          byte_uniformity_pvalue(w)))

    # known secrets among the masked words
    secret_list = [words(s) for s in secrets]
    if secret_list:
        sw = np.concatenate(secret_list)
        sw = np.unique(np.concatenate([sw, np.zeros_like(sw) - sw]))
        for m, leaf, w in full_words:
            hits = int(np.count_nonzero(np.isin(w, sw)))
            if hits:
                failures.append(Finding("secret_opened", m.what, m.index,
                                        f"leaf {leaf}: {hits} of {w.size} opened words equal a known secret "
                                        "(or its negation); chance for uniform words is about 2**-64 each"))

    # reused masks: differences of same-size openings must stay uniform
    if check_reuse:
        all_full = np.concatenate([w for _, _, w in full_words]) if full_words else np.zeros(0, np.uint64)
        uniq, counts = np.unique(all_full, return_counts=True)
        if np.any(counts > 1):
            failures.append(Finding("repeated_words", "*", None,
                                    f"{int(np.sum(counts[counts > 1]))} masked 64-bit words occur more than once "
                                    f"(chance about {all_full.size ** 2 / 2**65:.1g}): a mask was reused or a "
                                    "value was not masked"))
        by_size: dict[int, list[tuple[Message, int, np.ndarray]]] = {}
        for item in full_words:
            if item[2].size >= MIN_WORDS_BITS:
                by_size.setdefault(item[2].size, []).append(item)
        for group in by_size.values():
            for i in range(len(group)):
                for j in range(i + 1, len(group)):
                    (mi, li, wi), (mj, lj, wj) = group[i], group[j]
                    diff = (wi ^ wj) if (mi.domain == "xor" and mj.domain == "xor") else (wi - wj)
                    tests.append((Finding("mask_reuse", f"{mi.what}/{mj.what}", (mi.index, mj.index),
                                          f"leaves {li}/{lj}: the difference of two masked openings is not "
                                          "uniform, as when both used the same dealer mask"),
                                  bit_uniformity_pvalue(diff)))

    threshold = alpha / max(len(tests), 1)
    for finding, p in tests:
        if p < threshold:
            failures.append(dataclasses.replace(finding, pvalue=p, detail=f"{finding.detail} (p={p:.3g})"))
    return AuditReport(alpha, len(tests), threshold, len(masked), total_words, failures, skipped)


def assert_masked(log: AuditLog, **kwargs: Any) -> AuditReport:
    """:func:`verify`, raising :class:`AuditError` on any failure."""
    report = verify(log, **kwargs)
    report.raise_if_failed()
    return report


# ------------------------------------------------------------ views (tests)


def party_view(log: AuditLog, party: int, batch: int) -> np.ndarray:
    """One party's messages as a ``(batch, words)`` matrix, for view tests.

    Every sent and received leaf must have exactly one axis of size ``batch``
    (the independent trials); it is moved to the front and the rest flattened.
    Columns follow trace order: for each message, its sent leaves then its
    received leaves.
    """
    cols = []
    for m in log.view(party):
        for arr in m.sent + (m.received or ()):
            cols.append(batch_columns(arr, batch))
    if not cols:
        return np.zeros((batch, 0), np.uint64)
    return np.concatenate(cols, axis=1)


def batch_columns(arr: np.ndarray, batch: int) -> np.ndarray:
    """``arr`` with its single axis of size ``batch`` moved first, flattened to 2-D uint64."""
    arr = np.asarray(arr)
    axes = [i for i, d in enumerate(arr.shape) if d == batch]
    if len(axes) != 1:
        raise ValueError(f"expected exactly one axis of size {batch} in shape {arr.shape}")
    return np.moveaxis(arr, axes[0], 0).reshape(batch, -1).astype(np.uint64, copy=False)


def compare_samples(a: np.ndarray, b: np.ndarray, *, pairs: Sequence[int] | None = None) -> list[tuple[str, float]]:
    """Two-sample byte tests between two ``(trials, words)`` view matrices.

    Tests every column's 8 bytes, and for the columns listed in ``pairs``
    (default: all) every pair's difference and XOR (functions of a view are
    distributed alike when the views are). Returns ``[(name, p-value)]``.
    """
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"views have {a.shape[1]} and {b.shape[1]} words")
    out: list[tuple[str, float]] = []

    def test(name: str, x: np.ndarray, y: np.ndarray) -> None:
        xb = np.ascontiguousarray(x).view(np.uint8).reshape(x.size, 8)
        yb = np.ascontiguousarray(y).view(np.uint8).reshape(y.size, 8)
        for j in range(8):
            p = homogeneity_pvalue(xb[:, j], yb[:, j])
            out.append((f"{name} byte {j}", p))

    for c in range(a.shape[1]):
        test(f"word {c}", a[:, c], b[:, c])
    cols = list(range(a.shape[1])) if pairs is None else list(pairs)
    for i, ci in enumerate(cols):
        for cj in cols[i + 1:]:
            test(f"word {ci} - word {cj}", a[:, ci] - a[:, cj], b[:, ci] - b[:, cj])
            test(f"word {ci} ^ word {cj}", a[:, ci] ^ a[:, cj], b[:, ci] ^ b[:, cj])
    return out
