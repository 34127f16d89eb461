"""The dealer's feed: intercepting :mod:`jaxmpc.dealer` calls.

While a :class:`_DealerTap` is active every public :mod:`jaxmpc.dealer`
function is either recorded (the dealer's shadow: its outputs, stacked on the
party axis, become the feed; row ``i`` goes to party ``i``) or answered from
the feed (the parties, who never evaluate the dealer and never hold its keys).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import threading
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxmpc import dealer, ring
from jaxmpc.distributed.arrays import _concat_rows, _global_from_local
from jaxmpc.distributed.runtime import PARTY, DistributedError, Runtime

def _dealer_functions() -> dict[str, Callable]:
    """The dealer's interface: the public functions of :mod:`jaxmpc.dealer`."""
    return {
        name: obj
        for name, obj in vars(dealer).items()
        if inspect.isfunction(obj) and obj.__module__ == dealer.__name__ and not name.startswith("_")
    }


def _static_signature(args: tuple, kwargs: dict) -> str:
    def one(a):
        if isinstance(a, jax.Array) or hasattr(a, "aval"):
            return f"{getattr(a, 'dtype', '?')}{tuple(getattr(a, 'shape', ()))}"
        if callable(a):
            return getattr(a, "__qualname__", repr(a))
        return repr(a)

    return ", ".join([one(a) for a in args] + [f"{k}={one(v)}" for k, v in sorted(kwargs.items())])


@dataclasses.dataclass(frozen=True)
class _Call:
    name: str
    signature: str
    treedef: Any
    shapes: tuple[tuple[int, ...], ...]  # full (n, ...) shapes of the output leaves


class _DealerTap:
    """While active, every call of a :mod:`jaxmpc.dealer` function is recorded
    (``mode="record"``: the dealer's shadow) or answered from the feed
    (``mode="feed"``: the parties, who never evaluate the dealer)."""

    _lock = threading.RLock()

    def __init__(self, mode: str, n: int, layout: Sequence[_Call] = (), flat: jax.Array | None = None):
        self.mode, self.n = mode, n
        self.calls: list[_Call] = []
        self.outputs: list[jax.Array] = []
        self.layout, self.flat = list(layout), flat
        self._offset = 0
        self._depth = 0

    def _wrap(self, name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def tapped(*args, **kwargs):
            if self._depth:  # a dealer function calling another: count the outer call only
                return fn(*args, **kwargs)
            sig = _static_signature(args, kwargs)
            if self.mode == "record":
                self._depth += 1
                try:
                    out = fn(*args, **kwargs)
                finally:
                    self._depth -= 1
                leaves, treedef = jax.tree.flatten(out)
                for leaf in leaves:
                    if leaf.dtype != ring.RING_DTYPE or leaf.shape[:1] != (self.n,):
                        raise DistributedError(
                            f"dealer.{name} returned a {leaf.dtype}{tuple(leaf.shape)} leaf; the feed "
                            f"carries uint64 shares stacked on a leading axis of {self.n} parties"
                        )
                self.calls.append(_Call(name, sig, treedef, tuple(tuple(x.shape) for x in leaves)))
                self.outputs.extend(leaves)
                return out
            i = len(self.calls)
            if i >= len(self.layout) or self.layout[i].name != name or self.layout[i].signature != sig:
                expected = self.layout[i] if i < len(self.layout) else None
                raise DistributedError(
                    f"the parties' program asked the dealer for {name}({sig}) as call {i}, but the dealer's "
                    f"program made {'no such call' if expected is None else f'{expected.name}({expected.signature})'}; "
                    "the computation must call the dealer in an order that depends only on shapes"
                )
            call = self.layout[i]
            self.calls.append(call)
            leaves = []
            for shape in call.shapes:
                per = shape[1:]
                size = int(np.prod(per, dtype=np.int64))
                leaves.append(jnp.reshape(lax.slice_in_dim(self.flat, self._offset, self._offset + size, axis=1), shape))
                self._offset += size
            return jax.tree.unflatten(call.treedef, leaves)

        return tapped

    @contextlib.contextmanager
    def active(self) -> Iterator["_DealerTap"]:
        with self._lock:
            originals = _dealer_functions()
            try:
                for name, fn in originals.items():
                    setattr(dealer, name, self._wrap(name, fn))
                yield self
            finally:
                for name, fn in originals.items():
                    setattr(dealer, name, fn)


def feed_width(calls: Sequence[_Call]) -> int:
    """Words per party in the dealer's feed for one run of a function."""
    return sum(int(np.prod(s[1:], dtype=np.int64)) for c in calls for s in c.shapes)


def recorded(fn: Callable[..., Any], n_parties: int) -> Callable[..., Any]:
    """``fn`` jit-compiled in the simulation, also returning the dealer's output
    rows ``(n, words)`` in the order a distributed run sends them (row ``i``
    is what party ``i`` receives)."""

    def run(*args):
        tap = _DealerTap("record", n_parties)
        with tap.active():
            out = fn(*args)
        return out, _concat_rows(tap.outputs, n_parties)

    return jax.jit(run)


def _dummy_key(aval: Any) -> jax.Array:
    impl = getattr(aval.dtype, "_impl", None)
    base = jax.random.key(0, impl=impl) if impl is not None else jax.random.key(0)
    return jnp.broadcast_to(base, aval.shape)


def _empty_feed(rt: Runtime) -> jax.Array:
    if rt.multiprocess:
        return _global_from_local(rt.party_mesh, PARTY, np.zeros((1, 0), np.uint64))
    return jax.device_put(np.zeros((rt.n_parties, 0), np.uint64), rt.party_sharding)
