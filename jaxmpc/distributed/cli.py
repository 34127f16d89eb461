"""The ``jaxmpc launch`` and ``jaxmpc party-demo`` subcommands (:func:`add_parser`)."""

from __future__ import annotations

import argparse

from jaxmpc.distributed.launch import LAUNCH_EPILOG, _launch
from jaxmpc.distributed.party_demo import _run_party_demo
from jaxmpc.distributed.runtime import ENV_COORDINATOR, ENV_NUM_PARTIES, ENV_PARTY_ID, ENV_TIMEOUT

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
    p.set_defaults(func=_launch)

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
