"""How a process stops when a peer fails: exit codes, :func:`fail`, the watchdog.

Every blocking wait on peers runs under :data:`WATCHDOG` (via :func:`_waiting`):
a wait that exceeds its deadline, or a collective that fails because a peer
is gone, ends the process with a clear message and :data:`EXIT_PEER_FAILURE`.
JAX's runtime cannot continue without a peer, so the process is ended
(``os._exit``) rather than an exception raised.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from jaxmpc.distributed.runtime import Runtime

#: Exit code of a process stopped because a peer failed (died, hung, never joined).
EXIT_PEER_FAILURE = 3
#: Exit code for a bad configuration (address, port, party id).
EXIT_CONFIG = 2


def fail(who: str, message: str, code: int = EXIT_PEER_FAILURE) -> None:
    """Print ``message`` and end the process now.

    Used when a peer failed: JAX's runtime cannot go on without it, and a
    normal exit would wait in its shutdown barrier and then abort.
    """
    try:
        sys.stdout.flush()
        sys.stderr.write(f"jaxmpc ({who}): error: {message}\n")
        sys.stderr.flush()
    finally:
        os._exit(code)


class _Watchdog:
    """Ends the process when a guarded wait exceeds its deadline."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[int, tuple[float, str, str, str, float]] = {}
        self._next = 0
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            with self._lock:
                expired = [v for v in self._active.values() if v[0] < now]
            if expired:
                _, what, who, hint, seconds = min(expired)
                fail(who, f"{what} did not finish within {seconds:.0f} s: {hint}")

    @contextlib.contextmanager
    def guard(self, what: str, seconds: float, who: str, hint: str | None = None) -> Iterator[None]:
        hint = hint or "another party or the dealer has probably died or hung; stopping"
        with self._lock:
            token = self._next
            self._next += 1
            self._active[token] = (time.monotonic() + seconds, what, who, hint, seconds)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="jaxmpc-watchdog", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._active.pop(token, None)


WATCHDOG = _Watchdog()


@contextlib.contextmanager
def _waiting(rt: Runtime, what: str, first: bool = False) -> Iterator[None]:
    """Guard a wait on peers: bounded time, and a peer failure ends the process clearly."""
    if not rt.multiprocess:
        yield
        return
    seconds = rt.first_call_timeout if first else rt.timeout
    with WATCHDOG.guard(what, seconds, rt.name):
        try:
            yield
        except Exception as e:
            text = str(e)
            if any(s in text for s in ("Gloo", "gloo", "Connection", "connection", "peer", "UNAVAILABLE", "DEADLINE")):
                first_line = text.strip().splitlines()[0] if text.strip() else type(e).__name__
                fail(rt.name, f"{what} failed because a peer is gone ({first_line}); stopping")
            raise
