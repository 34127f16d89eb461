"""Accuracy and cost of jaxmpc's smooth-function approximations (exp, sigmoid,
reciprocal, inv_sqrt, log, softmax), against NumPy.

For each function: a dense grid over its documented input range is encoded
with ``--frac-bits`` fractional bits, secret-shared among ``--parties``
parties, evaluated under ``jax.jit``, revealed, and compared with NumPy's
float64 value *at the encoded input* (so the input's own rounding is not
counted as approximation error). Printed as a markdown table:

* max abs error, and the same in units of the last place (``2**-f``);
* max relative error, over the grid points where ``|f(x)| >= 1/2`` (there one
  unit in the last place is at most ``2**(1-f)`` relative; below, the output
  resolution rather than the method dominates relative error);
* rounds and bytes sent per element per party (``jaxmpc.cost.cost_of``).

``--crypten`` adds CrypTen's default methods (limit-method exp with 8
squarings; 10 Newton iterations for the reciprocal from ``3 exp(1-2x) +
0.003``; 3 Newton iterations for inv_sqrt from ``2.2 exp(-(x/2+0.2)) + 0.2 -
x/1024``; 2 order-8 Householder iterations for log from ``x/120 -
20 exp(-2x-1) + 3``; sigmoid from the sign, exp (9 squarings) and 3 Newton
iterations from 0.75), rebuilt on the same jaxmpc primitives and dealer
truncation, side by side with jaxmpc's on ranges where CrypTen's methods
work in this fixed point (reciprocal and inv_sqrt on [1, 64], log on
CrypTen's documented [1e-4, 250]).

Example::

    python benchmarks/approx_errors.py --points 2000 --parties 2 --crypten
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from typing import Callable

import numpy as np


@dataclasses.dataclass
class Spec:
    name: str
    fn: Callable  # (x: SharedTensor, key, trunc) -> SharedTensor
    ref: Callable[[np.ndarray], np.ndarray]
    lo: float
    hi: float
    geometric: bool
    domain: str  # human-readable range
    cmp: tuple[float, float, str] | None = None  # range for the CrypTen comparison


def specs(A, f: int) -> list[Spec]:
    hi_exp = A.exp_max_input(f)
    return [
        Spec("exp", lambda x, k, t: A.exp(x, k, trunc=t), np.exp, -16.0, hi_exp, False, f"[-16, {hi_exp:g}]",
             (-16.0, hi_exp, f"[-16, {hi_exp:g}]")),
        Spec(
            "exp (squaring, 8)",
            lambda x, k, t: A.exp(x, k, 8, method="squaring", trunc=t),
            np.exp, -16.0, 6.0, False, "[-16, 6]",
        ),
        Spec("sigmoid", lambda x, k, t: A.sigmoid(x, k, trunc=t), lambda v: 1 / (1 + np.exp(-v)), -16.0, 16.0, False,
             "[-16, 16]", (-16.0, 16.0, "[-16, 16]")),
        Spec("reciprocal", lambda x, k, t: A.reciprocal(x, k, trunc=t), lambda v: 1 / v, 2.0**-8, 2.0**8, True,
             "[2^-8, 2^8]", (1.0, 64.0, "[1, 64]")),
        Spec("inv_sqrt", lambda x, k, t: A.inv_sqrt(x, k, trunc=t), lambda v: v**-0.5, 2.0**-8, 2.0**8, True,
             "[2^-8, 2^8]", (1.0, 64.0, "[1, 64]")),
        Spec("log", lambda x, k, t: A.log(x, k, trunc=t), np.log, 2.0**-16, 2.0**8, True, "[2^-16, 2^8]",
             (1e-4, 250.0, "[1e-4, 250]")),
    ]


def crypten_specs(A, f: int) -> list[Spec]:
    """CrypTen's default approximations on jaxmpc primitives (dealer truncation)."""
    import jax

    from jaxmpc.protocols import arithmetic as ar
    from jaxmpc.protocols import comparison as cmp_

    def keys(key):
        i = [0]

        def nxt():
            i[0] += 1
            return jax.random.fold_in(key, i[0])

        return nxt

    def c_exp(x, key, t, iters=8):
        k = keys(key)
        y = ar.mul_public(x, 1.0 / 2**iters, k(), trunc=t) + 1.0
        for _ in range(iters):
            y = ar.square(y, k(), trunc=t)
        return y

    def c_recip(x, key, t, iters=10):
        k = keys(key)
        y = c_exp(1.0 - x * 2, k(), t) * 3 + 0.003
        for _ in range(iters):
            y = y * 2 - ar.mul(ar.square(y, k(), trunc=t), x, k(), trunc=t)
        return y

    def c_inv_sqrt(x, key, t):
        k = keys(key)
        y = c_exp(-(ar.mul_public(x, 0.5, k(), trunc=t) + 0.2), k(), t)
        y = ar.mul_public(y, 2.2, k(), trunc=t) + 0.2 - ar.mul_public(x, 1 / 1024, k(), trunc=t)
        for _ in range(3):
            xyy = ar.mul(x, ar.square(y, k(), trunc=t), k(), trunc=t)
            y = ar.mul_public(ar.mul(y, 3.0 - xyy, k(), trunc=t), 0.5, k(), trunc=t)
        return y

    def powers(h, order, k, t):
        """h, h^2, ..., h^order in ceil(log2 order) multiplication levels."""
        import jaxmpc.tensor as T

        pw = {1: h}
        have = 1
        while have < order:
            todo = [j for j in range(have + 1, min(2 * have, order) + 1)]
            lhs = T.stack([pw[have] for _ in todo])
            rhs = T.stack([pw[j - have] for j in todo])
            prod = ar.mul(lhs, rhs, k(), trunc=t)
            for i, j in enumerate(todo):
                pw[j] = prod[i]
            have = todo[-1]
        return [pw[j] for j in range(1, order + 1)]

    def c_log(x, key, t):
        k = keys(key)
        y = ar.mul_public(x, 1 / 120, k(), trunc=t) - c_exp(-(x * 2 + 1.0), k(), t) * 20 + 3.0
        for _ in range(2):
            h = 1.0 - ar.mul(x, c_exp(-y, k(), t), k(), trunc=t)
            pw = powers(h, 8, k, t)
            s = pw[0]
            for i in range(1, 8):
                s = s + ar.mul_public(pw[i], 1.0 / (i + 1), k(), trunc=t)
            y = y - s
        return y

    def c_sigmoid(x, key, t):
        from jaxmpc import tensor as T

        k = keys(key)
        ltz = cmp_.ltz(x, k())
        pos = ar.mul(1 - ltz * 2, x, k(), trunc=t)  # |x|: a 0/1-integer factor needs no truncation
        den = c_exp(-pos, k(), t, iters=9) + 1.0
        y = T.from_public(np.full(x.shape, 0.75), x.n_parties, x.frac_bits)
        for _ in range(3):
            y = y * 2 - ar.mul(ar.square(y, k(), trunc=t), den, k(), trunc=t)
        return y + ar.mul(ltz, 1.0 - y * 2, k(), trunc=t)  # ltz ? 1 - y : y

    return [
        Spec("exp", lambda x, k, t: c_exp(x, k, t), np.exp, -16.0, A.exp_max_input(f), False, ""),
        Spec("sigmoid", lambda x, k, t: c_sigmoid(x, k, t), lambda v: 1 / (1 + np.exp(-v)), -16.0, 16.0, False, ""),
        Spec("reciprocal", lambda x, k, t: c_recip(x, k, t), lambda v: 1 / v, 2.0**-8, 2.0**8, True, ""),
        Spec("inv_sqrt", lambda x, k, t: c_inv_sqrt(x, k, t), lambda v: v**-0.5, 2.0**-8, 2.0**8, True, ""),
        Spec("log", lambda x, k, t: c_log(x, k, t), np.log, 2.0**-16, 2.0**8, True, ""),
    ]


def grid(spec: Spec, points: int, f: int) -> np.ndarray:
    g = np.geomspace(spec.lo, spec.hi, points) if spec.geometric else np.linspace(spec.lo, spec.hi, points)
    return np.round(g * 2.0**f) / 2.0**f  # the encoded inputs


def errors(y: np.ndarray, ref: np.ndarray, f: int) -> dict:
    err = np.abs(y - ref)
    big = np.abs(ref) >= 1 / 2
    return dict(
        abs=float(err.max()),
        ulps=float(err.max() * 2.0**f),
        rel=float((err[big] / np.abs(ref[big])).max()) if big.any() else float("nan"),
        worst_x=None,
    )


def measure(spec: Spec, args, key_seed: int = 1):
    import jax
    import jax.numpy as jnp

    from jaxmpc import cost, tensor

    x = grid(spec, args.points, args.frac_bits)
    xs = tensor.share(jnp.asarray(x), jax.random.key(0), args.parties, args.frac_bits)
    key = jax.random.key(key_seed)
    t0 = time.perf_counter()
    y = np.asarray(tensor.reveal(jax.jit(lambda a, k: spec.fn(a, k, args.trunc))(xs, key)))
    wall = time.perf_counter() - t0
    c = cost.cost_of(lambda a, k: spec.fn(a, k, args.trunc), xs, key)
    ref = spec.ref(x)
    e = errors(y, ref, args.frac_bits)
    e["worst_x"] = float(x[np.argmax(np.abs(y - ref))])
    e.update(rounds=c.rounds, bytes=c.bytes_per_party / x.size, seconds=wall)
    return e


def measure_softmax(A, args, seed: int = 1):
    import jax
    import jax.numpy as jnp

    from jaxmpc import cost, tensor

    rows = max(args.points // 10, 1)
    rng = np.random.default_rng(seed)
    # logits of growing spread: std 0.5 .. 8, so rows range from flat to one-hot
    scale = np.linspace(0.5, 8.0, rows)[:, None]
    x = np.round(rng.standard_normal((rows, 10)) * scale * 2.0**args.frac_bits) / 2.0**args.frac_bits
    xs = tensor.share(jnp.asarray(x), jax.random.key(0), args.parties, args.frac_bits)
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    y = np.asarray(tensor.reveal(jax.jit(lambda a, k: A.softmax(a, k, trunc=args.trunc))(xs, key)))
    wall = time.perf_counter() - t0
    c = cost.cost_of(lambda a, k: A.softmax(a, k, trunc=args.trunc), xs, key)
    ez = np.exp(x - x.max(-1, keepdims=True))
    ref = ez / ez.sum(-1, keepdims=True)
    e = errors(y, ref, args.frac_bits)
    e.update(rounds=c.rounds, bytes=c.bytes_per_party / x.size, seconds=wall, worst_x=float("nan"))
    return e


def table(rows: list[tuple[str, str, dict]], f: int) -> str:
    out = [
        "| function | input range | max abs error | (units of 2^-%d) | max rel error (\\|f\\| >= 1/2) | rounds | bytes/elt/party |" % f,
        "|---|---|---|---|---|---|---|",
    ]
    for name, dom, e in rows:
        out.append(
            f"| {name} | {dom} | {e['abs']:.2e} | {e['ulps']:.1f} | {e['rel']:.2e} | {e['rounds']} | {e['bytes']:,.0f} |"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=2000, help="grid points per function (default 2000)")
    ap.add_argument("--parties", type=int, default=2, help="number of parties (default 2)")
    ap.add_argument("--frac-bits", type=int, default=16, help="fixed-point fractional bits (default 16)")
    ap.add_argument("--trunc", choices=("dealer", "local"), default="dealer", help="truncation method (default dealer)")
    ap.add_argument("--only", nargs="*", default=None, help="subset of functions, e.g. --only exp sigmoid softmax")
    ap.add_argument("--crypten", action="store_true", help="also measure CrypTen's default methods on the same primitives")
    ap.add_argument("--no-softmax", action="store_true", help="skip softmax (its max tournament is slow to compile)")
    args = ap.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    from jaxmpc.protocols import approx as A

    want = set(args.only) if args.only else None
    rows = []
    for s in specs(A, args.frac_bits):
        if want is None or s.name.split(" ")[0] in want:
            e = measure(s, args)
            rows.append((s.name, s.domain, e))
            print(f"# {s.name}: done in {e['seconds']:.1f}s (worst at x={e['worst_x']:.6g})", file=sys.stderr)
    if not args.no_softmax and (want is None or "softmax" in want):
        e = measure_softmax(A, args)
        rows.append(("softmax (k=10)", "logits N(0, s^2), s in [0.5, 8]", e))
        print(f"# softmax: done in {e['seconds']:.1f}s", file=sys.stderr)
    cores = os.cpu_count()
    print(
        f"jaxmpc approximations, {args.parties} parties, frac_bits={args.frac_bits}, trunc={args.trunc}, "
        f"{args.points} points per function; jax {jax.__version__}, {platform.machine()}, {cores} cores\n"
    )
    print(table(rows, args.frac_bits))
    if args.crypten:
        ours = {s.name: s for s in specs(A, args.frac_bits)}
        crows = []
        for c in crypten_specs(A, args.frac_bits):
            if want is not None and c.name not in want:
                continue
            o = ours[c.name]
            lo, hi, dom = o.cmp
            for label, s in (("jaxmpc", o), ("CrypTen method", c)):
                s = dataclasses.replace(s, lo=lo, hi=hi)
                e = measure(s, args)
                crows.append((f"{c.name}, {label}", dom, e))
                print(f"# {label} {c.name}: done in {e['seconds']:.1f}s", file=sys.stderr)
        print("\njaxmpc vs CrypTen's default methods rebuilt on the same primitives (dealer truncation):\n")
        print(table(crows, args.frac_bits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
