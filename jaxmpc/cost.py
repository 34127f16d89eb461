"""Communication cost, counted at trace time.

Every value that leaves a party goes through :func:`jaxmpc.spmd.open_sum`,
:func:`jaxmpc.spmd.open_xor` or :func:`jaxmpc.spmd.send_to`, and each of those
calls :func:`record` while it is being traced. Shapes are static, so the cost of
a function is known without running it: :func:`cost_of` traces the function
abstractly (``jax.eval_shape``) with a recorder attached.

Conventions (the same for every protocol):

* **round**: one call of an opening helper. Values opened together (a tuple
  passed to one ``open_sum``) share one round. Rounds of separate calls are
  counted as if they ran one after another, i.e. an upper bound on latency.
* **bytes**: payload only, 8 bytes per ring element (one uint64 word; a packed
  binary share is one word of 64 bits). Opening to everyone: each party sends
  its share to each of the other ``n-1`` parties, so ``(n-1) * 8 * elements``
  bytes per party and ``n`` times that in total. Sending to one owner: the
  other ``n-1`` parties each send ``8 * elements`` bytes.
* The dealer's traffic (correlated randomness) is offline and not counted here;
  it can be derived from seeds shared with the dealer, see :mod:`jaxmpc.dealer`.

The recorder is trace-time bookkeeping only (a context variable, like JAX's
own name stacks); it holds no communicator and no configuration.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Callable, Iterator

import jax

WORD_BYTES = 8


@dataclasses.dataclass(frozen=True)
class Opening:
    """One communication round, as seen at trace time.

    Attributes:
      what: the protocol step that opened it, e.g. ``"beaver"``, ``"trunc"``.
      domain: ``"arith"`` (sum mod 2**64), ``"xor"`` (packed bits), or ``"send"``.
      shapes: per-party shapes of the values opened in this round.
      masked: True when the protocol opens a value masked by dealer randomness;
        False when the user asked for the value itself (e.g. ``reveal``).
      n_parties: number of parties taking part.
      owner: for ``send``: the party that receives; None when all receive.
    """

    what: str
    domain: str
    shapes: tuple[tuple[int, ...], ...]
    masked: bool
    n_parties: int
    owner: int | None = None

    @property
    def elements(self) -> int:
        total = 0
        for s in self.shapes:
            n = 1
            for d in s:
                n *= d
            total += n
        return total

    @property
    def bytes_total(self) -> int:
        if self.owner is None:
            return self.n_parties * (self.n_parties - 1) * WORD_BYTES * self.elements
        return (self.n_parties - 1) * WORD_BYTES * self.elements

    @property
    def bytes_per_party(self) -> int:
        """Bytes sent by the busiest party in this round."""
        if self.owner is None:
            return (self.n_parties - 1) * WORD_BYTES * self.elements
        return WORD_BYTES * self.elements


@dataclasses.dataclass(frozen=True)
class Cost:
    """Summed cost of a computation: see the module docstring for conventions."""

    openings: tuple[Opening, ...] = ()

    @property
    def rounds(self) -> int:
        return len(self.openings)

    @property
    def bytes_total(self) -> int:
        return sum(o.bytes_total for o in self.openings)

    @property
    def bytes_per_party(self) -> int:
        return sum(o.bytes_per_party for o in self.openings)

    def by_step(self) -> dict[str, tuple[int, int]]:
        """``{what: (rounds, bytes_per_party)}`` for a breakdown table."""
        out: dict[str, tuple[int, int]] = {}
        for o in self.openings:
            r, b = out.get(o.what, (0, 0))
            out[o.what] = (r + 1, b + o.bytes_per_party)
        return out

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.openings + other.openings)

    def __str__(self) -> str:
        return (
            f"Cost(rounds={self.rounds}, bytes_per_party={self.bytes_per_party:,}, "
            f"bytes_total={self.bytes_total:,})"
        )


_RECORDERS: contextvars.ContextVar[tuple[list, ...]] = contextvars.ContextVar(
    "jaxmpc_cost_recorders", default=()
)


def record(opening: Opening) -> None:
    """Called by the opening helpers while tracing; appends to active recorders."""
    for rec in _RECORDERS.get():
        rec.append(opening)


@contextlib.contextmanager
def recording() -> Iterator[list[Opening]]:
    """Collect the :class:`Opening` records of everything traced inside the block.

    Note: a function that JAX has already traced and cached (a ``jax.jit``
    function called again with the same shapes) is not re-traced and records
    nothing; :func:`cost_of` avoids this by tracing afresh.
    """
    log: list[Opening] = []
    token = _RECORDERS.set(_RECORDERS.get() + (log,))
    try:
        yield log
    finally:
        _RECORDERS.reset(token)


# Taps: trace-time observers of the opened values themselves (not just their
# shapes). The opening helpers call :func:`tap` after their collective; with
# no tap active (the default) it returns ``received`` and adds nothing to the
# traced program. :mod:`jaxmpc.audit` and :mod:`jaxmpc.debug` install taps.
_TAPS: contextvars.ContextVar[tuple[Callable[..., Any], ...]] = contextvars.ContextVar(
    "jaxmpc_open_taps", default=()
)


def tap(opening: Opening, sent: Any, received: Any) -> Any:
    """Called by the opening helpers while tracing, inside ``party_map``.

    ``sent`` is this party's local pytree of words (its share of each opened
    value), ``received`` what the collective returned. Every active tap is
    called as ``fn(opening, sent, received)`` and may return a replacement for
    ``received`` with the same values (e.g. with a host callback's zero token
    added, so that the callback runs exactly when the opened value is used);
    ``None`` keeps it.
    """
    for fn in _TAPS.get():
        out = fn(opening, sent, received)
        if out is not None:
            received = out
    return received


@contextlib.contextmanager
def tapping(fn: Callable[[Opening, Any, Any], Any]) -> Iterator[None]:
    """Install a tap for everything traced inside the block (see :func:`tap`)."""
    token = _TAPS.set(_TAPS.get() + (fn,))
    try:
        yield
    finally:
        _TAPS.reset(token)


def cost_of(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Cost:
    """The communication cost of ``fn(*args, **kwargs)``, found without running it.

    ``fn`` is traced abstractly with ``jax.eval_shape``; pass the plain (not
    jitted) function, since a cached jit trace records nothing.
    """
    with recording() as log:
        jax.eval_shape(lambda *a, **k: fn(*a, **k), *args, **kwargs)
    return Cost(tuple(log))
