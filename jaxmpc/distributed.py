"""Parties as separate processes on JAX's distributed runtime.

The protocols are the same SPMD code as in the simulation; only where it runs
changes. Each party is one OS process with one device, joined by
``jax.distributed.initialize`` (gloo collectives on CPU); a global
:class:`~jax.sharding.Mesh` over the parties' devices has the axis ``party``,
and :func:`jaxmpc.spmd.party_map` runs every protocol step as a
``jax.shard_map`` over it, so each opening is a real collective between the
processes and each process holds only its own share (a ``(1, ...)`` block of
every ``(n_parties, ...)`` global array).

Processes and what each one sees
--------------------------------

``n`` parties and one dealer, ``n + 1`` processes in JAX's runtime
(process ids ``0..n-1`` are the parties, ``n`` is the dealer; the
coordination service runs in party 0's process):

* **party i** holds its share of every secret-shared value, its own inputs
  (as data owner / model owner) and the values opened to it. It receives from
  the dealer exactly row ``i`` of the dealer's correlated randomness (its
  shares of the Beaver triples, truncation pairs, AND triples, random bits).
  It never holds a PRNG key of the dealer: in the parties' program the
  dealer's functions are replaced by reads from that row, and key inputs are
  replaced by a constant.
* **the dealer** runs the computation's "shadow": the same function traced
  with zero shares, which only serves to evaluate the dealer's calls
  (``jaxmpc.dealer.*``) in the right order with the right keys; XLA drops the
  rest. It sends row ``i`` of its output to party ``i`` by point-to-point
  ``ppermute`` messages over a mesh of all ``n + 1`` devices (axis
  ``node``), and takes part in nothing else: it sees no share of any input
  and no opened value.

Trust assumptions: semi-honest parties and dealer, no collusion between the
dealer and any party (the dealer knows every mask), the network between the
processes is private and authenticated (gloo over plain TCP is neither:
use a private network or a tunnel). See ``docs/distributed.md``.

Moving values
-------------

* an owner shares its input: :func:`share` (one value) / :func:`share_tree`
  (a pytree, e.g. the model) — the owner splits locally, keeps its share and
  sends share ``j`` to party ``j`` only;
* a computation on shares: :func:`secure_jit` (dealer feed + one jit-compiled
  program per party);
* outputs: :func:`reveal` (to every party) and :func:`reveal` with ``to=``
  (to one party only: the others send it their shares and learn nothing).

Failure behaviour: every blocking wait runs under a watchdog; a peer that
dies, hangs or never joins makes the others stop with a clear message and
exit code :data:`EXIT_PEER_FAILURE` within a bounded time (see
:func:`initialize`). JAX's runtime cannot continue without a peer, so the
process is ended (``os._exit``) rather than an exception raised.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import inspect
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmpc import dealer, ring, spmd
from jaxmpc.tensor import SharedTensor

PARTY = spmd.PARTY
NODE = "node"
DEALER = "dealer"

ENV_COORDINATOR = "JAXMPC_COORDINATOR"
ENV_NUM_PARTIES = "JAXMPC_NUM_PARTIES"
ENV_PARTY_ID = "JAXMPC_PARTY_ID"
ENV_TIMEOUT = "JAXMPC_TIMEOUT"
ENV_INIT_TIMEOUT = "JAXMPC_INIT_TIMEOUT"
ENV_HEARTBEAT_TIMEOUT = "JAXMPC_HEARTBEAT_TIMEOUT"

DEFAULT_TIMEOUT = 120.0  # s, any wait on a peer once programs are compiled
DEFAULT_FIRST_CALL_TIMEOUT = 900.0  # s, a peer may still be compiling the same program
DEFAULT_INIT_TIMEOUT = 60.0  # s, for every process to join
DEFAULT_HEARTBEAT_TIMEOUT = 10  # s, JAX's runtime declares a silent process dead

#: Exit code of a process stopped because a peer failed (died, hung, never joined).
EXIT_PEER_FAILURE = 3
#: Exit code for a bad configuration (address, port, party id).
EXIT_CONFIG = 2


class DistributedError(RuntimeError):
    """A configuration error of the distributed runtime (address, port, party id, mesh)."""


# ===================================================================== runtime


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Where the parties and the dealer run.

    Attributes:
      n_parties: number of parties (the dealer is not counted).
      role: this process's party index, ``"dealer"``, or ``"all"`` when every
        party and the dealer run in this one process (:func:`single_process`).
      party_mesh: one device per party, axis ``party``.
      node_mesh: the parties' devices then the dealer's, axis ``node`` (only
        with several processes; the dealer's messages travel over it).
      timeout: seconds any wait on a peer may take once programs are compiled.
      first_call_timeout: seconds the first run of a program may wait (a peer
        may still be compiling it).
    """

    n_parties: int
    role: int | str
    party_mesh: Mesh
    node_mesh: Mesh | None = None
    timeout: float = DEFAULT_TIMEOUT
    first_call_timeout: float = DEFAULT_FIRST_CALL_TIMEOUT

    @property
    def multiprocess(self) -> bool:
        return self.node_mesh is not None

    @property
    def is_dealer(self) -> bool:
        return self.role in (DEALER, "all")

    @property
    def is_party(self) -> bool:
        return self.role != DEALER

    def holds(self, party: int) -> bool:
        """Does this process hold party ``party``'s values?"""
        return self.role == "all" or self.role == party

    @property
    def name(self) -> str:
        return "dealer" if self.role == DEALER else ("all parties" if self.role == "all" else f"party {self.role}")

    @property
    def party_sharding(self) -> NamedSharding:
        return NamedSharding(self.party_mesh, PartitionSpec(PARTY))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.party_mesh, PartitionSpec())


_RUNTIME: Runtime | None = None


def runtime() -> Runtime:
    """The runtime set up by :func:`initialize` or :func:`single_process`."""
    if _RUNTIME is None:
        raise DistributedError(
            "no distributed runtime: call jaxmpc.distributed.initialize(...) (one process per party) "
            "or jaxmpc.distributed.single_process(n) first"
        )
    return _RUNTIME


def _check_n(n_parties: Any) -> int:
    try:
        n = int(n_parties)
    except (TypeError, ValueError):
        raise DistributedError(f"number of parties must be an integer, got {n_parties!r}") from None
    if n < 2:
        raise DistributedError(f"secret sharing needs at least 2 parties, got {n}")
    return n


def parse_role(party_id: Any, n_parties: int) -> int | str:
    """A party id ``0..n-1``, or ``"dealer"`` (also accepted: ``n``)."""
    text = str(party_id).strip().lower()
    if text in (DEALER, str(n_parties)):
        return DEALER
    try:
        i = int(text)
    except ValueError:
        i = -1
    if not 0 <= i < n_parties:
        raise DistributedError(
            f"party id must be 0..{n_parties - 1} or 'dealer', got {party_id!r}"
        )
    return i


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6addr]:port`` for IPv6), checked and resolved."""
    if not address or ":" not in address:
        raise DistributedError(f"coordinator address must be host:port, got {address!r}")
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise DistributedError(f"coordinator address {address!r}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise DistributedError(f"coordinator address {address!r}: port {port} is out of range 1..65535")
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise DistributedError(f"coordinator address {address!r}: cannot resolve host {host!r} ({e})") from None
    return host, port


def _check_port_free(host: str, port: int) -> None:
    """The coordinator (party 0) binds ``port`` on all interfaces: fail clearly if it is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("", port))
        except OSError as e:
            raise DistributedError(
                f"party 0 runs the coordinator and cannot listen on port {port} ({e.strerror or e}); "
                f"the port is in use: choose another one (--port, or {ENV_COORDINATOR}=host:port)"
            ) from None


def free_port() -> int:
    """A TCP port that was free a moment ago (for trying things out on one machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env_float(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        v = float(text)
    except ValueError:
        raise DistributedError(f"{name}={text!r} is not a number of seconds") from None
    if not v > 0:
        raise DistributedError(f"{name} must be positive, got {text!r}")
    return v


def initialize(
    coordinator: str | None = None,
    n_parties: int | None = None,
    party_id: int | str | None = None,
    *,
    timeout: float | None = None,
    first_call_timeout: float | None = None,
    init_timeout: float | None = None,
    heartbeat_timeout: int | None = None,
) -> Runtime:
    """Join the computation as one process: party ``party_id`` or the dealer.

    Arguments default to the environment: ``JAXMPC_COORDINATOR`` (``host:port``
    of the coordinator, which runs in party 0's process), ``JAXMPC_NUM_PARTIES``,
    ``JAXMPC_PARTY_ID`` (``0..n-1`` or ``dealer``), ``JAXMPC_TIMEOUT``,
    ``JAXMPC_INIT_TIMEOUT``, ``JAXMPC_HEARTBEAT_TIMEOUT`` (seconds).

    Starts ``n + 1`` processes' worth of JAX runtime (process id = party id,
    the dealer is process ``n``) with gloo CPU collectives, one device per
    process. Must run before any other JAX computation in the process.

    Bounded failure: if not every process has joined within ``init_timeout``
    the process stops with a message naming the coordinator; afterwards a
    peer that dies is noticed at the next collective (gloo: connection closed)
    or by JAX's heartbeats within ``heartbeat_timeout``, and a wait that takes
    longer than ``timeout`` (``first_call_timeout`` for the first run of each
    program) stops the process. Exit code :data:`EXIT_PEER_FAILURE`.
    """
    global _RUNTIME
    if _RUNTIME is not None:
        raise DistributedError("the distributed runtime is already initialized in this process")
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR)
    n_text = n_parties if n_parties is not None else os.environ.get(ENV_NUM_PARTIES)
    pid_text = party_id if party_id is not None else os.environ.get(ENV_PARTY_ID)
    missing = [
        name for name, v in ((ENV_COORDINATOR, coordinator), (ENV_NUM_PARTIES, n_text), (ENV_PARTY_ID, pid_text))
        if v is None or v == ""
    ]
    if missing:
        raise DistributedError(
            "this process does not know its place in the computation: set "
            + ", ".join(missing)
            + " (or start all parties on this machine with: jaxmpc launch --parties N -- <command>)"
        )
    n = _check_n(n_text)
    role = parse_role(pid_text, n)
    host, port = parse_address(coordinator)
    timeout = timeout if timeout is not None else _env_float(ENV_TIMEOUT, DEFAULT_TIMEOUT)
    first = first_call_timeout if first_call_timeout is not None else max(DEFAULT_FIRST_CALL_TIMEOUT, timeout)
    init_timeout = init_timeout if init_timeout is not None else _env_float(ENV_INIT_TIMEOUT, DEFAULT_INIT_TIMEOUT)
    heartbeat = int(
        heartbeat_timeout if heartbeat_timeout is not None
        else _env_float(ENV_HEARTBEAT_TIMEOUT, DEFAULT_HEARTBEAT_TIMEOUT)
    )
    process_id = n if role == DEALER else role
    who = "dealer" if role == DEALER else f"party {role}"

    if process_id == 0:
        _check_port_free(host, port)
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise DistributedError(
            "jaxmpc.distributed.initialize must run before any JAX computation in this process"
        )
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")

    # JAX aborts the process by itself when initialization times out; our
    # watchdog fires a little earlier with a message that says what to check.
    with WATCHDOG.guard(
        f"joining the computation at {host}:{port} ({n} parties + dealer = {n + 1} processes)",
        init_timeout,
        who,
        hint=(
            f"not every process joined: check that party 0 (which runs the "
            f"coordinator) is up at {host}:{port}, that every process was started with the same "
            f"{ENV_COORDINATOR} and {ENV_NUM_PARTIES}={n}, and that ids 0..{n - 1} and 'dealer' are all running"
        ),
    ):
        try:
            jax.distributed.initialize(
                coordinator_address=f"{host}:{port}" if ":" not in host else f"[{host}]:{port}",
                num_processes=n + 1,
                process_id=process_id,
                initialization_timeout=int(math.ceil(init_timeout)) + 15,
                heartbeat_timeout_seconds=heartbeat,
                shutdown_timeout_seconds=int(max(30, first)),
            )
        except Exception as e:  # JaxRuntimeError etc.
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "RPC server" in msg or "address" in msg.lower():
                raise DistributedError(
                    f"{who}: cannot start the coordinator on port {port}: {msg} (port in use?)"
                ) from None
            raise DistributedError(f"{who}: cannot join the computation at {host}:{port}: {msg}") from None

    if jax.process_count() != n + 1:
        raise DistributedError(f"expected {n + 1} processes, the runtime has {jax.process_count()}")
    devices = []
    for p in range(n + 1):
        mine = sorted((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)
        if not mine:
            raise DistributedError(f"process {p} has no device")
        devices.append(mine[0])
    rt = Runtime(
        n_parties=n,
        role=role,
        party_mesh=Mesh(np.array(devices[:n]), (PARTY,)),
        node_mesh=Mesh(np.array(devices), (NODE,)),
        timeout=timeout,
        first_call_timeout=first,
    )
    _RUNTIME = rt
    return rt


def single_process(n_parties: int, devices: Sequence[Any] | None = None) -> Runtime:
    """Every party (one device each) and the dealer in this process.

    For a machine with several accelerators, or for tests with
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N``: the same code paths
    as with several processes (``shard_map`` over a ``party`` mesh, dealer
    feed), minus the process boundaries.
    """
    global _RUNTIME
    n = _check_n(n_parties)
    devices = list(devices if devices is not None else jax.devices())
    if len(devices) < n:
        raise DistributedError(
            f"{n} parties need {n} devices, this process has {len(devices)} "
            "(on CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax)"
        )
    _RUNTIME = Runtime(n_parties=n, role="all", party_mesh=Mesh(np.array(devices[:n]), (PARTY,)))
    return _RUNTIME


def shutdown(rt: Runtime | None = None) -> None:
    """Leave the computation: waits (bounded) until every process gets here."""
    rt = rt or runtime()
    if rt.multiprocess:
        with _waiting(rt, "waiting for every process to finish", first=True):
            jax.distributed.shutdown()


def reset() -> None:
    """Forget the single-process runtime (a multi-process runtime cannot be left)."""
    global _RUNTIME
    if _RUNTIME is not None and _RUNTIME.multiprocess:
        raise DistributedError("a multi-process runtime lasts until the process ends")
    _RUNTIME = None


# ==================================================================== watchdog


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


# ============================================================== shared values


def _is_shared(x: Any) -> bool:
    if isinstance(x, SharedTensor):
        return True
    binary = sys.modules.get("jaxmpc.protocols.binary")
    return binary is not None and isinstance(x, binary.SharedBits)


def _is_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def placeholder(tree: Any) -> Any:
    """The same pytree with every array replaced by its ``ShapeDtypeStruct``:
    what a process holds for values that are not its own."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), a.dtype), tree)


def local_block(x: Any) -> np.ndarray:
    """This process's block of a party-sharded array (or of ``x.shares``): ``(1, ...)``.

    Raises if this process holds more or less than exactly one block.
    """
    arr = x.shares if _is_shared(x) else x
    shards = arr.addressable_shards
    if len(shards) != 1:
        raise DistributedError(f"expected one local block, this process holds {len(shards)}")
    return np.asarray(shards[0].data)


def describe_local(x: Any) -> dict[str, Any]:
    """What this process holds of a global array: for tests and audits."""
    arr = x.shares if _is_shared(x) else x
    shards = arr.addressable_shards
    return {
        "global_shape": list(arr.shape),
        "blocks": [
            {
                "shape": list(s.data.shape),
                "index": [[sl.start, sl.stop] if isinstance(sl, slice) else sl for sl in s.index],
                "device_process": s.device.process_index,
            }
            for s in shards
        ],
    }


# ------------------------------------------------------------- point to point


@functools.lru_cache(maxsize=None)
def _scatter_program(mesh: Mesh, axis: str, src: int, n_targets: int, shape: tuple[int, ...]):
    """Device ``src`` sends row ``j`` of its ``(n_targets, *shape)`` block to device ``j``."""

    def body(block):
        rows = block[0]
        me = lax.axis_index(axis)
        out = jnp.zeros(shape, rows.dtype)
        for j in range(n_targets):
            if j == src:
                out = jnp.where(me == src, rows[j], out)
            else:
                out = out + lax.ppermute(rows[j], axis, [(src, j)])
        return out[None]

    spec = PartitionSpec(axis)
    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False))


_ZEROS: dict[tuple, jax.Array] = {}


def _local_device(mesh: Mesh):
    mine = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    if len(mine) != 1:
        raise DistributedError(f"this process has {len(mine)} devices in the mesh, expected 1")
    return mine[0]


def _global_from_local(mesh: Mesh, axis: str, block: jax.Array | np.ndarray) -> jax.Array:
    """The global array whose only local block (on this process's device) is ``block``."""
    size = int(mesh.shape[axis])
    shape = (size,) + tuple(block.shape[1:])
    device = _local_device(mesh)
    block = jax.device_put(block, device)
    return jax.make_array_from_single_device_arrays(shape, NamedSharding(mesh, PartitionSpec(axis)), [block])


def _send_rows(rt: Runtime, src: int | str, stacked: jax.Array | None, shape: tuple[int, ...]) -> jax.Array | None:
    """``src`` (a party or the dealer) holds ``stacked`` of shape ``(n, *shape)``
    and sends row ``j`` to party ``j`` only. Returns the party-sharded
    ``(n, *shape)`` uint64 array (``None`` at the dealer)."""
    n = rt.n_parties
    shape = tuple(int(d) for d in shape)
    holds_src = rt.is_dealer if src == DEALER else rt.holds(src)
    if holds_src:
        if stacked is None or tuple(stacked.shape) != (n,) + shape:
            raise DistributedError(
                f"the sender must hold the {n} shares, shape {(n,) + shape}, got "
                f"{None if stacked is None else tuple(stacked.shape)}"
            )
        if stacked.dtype != ring.RING_DTYPE:
            raise DistributedError(f"shares must be {ring.RING_DTYPE}, got {stacked.dtype}")
    if not rt.multiprocess:
        return jax.device_put(stacked, rt.party_sharding)
    if src != DEALER and rt.role == DEALER:
        return None  # between parties only
    mesh = rt.node_mesh if src == DEALER else rt.party_mesh
    axis = NODE if src == DEALER else PARTY
    src_index = n if src == DEALER else src
    if holds_src:
        block = jnp.asarray(stacked)[None]
    else:
        zkey = (mesh, (1, n) + shape)
        if zkey not in _ZEROS:
            _ZEROS[zkey] = jax.device_put(np.zeros((1, n) + shape, np.uint64), _local_device(mesh))
        block = _ZEROS[zkey]
    program = _scatter_program(mesh, axis, src_index, n, shape)
    first = (mesh, src_index, shape) not in _SEEN_SCATTERS
    _SEEN_SCATTERS.add((mesh, src_index, shape))
    with _waiting(rt, f"sending shares from {'the dealer' if src == DEALER else f'party {src}'}", first):
        out = program(_global_from_local(mesh, axis, block))
        out.block_until_ready()
    if rt.role == DEALER:
        return None
    if src == DEALER:  # re-home this party's block on the party mesh (no copy)
        (shard,) = out.addressable_shards
        return jax.make_array_from_single_device_arrays((n,) + shape, rt.party_sharding, [shard.data])
    return out


_SEEN_SCATTERS: set = set()


@functools.lru_cache(maxsize=None)
def _concat_program(n: int):
    return jax.jit(lambda *a: _concat_rows(a, n))


@functools.lru_cache(maxsize=None)
def _split_program(shapes: tuple[tuple[int, ...], ...], n: int, sharding: NamedSharding):
    return jax.jit(lambda f: _split_rows(f, shapes, n), out_shardings=sharding)


def _concat_rows(arrays: Sequence[jax.Array], n: int) -> jax.Array:
    if not arrays:
        return jnp.zeros((n, 0), ring.RING_DTYPE)
    return jnp.concatenate([jnp.reshape(a, (n, -1)) for a in arrays], axis=1)


def _split_rows(flat: jax.Array, shapes: Sequence[tuple[int, ...]], n: int) -> list[jax.Array]:
    out, offset = [], 0
    for s in shapes:
        size = int(np.prod(s, dtype=np.int64))
        out.append(jnp.reshape(lax.slice_in_dim(flat, offset, offset + size, axis=1), (n,) + s))
        offset += size
    return out


def share_tree(rt: Runtime | None, owner: int, tree: Any, template: Any) -> Any:
    """Party ``owner`` distributes an already-split pytree of shared values.

    ``tree`` (at the owner; ignored elsewhere) holds :class:`SharedTensor`
    leaves with all ``n`` shares, e.g. from :func:`jaxmpc.nn.share_params`;
    ``template`` has the same structure with ``ShapeDtypeStruct`` shares
    (``jax.eval_shape`` of the sharing), known to everyone. The owner keeps
    share ``owner`` and sends share ``j`` to party ``j`` only, in one batch.
    Returns the tree with party-sharded shares (the template at the dealer).
    """
    rt = rt or runtime()
    if not 0 <= owner < rt.n_parties:
        raise DistributedError(f"owner={owner} is not a party (0..{rt.n_parties - 1})")
    n = rt.n_parties
    t_leaves, treedef = jax.tree.flatten(template, is_leaf=_is_shared)
    if not all(_is_shared(t) for t in t_leaves):
        raise DistributedError("share_tree: every leaf of the template must be a shared tensor")
    shapes = tuple(tuple(int(d) for d in t.shares.shape[1:]) for t in t_leaves)
    stacked = None
    if rt.holds(owner):
        leaves = treedef.flatten_up_to(tree)
        for leaf, t in zip(leaves, t_leaves):
            if tuple(leaf.shares.shape) != tuple(t.shares.shape):
                raise DistributedError(f"share_tree: a leaf has shape {leaf.shares.shape}, template {t.shares.shape}")
        stacked = _concat_program(n)(*(leaf.shares for leaf in leaves))
    total = sum(int(np.prod(s, dtype=np.int64)) for s in shapes)
    flat = _send_rows(rt, owner, stacked, (total,))
    if flat is None:
        return template
    with jax.set_mesh(rt.party_mesh):
        parts = _split_program(shapes, n, rt.party_sharding)(flat)
    return jax.tree.unflatten(treedef, [dataclasses.replace(t, shares=p) for t, p in zip(t_leaves, parts)])


def share(
    rt: Runtime | None,
    owner: int,
    value: Any,
    key: jax.Array | None,
    shape: Sequence[int],
    frac_bits: int = ring.DEFAULT_FRAC_BITS,
) -> SharedTensor:
    """Party ``owner`` secret-shares its plaintext ``value`` (of ``shape``) with its ``key``.

    Exactly :func:`jaxmpc.tensor.share` at the owner (same shares as the
    simulation for the same key); then share ``j`` goes to party ``j`` only.
    Other processes pass ``value=None, key=None``.
    """
    rt = rt or runtime()
    from jaxmpc import tensor

    n = rt.n_parties
    template = SharedTensor(jax.ShapeDtypeStruct((n,) + tuple(shape), ring.RING_DTYPE), ring.check_frac_bits(frac_bits))
    shared = tensor.share(value, key, n, frac_bits) if rt.holds(owner) else None
    return share_tree(rt, owner, shared, template)


# ---------------------------------------------------------------------- reveal


@functools.lru_cache(maxsize=None)
def _open_program(rt: Runtime, shapes: tuple[tuple[int, ...], ...], to: int | None, what: str):
    n = rt.n_parties

    def run(*shares):
        flat = _concat_rows(shares, n)
        if to is None:
            opened = spmd.party_map(lambda s: spmd.open_sum(s, what=what, masked=False))(flat)
        else:
            opened = spmd.party_map(lambda s: spmd.send_to(s, to, what=what))(flat)
        return opened  # (n, total): each party keeps its own row

    return jax.jit(run, out_shardings=rt.party_sharding)


def reveal(rt: Runtime | None, tree: Any, *, to: int | None = None, what: str = "reveal") -> Any:
    """Open a pytree of shared values: to every party (``to=None``) or to party ``to`` only.

    Returns the decoded float64 values (numpy) at the recipients, ``None``
    elsewhere (the dealer, and with ``to`` the other parties). With ``to``,
    every other party sends its shares to ``to`` by point-to-point messages and
    receives nothing. One round.
    """
    rt = rt or runtime()
    leaves, treedef = jax.tree.flatten(tree, is_leaf=_is_shared)
    if not all(_is_shared(x) for x in leaves):
        raise DistributedError("reveal: every leaf must be a shared tensor")
    if to is not None and not 0 <= to < rt.n_parties:
        raise DistributedError(f"to={to} is not a party (0..{rt.n_parties - 1})")
    receives = rt.is_party and (to is None or rt.holds(to))
    if rt.role == DEALER:
        return None
    shapes = tuple(tuple(x.shares.shape[1:]) for x in leaves)
    program = _open_program(rt, shapes, to, what)
    first = (rt, shapes, to, what) not in _SEEN_OPENS
    _SEEN_OPENS.add((rt, shapes, to, what))
    with _waiting(rt, f"opening {what}", first), jax.set_mesh(rt.party_mesh):
        opened = program(*(x.shares for x in leaves))
        opened.block_until_ready()
    if not receives:
        return None
    row = to if to is not None else (rt.role if isinstance(rt.role, int) else 0)
    if rt.multiprocess:
        block = local_block(opened)[0]
    else:
        block = np.asarray(opened[row])
    values, offset = [], 0
    for x, s in zip(leaves, shapes):
        size = int(np.prod(s, dtype=np.int64))
        raw = block[offset: offset + size].reshape(s)
        values.append(np.asarray(ring.decode(jnp.asarray(raw), x.frac_bits)))
        offset += size
    return jax.tree.unflatten(treedef, values)


_SEEN_OPENS: set = set()


# ================================================================ dealer feed


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


# ================================================================ secure_jit


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

    def _shadow(self, plan_in, keys, publics, n):
        """The dealer's view: zero shares, real keys; returns (flat feed, key outputs, calls)."""
        shares = [jnp.zeros(a.shape, a.dtype) for a, k in zip(plan_in.in_avals, plan_in.in_kinds) if k == "shared"]
        args = self._rebuild(plan_in, shares, keys, publics)
        tap = _DealerTap("record", n)
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
            args = self._rebuild(partial, shares, keys, publics)
            tap = _DealerTap("record", n)
            with tap.active():
                out = self.fn(*args)
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
            args = self._rebuild(plan, shares, keys, publics)
            with _DealerTap("feed", rt.n_parties, plan.calls, flat).active():
                return self.fn(*args)

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

            def run(keys, publics):
                tap, out = self._shadow(plan, keys, publics, n)
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
                args = self._rebuild(plan, shares, keys, publics)
                tap = _DealerTap("feed", rt.n_parties, plan.calls, flat)
                with tap.active():
                    out = self.fn(*args)
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


_COLLECTIVE = re.compile(
    r"=\s*(\([^=]*?\)|\S+)\s+(all-reduce|all-gather|collective-permute|all-to-all|reduce-scatter|"
    r"collective-broadcast|all-reduce-start|all-gather-start|collective-permute-start)\("
)
_SHAPE = re.compile(r"[a-z]+[0-9]*\[([0-9,]*)\]")


def audit_collectives(hlo: str, openings: Sequence[Any], n_parties: int) -> dict[str, Any]:
    """Words per party moved by each kind of collective in a compiled program,
    next to what the recorded openings account for. ``ok`` is True when they
    are equal kind by kind and there is no other kind of collective."""
    found: dict[str, int] = {}
    for m in _COLLECTIVE.finditer(hlo):
        kind = m.group(2).replace("-start", "")
        words = 0
        for dims in _SHAPE.findall(m.group(1)):
            words += int(np.prod([int(d) for d in dims.split(",") if d], dtype=np.int64))
        if kind == "all-gather":
            words //= n_parties  # the result holds every party's block
        found[kind] = found.get(kind, 0) + words
    expected = {"all-reduce": 0, "all-gather": 0, "collective-permute": 0}
    for o in openings:
        if o.domain == "arith":
            expected["all-reduce"] += o.elements
        elif o.domain == "xor":
            expected["all-gather"] += o.elements
        elif o.domain == "send":
            expected["collective-permute"] += (n_parties - 1) * o.elements
    expected = {k: v for k, v in expected.items() if v}
    return {"compiled": found, "recorded": expected, "ok": found == expected}


def _used_inputs(closed: Any, used_outputs: list[bool]) -> list[bool] | None:
    """Which inputs of a jaxpr the chosen outputs depend on (None if JAX's DCE is unavailable)."""
    try:
        from jax._src.interpreters import partial_eval as pe

        _, used = pe.dce_jaxpr(closed.jaxpr, used_outputs)
    except Exception:  # a private API: the check is a safety net, not a requirement
        return None
    return list(used)


def _dummy_key(aval: Any) -> jax.Array:
    impl = getattr(aval.dtype, "_impl", None)
    base = jax.random.key(0, impl=impl) if impl is not None else jax.random.key(0)
    return jnp.broadcast_to(base, aval.shape)


def _empty_feed(rt: Runtime) -> jax.Array:
    if rt.multiprocess:
        return _global_from_local(rt.party_mesh, PARTY, np.zeros((1, 0), np.uint64))
    return jax.device_put(np.zeros((rt.n_parties, 0), np.uint64), rt.party_sharding)


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


# =================================================================== the demo


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """What ``jaxmpc party-demo`` runs: a secure product, a comparison and a few training steps."""

    parties: int = 2
    steps: int = 3
    batch_size: int = 64
    frac_bits: int = ring.DEFAULT_FRAC_BITS
    activation: str = "relu"
    trunc: str = "dealer"
    lr: float = 0.02
    seed: int = 1
    size: int = 8  # elements of the product / comparison demo


def demo_train_config(c: DemoConfig):
    from jaxmpc import train

    return train.TrainConfig(
        parties=c.parties, epochs=1, n_train=c.steps * c.batch_size, n_test=c.batch_size,
        batch_size=c.batch_size, test_batch_size=c.batch_size, lr=c.lr, frac_bits=c.frac_bits,
        activation=c.activation, trunc=c.trunc, seed=c.seed,
    ).validate()


def demo_keys(c: DemoConfig) -> dict[str, jax.Array]:
    """Every role's keys, derived like :func:`jaxmpc.train.train` does from one seed.

    In the demo all processes derive them from the same ``--seed`` so that the
    run can be checked bit for bit against the simulation; each process
    *uses* only its role's keys (parties pass placeholders for the dealer's).
    In a deployment each role would hold only its own secret seed.
    """
    root = jax.random.key(c.seed)
    k_init, k_model, k_data, k_test, k_opt, k_steps, k_eval = jax.random.split(root, 7)
    k_demo = jax.random.fold_in(root, 1000)
    return {
        # model owner (party 0)
        "init": k_init, "model": k_model,
        # data owners: worker w uses fold_in(data, w)
        "data": k_data,
        # owners of the product demo's inputs (party 0 and party 1)
        "x": jax.random.fold_in(k_demo, 0), "y": jax.random.fold_in(k_demo, 1),
        # the dealer
        "opt": k_opt, "steps": k_steps, "mul": jax.random.fold_in(k_demo, 2),
    }


DEALER_KEYS = ("opt", "steps", "mul")


def demo_inputs(c: DemoConfig) -> tuple[np.ndarray, np.ndarray]:
    """The product demo's plaintexts: ``x`` (party 0's) and ``y`` (party 1's)."""
    rng = np.random.default_rng(c.seed)
    return rng.uniform(-4, 4, c.size), rng.uniform(-4, 4, c.size)


def demo_secure_ops(x: SharedTensor, y: SharedTensor, key: jax.Array) -> dict[str, SharedTensor]:
    """The secure part of the product demo: ``x*y``, ``[x < y]`` and ``relu(x)``
    (the comparisons only when :mod:`jaxmpc.protocols.comparison` is there)."""
    from jaxmpc.protocols import arithmetic

    k_mul, k_cmp, k_relu = jax.random.split(key, 3)
    out = {"product": arithmetic.mul(x, y, k_mul)}
    try:
        from jaxmpc.protocols import comparison
    except ImportError:
        return out
    out["less"] = comparison.lt(x, y, k_cmp)
    out["relu"] = comparison.relu(x, k_relu)[0]
    return out


def demo_data(c: DemoConfig):
    """Training batches (plaintext, every worker's) from the offline MNIST subset."""
    from jaxmpc import data

    tc = demo_train_config(c)
    ds = data.load_mnist("offline", n_train=tc.n_train, n_test=tc.n_test, seed=0)
    xb, yb = data.batches(data.normalize(ds.x_train), data.one_hot(ds.y_train), c.batch_size)
    return ds.source, xb, yb


def _batch_step(step: Callable) -> Callable:
    def run(params, opt_state, xs, ys, i, key):
        return step(params, opt_state, xs[i], ys[i], key)

    return run


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


def simulate(c: DemoConfig) -> dict[str, Any]:
    """The whole demo in one process, simulated (vmap over the party axis):
    the reference the distributed run must match bit for bit."""
    from jaxmpc import nn, optim, tensor, train

    keys = demo_keys(c)
    n = c.parties
    x, y = demo_inputs(c)
    xs_ = tensor.share(x, keys["x"], n, c.frac_bits)
    ys_ = tensor.share(y, keys["y"], n, c.frac_bits)
    ops, feed = recorded(demo_secure_ops, n)(xs_, ys_, keys["mul"])
    out = {"x_shares": xs_, "y_shares": ys_, "ops": ops, "feed": SharedTensor(feed, 0),
           "ops_revealed": {k: np.asarray(tensor.reveal(v)) for k, v in ops.items()}, "losses": [], "step_times": []}
    if c.steps == 0:
        return out
    tc = demo_train_config(c)
    _, xb, yb = demo_data(c)
    params = nn.share_params(nn.init_mlp(keys["init"]), keys["model"], n, c.frac_bits)
    sx, sy = train.share_batches(np.asarray(xb).reshape(-1, xb.shape[-1]), np.asarray(yb).reshape(-1, yb.shape[-1]),
                                 c.batch_size, keys["data"], n, c.frac_bits)
    opt = optim.sgd(tc.lr, keys["opt"], tc.momentum, trunc=tc.trunc)
    state = opt.init(params)
    step = jax.jit(_batch_step(train.make_train_step(tc, opt)))
    losses, times, cpu = [], [], []
    for i in range(c.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        params, state, loss = step(params, state, sx, sy, np.int32(i), jax.random.fold_in(keys["steps"], i))
        jax.block_until_ready(params)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        losses.append(float(tensor.reveal(loss)))
    out.update(data_x=sx, data_y=sy, params=params, losses=losses, model=nn.reconstruct_params(params),
               step_times=times, step_cpu=cpu)
    return out


def run_demo(rt: Runtime, c: DemoConfig, *, log: Callable[[str], None] = print, dump: str | None = None,
             check: bool = False, repeat: int = 1) -> dict[str, Any]:
    """The demo as this process's role: see :func:`demo_secure_ops` and the module docstring.

    ``repeat`` runs the product demo that many times (a steady stream of
    collectives, e.g. to try out failures); ``c.steps == 0`` skips training.
    """
    from jaxmpc import nn, optim, train

    n = rt.n_parties
    if c.parties != n:
        c = dataclasses.replace(c, parties=n)
    if n < 2:
        raise DistributedError("the demo needs at least 2 parties")
    all_keys = demo_keys(c)
    # each role keeps only its own keys; the others become placeholders
    mine = set()
    if rt.is_dealer:
        mine |= set(DEALER_KEYS)
    if rt.holds(0):
        mine |= {"init", "model", "x"}
    if rt.holds(1):
        mine |= {"y"}
    if rt.is_party:
        mine |= {"data"}  # each worker derives fold_in(data, w) for its own w only (below)
    keys = {k: (v if k in mine else placeholder(v)) for k, v in all_keys.items()}
    summary: dict[str, Any] = {"role": rt.name, "parties": n}

    # -- 1. product and comparisons: party 0 owns x, party 1 owns y
    x, y = demo_inputs(c)
    ops_fn = secure_jit(demo_secure_ops, rt, name="product demo")
    opened = None
    for r in range(repeat):
        t0 = time.perf_counter()
        xs_ = share(rt, 0, x if rt.holds(0) else None, keys["x"] if rt.holds(0) else None, x.shape, c.frac_bits)
        ys_ = share(rt, 1, y if rt.holds(1) else None, keys["y"] if rt.holds(1) else None, y.shape, c.frac_bits)
        ops_r = ops_fn(xs_, ys_, keys["mul"])
        opened_r = reveal(rt, ops_r, what="demo")  # to every party
        if r == 0:
            ops, opened = ops_r, opened_r
            summary["ops_seconds"] = time.perf_counter() - t0
        if repeat > 1:
            log(f"round {r}: {time.perf_counter() - t0:.3f} s")
    if opened is not None:
        log(f"x*y = {np.round(opened['product'], 3).tolist()}")
        if "less" in opened:
            log(f"[x < y] = {np.round(opened['less']).astype(int).tolist()}")
        summary["ops_max_error"] = float(np.max(np.abs(opened["product"] - x * y)))
        if "less" in opened:
            summary["less_correct"] = bool(np.array_equal(np.round(opened["less"]), (x < y).astype(float)))
    shared = dict(x=xs_, y=ys_, ops=ops)
    if rt.is_party:  # this party's row of the dealer's feed for the product demo
        shared["feed"] = SharedTensor(ops_fn.last_feed, 0)
    model = None
    if c.steps == 0:
        return _finish(rt, c, summary, shared, [], model, opened, dump, check, log)

    # -- 2. training steps of the reference network
    tc = demo_train_config(c)
    source, xb, yb = demo_data(c)
    summary["data_source"] = source
    nb = xb.shape[0]
    template_params = jax.eval_shape(
        lambda k: nn.share_params(nn.init_mlp(k), k, n, c.frac_bits), all_keys["init"]
    )
    params_full = nn.share_params(nn.init_mlp(keys["init"]), keys["model"], n, c.frac_bits) if rt.holds(0) else None
    params = share_tree(rt, 0, params_full, template_params)  # the model owner shares the model
    # each worker w shares its own batches w, w+n, ... exactly as jaxmpc.train.share_batches does
    parts_x, parts_y = [], []
    for w in range(n):
        idx = np.arange(w, nb, n)
        if idx.size == 0:
            continue
        kw = jax.random.fold_in(all_keys["data"], w) if rt.holds(w) else None
        kx = jax.random.fold_in(kw, 0) if kw is not None else None
        ky = jax.random.fold_in(kw, 1) if kw is not None else None
        own = rt.holds(w)
        parts_x.append(share(rt, w, xb[idx] if own else None, kx, (idx.size,) + xb.shape[1:], c.frac_bits))
        parts_y.append(share(rt, w, yb[idx] if own else None, ky, (idx.size,) + yb.shape[1:], c.frac_bits))
    order = np.concatenate([np.arange(w, nb, n) for w in range(n)])
    inverse = np.argsort(order)

    def assemble(px, py, inv):
        from jaxmpc import tensor

        return tensor.concatenate(px, 0)[inv], tensor.concatenate(py, 0)[inv]

    sx, sy = secure_jit(assemble, rt, name="batch assembly")(parts_x, parts_y, inverse)
    # the optimizer's key is the dealer's (its truncations); the parties hold a constant stand-in
    k_opt = keys["opt"] if rt.is_dealer else _dummy_key(keys["opt"])
    opt = optim.sgd(tc.lr, k_opt, tc.momentum, trunc=tc.trunc)
    state = opt.init(params) if rt.is_party else opt.init(template_params)
    step = secure_jit(_batch_step(train.make_train_step(tc, opt)), rt, name="training step")
    losses, times, cpu = [], [], []
    log(f"training {c.steps} steps of the {nn.MNIST_MLP} MLP, batch {c.batch_size}, data: {source}")
    for i in range(c.steps):
        k = jax.random.fold_in(keys["steps"], i) if rt.is_dealer else keys["steps"]
        t0, c0 = time.perf_counter(), time.process_time()
        params, state, loss = step(params, state, sx, sy, np.int32(i), k)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        value = reveal(rt, loss, what="loss")
        if value is not None:
            losses.append(float(value))
            log(f"step {i}: loss {float(value):.6f}  ({times[-1] * 1e3:.1f} ms)")
        elif rt.role == DEALER:
            log(f"step {i}: correlated randomness sent ({times[-1] * 1e3:.1f} ms)")
    summary.update(
        losses=losses,
        step_ms=[t * 1e3 for t in times],
        step_ms_median=float(np.median(times[1:] if len(times) > 1 else times) * 1e3),
        first_step_s=times[0],
        feed_words_per_step=step.feed_words(params, state, sx, sy, np.int32(0), keys["steps"]),
    )
    summary["cpu_ms_median"] = float(np.median(cpu[1:] if len(cpu) > 1 else cpu) * 1e3)
    later = step.timings[1:] or step.timings
    summary["feed_ms_median"] = float(np.median([t[0] for t in later]) * 1e3)
    summary["program_ms_median"] = float(np.median([t[1] for t in later]) * 1e3)

    # -- 3. the model goes back to its owner (party 0) only
    model = reveal(rt, params, to=0, what="model")
    if model is not None:
        model = jax.tree.map(lambda v: np.asarray(v, np.float32), model)
        summary["model_checksum"] = float(sum(np.abs(l).sum() for l in jax.tree.leaves(model)))
        log(f"model decrypted at party 0 (sum |w| = {summary['model_checksum']:.6f})")

    shared.update(data_x=sx, data_y=sy, params=params)
    return _finish(rt, c, summary, shared, losses, model, opened, dump, check, log)


def _finish(rt, c, summary, shared, losses, model, opened, dump, check, log) -> dict[str, Any]:
    if dump:
        _dump(rt, dump, shared, summary, model, opened)
    if check and rt.is_party:
        summary["check"] = _check_against_simulation(rt, c, shared, losses, model, log)
    return summary


def _named_shared(tree: Any) -> dict[str, Any]:
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_shared)[0]
    return {jax.tree_util.keystr(p): v for p, v in flat if _is_shared(v)}


def _dump(rt: Runtime, directory: str, shared: dict[str, Any], summary: dict, model: Any, opened: Any) -> None:
    """Write what this process holds: its blocks of every shared value and their layout."""
    os.makedirs(directory, exist_ok=True)
    tag = "dealer" if rt.role == DEALER else f"party{rt.role}"
    arrays, layout = {}, {}
    for name, value in _named_shared(shared).items():
        if isinstance(value.shares, jax.ShapeDtypeStruct):
            layout[name] = {"placeholder": True, "global_shape": list(value.shares.shape)}
            continue
        layout[name] = describe_local(value)
        arrays["share" + name] = local_block(value)
    if model is not None:
        for name, v in _named_shared_plain(model).items():
            arrays["model" + name] = v
    if opened is not None:
        for k, v in opened.items():
            arrays["opened" + k] = v
    np.savez(os.path.join(directory, f"{tag}.npz"), **arrays)
    with open(os.path.join(directory, f"{tag}.json"), "w") as f:
        json.dump({"summary": summary, "layout": layout}, f, indent=1, default=str)


def _named_shared_plain(tree: Any) -> dict[str, np.ndarray]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}


def _check_against_simulation(rt, c, shared, losses, model, log) -> str:
    """Compare this party's shares with share ``i`` of the simulated run (all seeds known: demo only)."""
    sim = simulate(c)
    ref = {"x": sim["x_shares"], "y": sim["y_shares"], "ops": sim["ops"], "feed": sim["feed"]}
    if c.steps:
        ref.update(data_x=sim["data_x"], data_y=sim["data_y"], params=sim["params"])
    mine, theirs = _named_shared(shared), _named_shared(ref)
    bad = []
    rows = [rt.role] if isinstance(rt.role, int) else list(range(rt.n_parties))
    for name, value in mine.items():
        full = np.asarray(theirs[name].shares)
        got = local_block(value) if rt.multiprocess else np.asarray(value.shares)
        if not np.array_equal(got, full[rows]):
            bad.append(name)
    if losses != sim["losses"]:
        bad.append("losses")
    if model is not None and c.steps:
        for a, b in zip(jax.tree.leaves(model), jax.tree.leaves(sim["model"])):
            if not np.array_equal(a, b):
                bad.append("model")
                break
    result = "bit-identical to the simulated run" if not bad else "MISMATCH in " + ", ".join(bad)
    log(f"check against the simulated mode: {result}")
    return result


# ========================================================================= CLI


def _run_party_demo(args: argparse.Namespace) -> int:
    c = DemoConfig(parties=args.parties or 2, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                   activation=args.activation, trunc=args.trunc)
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, flush=True))
    if args.simulated:
        from jaxmpc import train

        if c.steps:
            demo_train_config(c)
        t0 = time.perf_counter()
        sim = simulate(c)
        times = sim["step_times"]
        summary = {
            "role": "simulated", "parties": c.parties, "losses": sim["losses"],
            "step_ms": [t * 1e3 for t in times], "total_s": time.perf_counter() - t0,
        }
        if times:
            cpu = sim["step_cpu"]
            summary.update(step_ms_median=float(np.median(times[1:] if len(times) > 1 else times) * 1e3),
                           cpu_ms_median=float(np.median(cpu[1:] if len(cpu) > 1 else cpu) * 1e3),
                           first_step_s=times[0])
        for i, loss in enumerate(sim["losses"]):
            log(f"step {i}: loss {loss:.6f}  ({times[i] * 1e3:.1f} ms)")
        if args.json:
            print(json.dumps(summary), flush=True)
        return 0
    try:
        rt = initialize(args.coordinator, args.parties, args.party_id)
    except DistributedError as e:
        print(f"jaxmpc party-demo: error: {e}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    prefix = "" if os.environ.get("JAXMPC_LAUNCHED") else f"[{rt.name}] "
    try:
        summary = run_demo(rt, dataclasses.replace(c, parties=rt.n_parties), log=lambda m: log(prefix + m),
                           dump=args.dump, check=args.check, repeat=args.repeat)
    except BaseException:  # the others are waiting for us: leave now, they notice at once
        import traceback

        traceback.print_exc()
        fail(rt.name, "party-demo failed (traceback above)", code=1)
    if args.json:
        print(json.dumps(summary, default=str), flush=True)
    shutdown(rt)
    ok = "MISMATCH" not in str(summary.get("check", ""))
    return 0 if ok else 1


def _launch(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("jaxmpc launch: error: give the command to run after --, e.g. "
              "jaxmpc launch --parties 2 -- party-demo", file=sys.stderr)
        return EXIT_CONFIG
    if command[0] not in DISTRIBUTED_COMMANDS:
        print(f"jaxmpc launch: warning: {command[0]!r} does not join the distributed runtime; every "
              f"process will run it on its own (distributed commands: {', '.join(DISTRIBUTED_COMMANDS)})",
              file=sys.stderr, flush=True)
    n = args.parties
    port = args.port or free_port()
    host = args.host
    try:
        parse_address(f"{host}:{port}")
        _check_port_free(host, port)
    except DistributedError as e:
        print(f"jaxmpc launch: error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    roles = [str(i) for i in range(n)] + [DEALER]
    procs: list[tuple[str, subprocess.Popen]] = []
    base = dict(os.environ)
    base.update({ENV_COORDINATOR: f"{host}:{port}", ENV_NUM_PARTIES: str(n), "PYTHONUNBUFFERED": "1",
                 "JAXMPC_LAUNCHED": "1"})
    if args.timeout:
        base[ENV_TIMEOUT] = str(args.timeout)
    lock = threading.Lock()

    def pump(name: str, stream, out) -> None:
        for line in iter(stream.readline, ""):
            with lock:
                out.write(line if args.raw else f"[{name}] {line}")
                out.flush()
        stream.close()

    threads = []
    for role in roles:
        env = dict(base, **{ENV_PARTY_ID: role})
        name = "dealer" if role == DEALER else f"party {role}"
        p = subprocess.Popen(
            [sys.executable, "-m", "jaxmpc", *command], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1,
        )
        procs.append((name, p))
        for stream, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr)):
            t = threading.Thread(target=pump, args=(name, stream, out), daemon=True)
            t.start()
            threads.append(t)
    print(f"jaxmpc launch: {n} parties + dealer on {host}:{port}: {' '.join(command)}", file=sys.stderr, flush=True)

    first_failure: tuple[str, int] | None = None
    deadline = None
    try:
        while True:
            alive = [(name, p) for name, p in procs if p.poll() is None]
            for name, p in procs:
                rc = p.returncode
                if rc not in (None, 0) and first_failure is None:
                    first_failure = (name, rc)
                    deadline = time.monotonic() + args.grace
            if not alive:
                break
            if deadline is not None and time.monotonic() > deadline:
                for name, p in alive:
                    p.kill()
                print(f"jaxmpc launch: stopped {', '.join(nm for nm, _ in alive)} {args.grace:.0f} s after "
                      f"{first_failure[0]} failed", file=sys.stderr, flush=True)
                for _, p in alive:
                    p.wait()
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        for _, p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for _, p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        return 130
    for t in threads:
        t.join(timeout=2)
    codes = {name: p.returncode for name, p in procs}
    if first_failure is not None:
        name, rc = first_failure
        detail = _describe_exit(rc)
        print(f"jaxmpc launch: {name} failed first ({detail}); exit codes: "
              + ", ".join(f"{k}={v}" for k, v in codes.items()), file=sys.stderr, flush=True)
        return rc if 0 < rc < 256 else 1
    return 0


#: subcommands that run as one role of a distributed computation (what `jaxmpc launch` is for)
DISTRIBUTED_COMMANDS = ("party-demo",)


def _describe_exit(rc: int) -> str:
    if rc == EXIT_PEER_FAILURE:
        return "exit code 3: it lost a peer"
    if rc == -signal.SIGABRT or rc == 134:
        return "aborted by JAX's distributed runtime: a peer died or stopped sending heartbeats"
    if rc < 0:
        try:
            return f"killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


LAUNCH_EPILOG = f"""\
Starts N party processes and one dealer process on this machine (loopback),
each with {ENV_COORDINATOR}, {ENV_NUM_PARTIES} and {ENV_PARTY_ID} set, runs
`jaxmpc <command>` in each, and prefixes their output with the role.

On several hosts, start one process per party yourself, with the same
coordinator address (party 0's host; party 0 runs the coordinator) and
number of parties, and each its own id (0..N-1, or 'dealer'):

  {ENV_COORDINATOR}=10.0.0.1:7777 {ENV_NUM_PARTIES}=2 {ENV_PARTY_ID}=0 jaxmpc party-demo
  {ENV_COORDINATOR}=10.0.0.1:7777 {ENV_NUM_PARTIES}=2 {ENV_PARTY_ID}=1 jaxmpc party-demo
  {ENV_COORDINATOR}=10.0.0.1:7777 {ENV_NUM_PARTIES}=2 {ENV_PARTY_ID}=dealer jaxmpc party-demo

Timeouts (seconds): {ENV_TIMEOUT} (a wait on peers, default {DEFAULT_TIMEOUT:.0f}),
{ENV_INIT_TIMEOUT} (joining, default {DEFAULT_INIT_TIMEOUT:.0f}), {ENV_HEARTBEAT_TIMEOUT}
(JAX's runtime declares a silent process dead, default {DEFAULT_HEARTBEAT_TIMEOUT}).

examples:
  jaxmpc launch --parties 2 -- party-demo
  jaxmpc launch --parties 3 --port 7777 -- party-demo --steps 5 --check
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``jaxmpc launch`` and ``jaxmpc party-demo`` (called by :mod:`jaxmpc.cli`)."""
    from jaxmpc.cli import _non_negative_int, _positive_int

    p = sub.add_parser(
        "launch",
        help="start N parties and the dealer as processes on this machine",
        description="Run a distributed jaxmpc command with every party and the dealer as separate\n"
        "processes on this machine, joined by JAX's distributed runtime over loopback.",
        epilog=LAUNCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--parties", type=_positive_int, default=2, help="number of parties (>= 2; default 2)")
    p.add_argument("--port", type=_positive_int, default=None, help="coordinator port (default: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="coordinator host (default 127.0.0.1)")
    p.add_argument("--timeout", type=_positive_int, default=None,
                   help=f"seconds a process may wait on its peers (sets {ENV_TIMEOUT})")
    p.add_argument("--grace", type=float, default=30.0,
                   help="after one process fails, seconds to let the others stop by themselves (default 30)")
    p.add_argument("--raw", action="store_true", help="do not prefix output lines with the role")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the jaxmpc command for every process")
    p.set_defaults(func=_launch_checked)

    d = sub.add_parser(
        "party-demo",
        help="one party of a distributed demo: secure product, comparison, training steps",
        description="Run as one party (or the dealer) of a distributed computation: party 0 and\n"
        "party 1 share inputs x and y, the parties compute x*y, [x<y] and relu(x) on shares,\n"
        "then train the 784-128-64-10 MLP for a few steps (party 0 owns the model, each party\n"
        "its own batches), reveal the loss after each step, and send the model back to party 0\n"
        "only. Start it with `jaxmpc launch --parties N -- party-demo`, or on each host with\n"
        f"{ENV_COORDINATOR}, {ENV_NUM_PARTIES} and {ENV_PARTY_ID} set (see docs/distributed.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("--coordinator", default=None, help=f"host:port of the coordinator (default ${ENV_COORDINATOR})")
    d.add_argument("--parties", type=_positive_int, default=None, help=f"number of parties (default ${ENV_NUM_PARTIES})")
    d.add_argument("--party-id", default=None, help=f"0..N-1 or 'dealer' (default ${ENV_PARTY_ID})")
    d.add_argument("--steps", type=_non_negative_int, default=3, help="training steps (default 3; 0: no training)")
    d.add_argument("--repeat", type=_positive_int, default=1,
                   help="run the product/comparison part this many times (default 1)")
    d.add_argument("--batch-size", type=_positive_int, default=64)
    d.add_argument("--activation", choices=("relu", "square"), default="relu")
    d.add_argument("--trunc", choices=("dealer", "local"), default="dealer")
    d.add_argument("--seed", type=int, default=1, help="the demo's one seed (every role derives its keys from it)")
    d.add_argument("--check", action="store_true",
                   help="each party also runs the simulated mode and compares its shares bit for bit (slow)")
    d.add_argument("--simulated", action="store_true", help="run the same demo simulated in this one process")
    d.add_argument("--dump", metavar="DIR", default=None, help="write each process's blocks and their layout to DIR")
    d.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_run_party_demo)


def _launch_checked(args: argparse.Namespace) -> int:
    if args.parties < 2:
        print("jaxmpc launch: error: --parties must be at least 2", file=sys.stderr)
        return EXIT_CONFIG
    return _launch(args)
