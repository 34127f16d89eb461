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

Modules
-------

* :mod:`~jaxmpc.distributed.runtime`: settings (``JAXMPC_*``), joining the
  runtime, meshes, :class:`Runtime`, :class:`DistributedError`;
* :mod:`~jaxmpc.distributed.failure`: exit codes, the watchdog, :func:`fail`;
* :mod:`~jaxmpc.distributed.arrays`: global share arrays from process-local
  blocks, :func:`share`, :func:`share_tree`, :func:`reveal`;
* :mod:`~jaxmpc.distributed.feed`: intercepting :mod:`jaxmpc.dealer` (the
  dealer's feed);
* :mod:`~jaxmpc.distributed.secure_jit`: :func:`secure_jit`;
* :mod:`~jaxmpc.distributed.collectives`: :func:`audit_collectives`;
* :mod:`~jaxmpc.distributed.demo` / :mod:`~jaxmpc.distributed.party_demo`:
  ``jaxmpc party-demo`` and its simulated reference;
* :mod:`~jaxmpc.distributed.launch`: ``jaxmpc launch``;
* :mod:`~jaxmpc.distributed.cli`: :func:`add_parser` for :mod:`jaxmpc.cli`.
"""

from __future__ import annotations

from jaxmpc.distributed.arrays import (
    _concat_rows, _open_program, describe_local, local_block, placeholder, reveal, share, share_tree,
)
from jaxmpc.distributed.cli import add_parser
from jaxmpc.distributed.collectives import audit_collectives
from jaxmpc.distributed.demo import (
    DEALER_KEYS, DemoConfig, _batch_step, demo_data, demo_inputs, demo_keys, demo_secure_ops, demo_train_config,
    simulate,
)
from jaxmpc.distributed.failure import EXIT_CONFIG, EXIT_PEER_FAILURE, WATCHDOG, fail
from jaxmpc.distributed.feed import _DealerTap, feed_width, recorded
from jaxmpc.distributed.launch import DISTRIBUTED_COMMANDS, LAUNCH_EPILOG
from jaxmpc.distributed.party_demo import _named_shared, _named_shared_plain, run_demo
from jaxmpc.distributed.runtime import (
    DEALER, DEFAULT_FIRST_CALL_TIMEOUT, DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_INIT_TIMEOUT, DEFAULT_TIMEOUT,
    ENV_COORDINATOR, ENV_HEARTBEAT_TIMEOUT, ENV_INIT_TIMEOUT, ENV_NUM_PARTIES, ENV_PARTY_ID, ENV_TIMEOUT, NODE,
    PARTY, DistributedError, Runtime, free_port, initialize, parse_address, parse_role, reset, runtime,
    shutdown, single_process,
)
from jaxmpc.distributed.secure_jit import SecureFunction, secure_jit

__all__ = [
    # runtime
    "PARTY", "NODE", "DEALER", "ENV_COORDINATOR", "ENV_NUM_PARTIES", "ENV_PARTY_ID", "ENV_TIMEOUT",
    "ENV_INIT_TIMEOUT", "ENV_HEARTBEAT_TIMEOUT", "DEFAULT_TIMEOUT", "DEFAULT_FIRST_CALL_TIMEOUT",
    "DEFAULT_INIT_TIMEOUT", "DEFAULT_HEARTBEAT_TIMEOUT", "DistributedError", "Runtime", "runtime",
    "initialize", "single_process", "shutdown", "reset", "parse_role", "parse_address", "free_port",
    # failure
    "EXIT_PEER_FAILURE", "EXIT_CONFIG", "WATCHDOG", "fail",
    # values
    "placeholder", "local_block", "describe_local", "share", "share_tree", "reveal",
    # secure_jit
    "feed_width", "recorded", "SecureFunction", "secure_jit", "audit_collectives",
    # the demo and the CLI
    "DemoConfig", "DEALER_KEYS", "demo_train_config", "demo_keys", "demo_inputs", "demo_secure_ops",
    "demo_data", "simulate", "run_demo", "DISTRIBUTED_COMMANDS", "LAUNCH_EPILOG", "add_parser",
    # internals that tests/test_distributed.py reaches for
    "_DealerTap", "_concat_rows", "_open_program", "_batch_step", "_named_shared", "_named_shared_plain",
]
