"""Time XLA's uint64 matmul against the float64-limb matmul of ``jaxmpc.limbs``.

Each kernel is jitted and run once to compile; then the kernels are called in
turn (interleaved, so background load hits all alike) and the median of
``--runs`` calls is reported. Results are checked bit for bit.

    python benchmarks/limbs_bench.py [--runs 50] [--shapes 64x784x128 ...]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxmpc import limbs, ring  # noqa: E402

DEFAULT_SHAPES = ["64x784x128", "784x64x128", "64x128x64", "64x64x10"]


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        m, k, n = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r} is not MxKxN") from None
    return m, k, n


def time_kernels(kernels: dict, a: jax.Array, b: jax.Array, runs: int) -> dict[str, float]:
    """Median wall time in ms of each kernel, after compilation."""
    outputs = {name: fn(a, b).block_until_ready() for name, fn in kernels.items()}
    first = next(iter(outputs.values()))
    for name, out in outputs.items():
        if not bool(jnp.all(out == first)):
            raise AssertionError(f"{name} disagrees with the reference")
    samples: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(runs):
        for name, fn in kernels.items():
            start = time.perf_counter()
            fn(a, b).block_until_ready()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(ts) for name, ts in samples.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed calls per kernel (default 50)")
    parser.add_argument(
        "--shapes",
        nargs="+",
        type=parse_shape,
        default=[parse_shape(s) for s in DEFAULT_SHAPES],
        help="MxKxN products (a is MxK, b is KxN); default: " + " ".join(DEFAULT_SHAPES),
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    kernels = {
        "uint64 dot": jax.jit(ring.matmul_reference),
        "limbs": jax.jit(limbs.matmul_limbs),
        "matmul (auto)": jax.jit(limbs.matmul),
    }
    cpu = platform.processor() or platform.machine()
    device = jax.devices()[0].platform
    print(f"jax {jax.__version__} on {device} ({cpu}); median of {args.runs} runs, ms")
    header = (
        f"{'M x K x N':>16} {'uint64 dot':>11} {'limbs':>9} {'speed-up':>9} {'auto':>9}  auto path"
    )
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(args.seed)
    for m, k, n in args.shapes:
        a = jnp.asarray(rng.integers(0, 2**64, size=(m, k), dtype=np.uint64))
        b = jnp.asarray(rng.integers(0, 2**64, size=(k, n), dtype=np.uint64))
        t = time_kernels(kernels, a, b, args.runs)
        path = "limbs" if limbs.use_limbs(a.shape, b.shape) else "uint64 dot"
        print(f"{f'{m}x{k}x{n}':>16} {t['uint64 dot']:11.3f} {t['limbs']:9.3f} "
              f"{t['uint64 dot'] / t['limbs']:8.2f}x {t['matmul (auto)']:9.3f}  {path}")


if __name__ == "__main__":
    main()
