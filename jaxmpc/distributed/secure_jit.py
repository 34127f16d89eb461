""":func:`secure_jit`: a function of shared values run by the parties with the dealer's feed.

Per call the dealer runs the function's shadow (zero shares, real keys) and
sends each party its row of the dealer's outputs; the parties run one
ahead-of-time compiled program on their shares, with every dealer call
answered from that row.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmpc import ring
from jaxmpc.distributed.arrays import _concat_rows, _is_key, _is_shared, _send_rows
from jaxmpc.distributed.collectives import audit_collectives
from jaxmpc.distributed.failure import _waiting
from jaxmpc.distributed.feed import _Call, _DealerTap, _dummy_key, _empty_feed, feed_width
from jaxmpc.distributed.runtime import DEALER, DistributedError, Runtime, runtime

@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything about one signature of a secure function."""

    in_treedef: Any
    in_kinds: tuple[str, ...]  # per leaf: shared / key / public / static
    in_avals: tuple[Any, ...]
    statics: tuple[Any, ...]
    out_treedef: Any
    out_kinds: tuple[str, ...]
    out_avals: tuple[Any, ...]
    calls: tuple[_Call, ...]
    width: int


def _mark(tree: Any) -> list[bool]:
    """Per array leaf of ``tree``: is it the shares of a shared value?"""
    marks = jax.tree.map(
        lambda t: jax.tree.map(lambda _: True, t) if _is_shared(t) else False, tree, is_leaf=_is_shared
    )
    return jax.tree.leaves(marks)


def _classify(tree: Any) -> tuple[list[Any], Any, list[str]]:
    leaves, treedef = jax.tree.flatten(tree)
    shared = _mark(tree)
    if len(shared) != len(leaves):
        raise DistributedError("secure_jit: could not tell shared leaves from public ones")
    kinds = []
    for leaf, s in zip(leaves, shared):
        if s:
            kinds.append("shared")
        elif _is_key(leaf):
            kinds.append("key")
        elif isinstance(leaf, (bool, int, float, complex, str)) or leaf is None:
            kinds.append("static")
        else:
            kinds.append("public")
    return leaves, treedef, kinds


class SecureFunction:
    """A function of shared values, run by the parties with the dealer's feed.

    See :func:`secure_jit`.
    """

    def __init__(self, fn: Callable[..., Any], rt: Runtime | None = None, name: str | None = None):
        self.fn = fn
        self._rt = rt
        self.name = name or getattr(fn, "__name__", "secure function")
        self._plans: dict[Any, _Plan] = {}
        self._dealer_jit: dict[Any, Callable] = {}
        self._party_jit: dict[Any, Callable] = {}
        self._runs: dict[Any, int] = {}
        #: at a party: the dealer's feed of the last call (party-sharded, this party's row only)
        self.last_feed: jax.Array | None = None
        self.timings: list[tuple[float, float]] = []

    @property
    def rt(self) -> Runtime:
        return self._rt or runtime()

    # ------------------------------------------------------------ planning
    def _signature(self, args: tuple):
        leaves, treedef, kinds = _classify(args)
        avals, statics = [], []
        for leaf, kind in zip(leaves, kinds):
            if kind == "static":
                avals.append(None)
                statics.append(leaf)
            else:
                avals.append(jax.ShapeDtypeStruct(tuple(leaf.shape) if hasattr(leaf, "shape") else (), leaf.dtype))
        key = (treedef, tuple(kinds), tuple((a.shape, str(a.dtype)) if a is not None else None for a in avals), tuple(statics))
        return key, leaves, treedef, kinds, avals, statics

    def _rebuild(self, plan: _Plan, shares, keys, publics):
        it = {"shared": iter(shares), "key": iter(keys), "public": iter(publics), "static": iter(plan.statics)}
        return jax.tree.unflatten(plan.in_treedef, [next(it[k]) for k in plan.in_kinds])

    def _recorded(self, plan: _Plan, shares, keys, publics):
        """``fn`` with every dealer call recorded (the dealer's view); returns (tap, outputs)."""
        args = self._rebuild(plan, shares, keys, publics)
        tap = _DealerTap("record", self.rt.n_parties)
        with tap.active():
            out = self.fn(*args)
        return tap, out

    def _fed(self, plan: _Plan, shares, keys, publics, flat):
        """``fn`` with every dealer call answered from ``flat`` (the parties' view); returns (tap, outputs)."""
        args = self._rebuild(plan, shares, keys, publics)
        tap = _DealerTap("feed", self.rt.n_parties, plan.calls, flat)
        with tap.active():
            out = self.fn(*args)
        return tap, out

    def plan(self, *args: Any) -> _Plan:
        """Trace (abstractly) to find the dealer's calls and the outputs' kinds."""
        key, leaves, treedef, kinds, avals, statics = self._signature(args)
        if key in self._plans:
            return self._plans[key]
        n = self.rt.n_parties
        for a, k in zip(avals, kinds):
            if k == "shared" and (len(a.shape) < 1 or a.shape[0] != n):
                raise DistributedError(f"{self.name}: a shared argument has shape {a.shape}, expected ({n}, ...)")
        partial = _Plan(treedef, tuple(kinds), tuple(avals), tuple(statics), None, (), (), (), 0)
        share_avals = [a for a, k in zip(avals, kinds) if k == "shared"]
        keys = [a for a, k in zip(avals, kinds) if k == "key"]
        publics = [a for a, k in zip(avals, kinds) if k == "public"]
        box = {}

        def shadow(shares, keys, publics):
            tap, out = self._recorded(partial, shares, keys, publics)
            box["calls"] = tuple(tap.calls)
            return out, _concat_rows(tap.outputs, n)

        closed, (out, _) = jax.make_jaxpr(shadow, return_shape=True)(share_avals, keys, publics)
        n_shares = len(jax.tree.leaves(share_avals))
        n_out = len(jax.tree.leaves(out))
        used = _used_inputs(closed, [False] * n_out + [True])  # which inputs the dealer's feed depends on
        if used is not None and any(used[:n_shares]):
            raise DistributedError(
                f"{self.name}: a jaxmpc.dealer call depends on secret-shared inputs; the dealer never "
                "holds shares, so its correlated randomness may depend on keys, shapes and public values only"
            )
        out_leaves, out_treedef, out_kinds = _classify(out)
        if "static" in out_kinds:
            raise DistributedError(f"{self.name}: outputs must be arrays or shared values")
        calls = box["calls"]
        plan = _Plan(
            treedef, tuple(kinds), tuple(avals), tuple(statics), out_treedef, tuple(out_kinds),
            tuple(jax.ShapeDtypeStruct(o.shape, o.dtype) for o in out_leaves), calls, feed_width(calls),
        )
        if self.rt.is_party:
            self._check_parties_ignore_keys(plan)
        self._plans[key] = plan
        return plan

    def _check_parties_ignore_keys(self, plan: _Plan) -> None:
        """The parties' program must not use the dealer's keys (they do not hold them)."""
        rt = self.rt
        keys = [a for a, k in zip(plan.in_avals, plan.in_kinds) if k == "key"]
        if not keys:
            return
        shares = [a for a, k in zip(plan.in_avals, plan.in_kinds) if k == "shared"]
        publics = [a for a, k in zip(plan.in_avals, plan.in_kinds) if k == "public"]
        flat = jax.ShapeDtypeStruct((rt.n_parties, plan.width), ring.RING_DTYPE)

        def parties(keys, shares, publics, flat):
            return self._fed(plan, shares, keys, publics, flat)[1]

        with jax.set_mesh(rt.party_mesh):
            closed = jax.make_jaxpr(parties)(keys, shares, publics, flat)
        used = _used_inputs(closed, [k != "key" for k in plan.out_kinds])  # new keys go back to the dealer
        if used is not None and any(used[: len(keys)]):
            raise DistributedError(
                f"{self.name}: the computation uses a PRNG key outside jaxmpc.dealer calls (e.g. to share "
                "a value); keys belong to the dealer and the parties do not hold them: share inputs with "
                "jaxmpc.distributed.share/share_tree outside the function"
            )

    def _get_dealer_jit(self, key, plan: _Plan):
        if key not in self._dealer_jit:
            n = self.rt.n_parties

            def run(keys, publics):  # zero shares: XLA keeps only the dealer's work
                shares = [jnp.zeros(a.shape, a.dtype) for a, k in zip(plan.in_avals, plan.in_kinds) if k == "shared"]
                tap, out = self._recorded(plan, shares, keys, publics)
                flat = _concat_rows(tap.outputs, n)
                out_keys = [o for o, k in zip(jax.tree.leaves(out), plan.out_kinds) if k == "key"]
                return flat, out_keys

            self._dealer_jit[key] = jax.jit(run)
        return self._dealer_jit[key]

    def _party_program(self, key, plan: _Plan):
        """The parties' program, compiled ahead of time (so that a party compiles
        while the dealer is still compiling and computing its first feed), and
        the openings it records while being traced."""
        if key not in self._party_jit:
            rt = self.rt

            def run(shares, publics, flat):
                keys = [_dummy_key(a) for a, k in zip(plan.in_avals, plan.in_kinds) if k == "key"]
                tap, out = self._fed(plan, shares, keys, publics, flat)
                if len(tap.calls) != len(plan.calls):
                    raise DistributedError(
                        f"{self.name}: the parties' program made {len(tap.calls)} dealer calls, the dealer's {len(plan.calls)}"
                    )
                return [o for o, k in zip(jax.tree.leaves(out), plan.out_kinds) if k != "key"]

            shardings = [rt.party_sharding if k == "shared" else rt.replicated for k in plan.out_kinds if k != "key"]
            shares = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rt.party_sharding)
                      for a, k in zip(plan.in_avals, plan.in_kinds) if k == "shared"]
            publics = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rt.replicated)
                       for a, k in zip(plan.in_avals, plan.in_kinds) if k == "public"]
            flat = jax.ShapeDtypeStruct((rt.n_parties, plan.width), ring.RING_DTYPE, sharding=rt.party_sharding)
            from jaxmpc import cost

            with cost.recording() as openings, jax.set_mesh(rt.party_mesh):
                compiled = jax.jit(run, out_shardings=shardings).lower(shares, publics, flat).compile()
            self._party_jit[key] = (compiled, tuple(openings))
        return self._party_jit[key]

    def party_hlo(self, *args: Any) -> str:
        """The parties' compiled program (for audits: its collectives are all the parties' traffic)."""
        plan = self.plan(*args)
        return self._party_program(self._signature(args)[0], plan)[0].as_text()

    def audit(self, *args: Any) -> dict[str, Any]:
        """Compare the collectives in the parties' compiled program with the openings
        the protocol recorded (:mod:`jaxmpc.cost`), in words per party.

        ``all-reduce`` must carry exactly the arithmetic openings, ``all-gather``
        the XOR openings, ``collective-permute`` the sends to one owner, and
        nothing else may communicate: then XLA added no traffic of its own.
        """
        plan = self.plan(*args)
        compiled, openings = self._party_program(self._signature(args)[0], plan)
        return audit_collectives(compiled.as_text(), openings, self.rt.n_parties)

    # ------------------------------------------------------------- running
    def __call__(self, *args: Any) -> Any:
        rt = self.rt
        plan = self.plan(*args)
        key, leaves, *_ = self._signature(args)
        first = self._runs.get(key, 0) == 0
        self._runs[key] = self._runs.get(key, 0) + 1
        kinds = plan.in_kinds
        keys = [leaf for leaf, k in zip(leaves, kinds) if k == "key"]
        publics = [leaf for leaf, k in zip(leaves, kinds) if k == "public"]
        shares = [leaf for leaf, k in zip(leaves, kinds) if k == "shared"]

        # 0. the parties compile their program first (the dealer may still be busy)
        if rt.is_party:
            for s in shares:
                if isinstance(s, jax.ShapeDtypeStruct):
                    raise DistributedError(f"{self.name}: a party needs its shares, got a placeholder")
            program, _ = self._party_program(key, plan)
            if rt.multiprocess:
                for s in shares:
                    if not s.sharding.is_equivalent_to(rt.party_sharding, s.ndim):
                        raise DistributedError(
                            f"{self.name}: shares must be party-sharded global arrays (from share, share_tree "
                            f"or a secure function), got sharding {s.sharding}"
                        )
                publics_g = [jax.make_array_from_process_local_data(rt.replicated, np.asarray(p)) for p in publics]
            else:
                shares = [jax.device_put(s, rt.party_sharding) for s in shares]
                publics_g = [jax.device_put(np.asarray(p) if not isinstance(p, jax.Array) else p, rt.replicated)
                             for p in publics]

        # 1. the dealer evaluates its calls and sends each party its row
        t_feed = time.perf_counter()
        out_keys = None
        stacked = None
        if rt.is_dealer:
            if any(isinstance(k, jax.ShapeDtypeStruct) for k in keys):
                raise DistributedError(f"{self.name}: the dealer needs the real PRNG keys, got placeholders")
            # committed to this device, so that later calls (fed our own outputs) hit the same executable
            here = jax.local_devices()[0] if rt.multiprocess else rt.party_mesh.devices.flat[0]
            keys_c = [jax.device_put(k, here) for k in keys]
            publics_c = [jax.device_put(np.asarray(p) if not isinstance(p, jax.Array) else p, here) for p in publics]
            stacked, out_keys = self._get_dealer_jit(key, plan)(keys_c, publics_c)
        flat = None
        if plan.width:
            flat = _send_rows(rt, DEALER, stacked, (plan.width,))
        elif rt.is_party:
            flat = _empty_feed(rt)
        if rt.is_party:
            self.last_feed = flat

        # 2. the parties run the program on their shares
        t_run = time.perf_counter()
        party_outs = None
        if rt.is_party:
            with _waiting(rt, f"running {self.name}", first):
                party_outs = program(shares, publics_g, flat)
                jax.block_until_ready(party_outs)
        #: per call: seconds until the dealer's feed was in, then seconds running the parties' program
        self.timings.append((t_run - t_feed, time.perf_counter() - t_run))

        # 3. everyone gets the output structure; what a process does not hold is a placeholder
        it_keys = iter(out_keys or [])
        it_party = iter(party_outs or [])
        out = []
        for kind, aval in zip(plan.out_kinds, plan.out_avals):
            if kind == "key":
                out.append(next(it_keys) if rt.is_dealer else aval)
            else:
                out.append(next(it_party) if rt.is_party else aval)
        return jax.tree.unflatten(plan.out_treedef, out)

    def feed_words(self, *args: Any) -> int:
        """uint64 words each party receives from the dealer per call."""
        return self.plan(*args).width


def _used_inputs(closed: Any, used_outputs: list[bool]) -> list[bool] | None:
    """Which inputs of a jaxpr the chosen outputs depend on (None if JAX's DCE is unavailable)."""
    try:
        from jax._src.interpreters import partial_eval as pe

        _, used = pe.dce_jaxpr(closed.jaxpr, used_outputs)
    except Exception:  # a private API: the check is a safety net, not a requirement
        return None
    return list(used)


def secure_jit(fn: Callable[..., Any], rt: Runtime | None = None, *, name: str | None = None) -> SecureFunction:
    """Run ``fn`` (a function of shared values, e.g. a training step) as the parties and the dealer.

    Argument leaves are sorted by kind:

    * shares of :class:`SharedTensor` / ``SharedBits`` values: party-sharded
      global arrays (each party holds its own block); the dealer passes
      placeholders (``ShapeDtypeStruct``) or anything of the right shape;
    * PRNG keys (``jax.random.key``): the dealer's; the parties' values are
      ignored (they may pass placeholders). Raw ``uint32`` keys would be taken
      for public data: use typed keys;
    * other arrays: public, the same at every party;
    * Python scalars: static.

    Per call: the dealer runs ``fn``'s shadow (zero shares) and sends each party
    its row of the dealer's outputs; the parties run ``fn`` on their shares with
    the dealer's calls answered from that row (the same shares as the
    simulation's dealer for the same keys). Returns ``fn``'s outputs: shared
    ones party-sharded at the parties, keys at the dealer, public ones at the
    parties, placeholders for what a process does not hold.

    ``fn`` must make the same dealer calls for the same argument shapes (true
    of every protocol here: they depend on shapes, never on values).
    """
    return SecureFunction(fn, rt, name=name)
