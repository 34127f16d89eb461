"""``jaxmpc launch``: every party and the dealer as processes on this machine.

Starts the ``n + 1`` processes with the ``JAXMPC_*`` environment set, prefixes
their output with the role, and when one fails, gives the others a grace
period to stop by themselves before killing them.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

from jaxmpc.distributed.failure import EXIT_CONFIG, EXIT_PEER_FAILURE
from jaxmpc.distributed.runtime import (
    DEALER, DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_INIT_TIMEOUT, DEFAULT_TIMEOUT, ENV_COORDINATOR,
    ENV_HEARTBEAT_TIMEOUT, ENV_INIT_TIMEOUT, ENV_NUM_PARTIES, ENV_PARTY_ID, ENV_TIMEOUT, DistributedError,
    _check_port_free, free_port, parse_address,
)

#: subcommands that run as one role of a distributed computation (what `jaxmpc launch` is for)
DISTRIBUTED_COMMANDS = ("party-demo",)


def _launch(args: argparse.Namespace) -> int:
    """Run ``args.command`` as every party and the dealer; the first failure's exit code."""
    if args.parties < 2:
        print("jaxmpc launch: error: --parties must be at least 2", file=sys.stderr)
        return EXIT_CONFIG
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
