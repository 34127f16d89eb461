"""The distributed runtime: settings from the environment, joining JAX's
distributed runtime (one process per party plus the dealer), the meshes.

:func:`initialize` joins a multi-process computation, :func:`single_process`
runs every party and the dealer in this process (one device each);
:func:`runtime` returns whichever was set up.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmpc import spmd
from jaxmpc.distributed.failure import WATCHDOG, _waiting

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


class DistributedError(RuntimeError):
    """A configuration error of the distributed runtime (address, port, party id, mesh)."""


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
