"""``jaxmpc bench``'s command line: the argument parser, :func:`run` (the
selected benchmarks, one report) and :func:`main` (print, write, plot)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from typing import Callable, Sequence

import jax

from jaxmpc.bench.netmodel import NETWORKS
from jaxmpc.bench.report import (
    breakdowns,
    device_description,
    format_report,
    plot,
    relu_vs_square,
    source_revision,
    target_report,
)
from jaxmpc.bench.suite import all_cases, select
from jaxmpc.bench.timing import run_case, run_memory
from jaxmpc.cli import _positive_int


DEFAULT_REPEATS = 20
QUICK_REPEATS = 3
MEMORY_EPOCHS, MEMORY_EPOCHS_QUICK = 5, 2


def run(
    *,
    parties: Sequence[int] = (2, 3),
    repeats: int | None = None,
    quick: bool = False,
    only: Sequence[str] | None = None,
    dealer_split: bool = True,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> dict:
    """Run the selected benchmarks and return the report (what ``--json`` prints)."""
    repeats = repeats or (QUICK_REPEATS if quick else DEFAULT_REPEATS)
    cases = select(all_cases(parties), only, quick)
    notes = []
    results = []
    t_start = time.perf_counter()
    for i, case in enumerate(cases, 1):
        tag = f"[{i}/{len(cases)}] {case.name}"
        if case.skip:
            log(f"{tag}: {case.skip}")
            notes.append(f"{case.name}: {case.skip}")
            continue
        say = lambda m, tag=tag: log(f"{tag}: {m}")  # noqa: E731
        t0 = time.perf_counter()
        if case.group == "memory":
            rec = run_memory(case, MEMORY_EPOCHS_QUICK if quick else MEMORY_EPOCHS, log=say)
        else:
            rec = run_case(case, repeats, dealer_split=dealer_split, log=say)
        results.append(rec)
        extra = f", plain {rec['plain_median_ms']:.3f} ms" if rec.get("plain_median_ms") else ""
        log(f"{tag}: {rec['median_ms']:.3f} ms median{extra} (compile {rec['compile_s']:.1f} s, "
            f"total {time.perf_counter() - t0:.1f} s)")
        if rec.get("note"):
            log(f"{tag}: note: {rec['note']}")
    return {
        "device": device_description(),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "revision": source_revision(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "repeats": repeats,
        "quick": quick,
        "dealer_split": dealer_split,
        "parties": list(parties),
        "network_model": NETWORKS,
        "results": results,
        "breakdown": breakdowns(results),
        "relu_vs_square": relu_vs_square(results),
        "relu_vs_square_cpu": relu_vs_square(results, "cpu_median_ms"),
        "targets": target_report(results),
        "notes": notes,
        "seconds": time.perf_counter() - t_start,
    }


def _parties(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        try:
            n = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected party counts like 2,3, got {text!r}") from None
        if not 2 <= n <= 16:
            raise argparse.ArgumentTypeError(f"party counts must be between 2 and 16, got {n}")
        if n not in out:
            out.append(n)
    return out


def _patterns(text: str) -> list[str]:
    pats = [p.strip() for p in text.split(",") if p.strip()]
    if not pats:
        raise argparse.ArgumentTypeError("--only needs at least one name pattern")
    return pats


EPILOG = """\
examples:
  jaxmpc bench                           # everything, 2 and 3 parties (tens of minutes on 2 cores)
  jaxmpc bench --quick                   # a small subset, 3 repeats (CI smoke run)
  jaxmpc bench --only eval_step          # encrypted evaluation: not run unless named
  jaxmpc bench --only 'matmul/*' --parties 2
  jaxmpc bench --only train_step,inference --json --plot bench.png
  jaxmpc bench --list

--only takes comma-separated patterns matched against names such as
matmul/64x784x128/2p, relu/64x128/3p, train_step/relu/2p: globs (*, ?, [..]),
or, without a glob character, whole /-separated parts of a name: "relu" selects
relu/64x128/2p and train_step/relu/2p but not mul_bit/..., "mul/64x10" selects
mul/64x10/2p but not matmul/....
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="time the protocols and secure training/inference against plain JAX",
        description="Benchmarks on the default JAX backend (CPU, or GPU when present): run time after "
        "compilation (median, min, max), compile time, plain JAX float32 twin, the dealer's share, "
        "rounds and bytes with a LAN/WAN estimate, and memory over a short training run. "
        "Progress goes to stderr.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repeats", type=_positive_int, default=None,
                   help=f"timed runs per benchmark (default {DEFAULT_REPEATS}; {QUICK_REPEATS} with --quick)")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_REPEATS} repeats, a small subset (unless --only), 2 parties (unless --parties), "
                   "no dealer split (unless --dealer-split): for CI")
    p.add_argument("--only", type=_patterns, default=None, metavar="PATTERN[,PATTERN...]",
                   help="run only the benchmarks whose names match (see below)")
    p.add_argument("--parties", type=_parties, default=None, metavar="N[,N...]",
                   help="party counts (default 2,3; 2 with --quick)")
    p.add_argument("--dealer-split", action=argparse.BooleanOptionalAction, default=None,
                   help="time the dealer alone and the online phase with precomputed randomness "
                   "(two more compilations per benchmark; default: on, off with --quick)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on the last line of stdout")
    p.add_argument("--output", metavar="PATH", default=None, help="also write the JSON report to PATH")
    p.add_argument("--plot", metavar="PATH", default=None, help="bar chart of the timings (needs matplotlib)")
    p.add_argument("--list", action="store_true", help="list the benchmark names and exit")
    p.set_defaults(func=main)


def _check_writable(path: str, what: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"{what} {path!r}: directory {directory!r} does not exist")


def main(args: argparse.Namespace) -> int:
    parties = args.parties or ([2] if args.quick else [2, 3])
    if args.list:
        for c in select(all_cases(parties), args.only, args.quick):
            print(c.name + (f"  ({c.skip})" if c.skip else ""))
        return 0
    if args.plot:
        _check_writable(args.plot, "--plot")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise RuntimeError("--plot needs matplotlib: pip install 'jaxmpc[bench]'") from None
    if args.output:
        _check_writable(args.output, "--output")
    split = (not args.quick) if args.dealer_split is None else args.dealer_split
    report = run(parties=parties, repeats=args.repeats, quick=args.quick, only=args.only, dealer_split=split)
    print(format_report(report), flush=True)
    text = json.dumps(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(json.dumps(report, indent=1) + "\n")
        print(f"report written to {args.output}", file=sys.stderr)
    if args.plot:
        plot(report, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    if args.json:
        print(text, flush=True)
    return 0
