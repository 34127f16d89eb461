"""The report: derived figures (per-op breakdown of a step, relu/square
ratios, targets), the human table, the device and source revision, and the
bar chart (``--plot``)."""

from __future__ import annotations

import os
import platform
from typing import Any, Sequence

import jax
import numpy as np

from jaxmpc.bench.e2e import step_composition
from jaxmpc.bench.timing import MIB


#: Targets to report against (benchmarks, not pass/fail tests).
TARGETS = {
    "train_step/relu/2p": {"median_ms": 15.0, "ratio": 40.0},
    "inference/relu/2p": {"median_ms": 5.0},
}


def breakdowns(results: Sequence[dict]) -> dict[str, dict]:
    """For each measured train step / inference whose secure ops all have a
    per-op benchmark in ``results``: those ops' timings, largest first.

    Uses the median CPU time per call where every record has one (it is not
    inflated by other processes' load, so parts and whole stay comparable on
    a busy machine), else the median wall time."""
    by_name = {r["name"]: r for r in results}
    metric = "cpu_median_ms" if all(r.get("cpu_median_ms") for r in results if r["group"] != "memory") else "median_ms"
    out = {}
    for r in results:
        if r["group"] != "e2e" or r["op"] not in ("train_step", "inference"):
            continue
        _, act, p = r["name"].split("/")
        comps, total, missing = [], 0.0, []
        for op, count in step_composition(r["op"], act):
            m = by_name.get(f"{op}/{p}")
            if m is None:
                missing.append(op)
                continue
            # several entries may share an op (matmul/64x64x10 twice): merge
            ms = count * m[metric]
            for cmp in comps:
                if cmp["name"] == m["name"]:
                    cmp["count"] += count
                    cmp["ms"] += ms
                    if cmp["dealer_ms"] is not None:
                        cmp["dealer_ms"] += count * m["dealer_ms"]
                    break
            else:
                d = m.get("dealer_ms")
                comps.append({"name": m["name"], "count": count, "ms": ms, "dealer_ms": None if d is None else count * d})
            total += ms
        if not comps or missing:
            continue
        comps.sort(key=lambda c: -c["ms"])
        out[r["name"]] = {
            "metric": metric, "measured_ms": r[metric], "sum_of_ops_ms": total,
            "other_ms": r[metric] - total, "ops": comps,
        }
    return out


def relu_vs_square(results: Sequence[dict], metric: str = "median_ms") -> dict[str, float]:
    """``{"train_step/2p": relu time / square time, ...}`` by ``metric``."""
    by_name = {r["name"]: r for r in results}
    out = {}
    for r in results:
        parts = r["name"].split("/")
        if r["group"] == "e2e" and len(parts) == 3 and parts[1] == "relu":
            sq = by_name.get(f"{parts[0]}/square/{parts[2]}")
            if sq and r.get(metric) and sq.get(metric):
                out[f"{parts[0]}/{parts[2]}"] = r[metric] / sq[metric]
    return out


def target_report(results: Sequence[dict]) -> list[dict]:
    by_name = {r["name"]: r for r in results}
    out = []
    for name, goals in TARGETS.items():
        r = by_name.get(name)
        if r is None:
            continue
        for metric, limit in goals.items():
            value = r.get(metric)
            if value is None:
                continue
            out.append({"name": name, "metric": metric, "value": value, "target": limit, "met": value <= limit})
    return out


def _fmt(v: Any, spec: str = ".3g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if spec == "ms":
            return f"{v:.3f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:.0f}"
        return format(v, spec)
    return str(v)


def format_table(results: Sequence[dict]) -> str:
    cols = [
        ("benchmark", lambda r: r["name"], "<"),
        ("median", lambda r: _fmt(r["median_ms"], "ms"), ">"),
        ("min", lambda r: _fmt(r["min_ms"], "ms"), ">"),
        ("max", lambda r: _fmt(r["max_ms"], "ms"), ">"),
        ("cpu", lambda r: _fmt(r.get("cpu_median_ms"), "ms"), ">"),
        ("plain", lambda r: _fmt(r.get("plain_median_ms"), "ms"), ">"),
        ("ratio", lambda r: _fmt(r.get("ratio"), ".0f"), ">"),
        ("dealer", lambda r: _fmt(r.get("dealer_ms"), "ms"), ">"),
        ("online", lambda r: _fmt(r.get("online_ms"), "ms"), ">"),
        ("compile s", lambda r: _fmt(r.get("compile_s"), ".1f"), ">"),
        ("rounds", lambda r: str(r["rounds"]), ">"),
        ("MiB/party", lambda r: f"{r['bytes'] / MIB:.3f}", ">"),
        ("LAN est", lambda r: _fmt(r.get("lan_est_ms"), "ms"), ">"),
        ("WAN est", lambda r: _fmt(r.get("wan_est_ms"), "ms"), ">"),
    ]
    rows = [[f(r) for _, f, _ in cols] for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, (h, _, _) in enumerate(cols)]

    def line(cells):
        return "  ".join(c.ljust(w) if a == "<" else c.rjust(w) for c, w, (_, _, a) in zip(cells, widths, cols))

    head = line([h for h, _, _ in cols])
    return "\n".join([head, "-" * len(head)] + [line(row) for row in rows])


def format_report(report: dict) -> str:
    res = report["results"]
    lines = [
        f"jaxmpc bench on {report['device']} (jax {report['jax']}, {report['backend']}); "
        f"times in ms, median/min/max of {report['repeats']} runs after compilation",
        "",
        format_table(res),
        "",
        "cpu: median process CPU time per call (all threads; robust to other load). "
        "plain: the same computation in plain JAX float32; ratio = secure / plain median. dealer: the "
        "correlated randomness alone; online: the computation with it precomputed. LAN/WAN est: "
        "median + rounds * RTT + bytes/party / bandwidth (LAN 10 Gbit/s, 0.2 ms; WAN 100 Mbit/s, "
        "40 ms), an estimate.",
    ]
    for r in res:
        if "rss_mib_per_epoch" in r:
            per = ", ".join(f"{v:.0f}" for v in r["rss_mib_per_epoch"])
            lines += ["", f"memory ({r['name']}, {r['epochs']} epochs x {r['batches_per_epoch']} batches): "
                      f"RSS after each epoch {per} MiB; growth {r['rss_growth_mib']:+.1f} MiB "
                      f"({'flat' if r['flat'] else 'NOT flat'}); process peak {r['peak_rss_mib']:.0f} MiB"]
            if r.get("device_memory"):
                lines.append(f"  device memory: {r['device_memory']}")
    for name, b in report["breakdown"].items():
        what = "CPU time" if b["metric"] == "cpu_median_ms" else "wall time"
        lines += ["", f"where the time goes in {name}: {b['measured_ms']:.2f} ms {what} (median), split by the "
                      f"per-op benchmarks of its secure ops (each a separate jit call; dealer = wall time alone):"]
        for c in b["ops"]:
            share = 100 * c["ms"] / b["measured_ms"]
            dealer_part = "" if c["dealer_ms"] is None else f"  (dealer alone {c['dealer_ms']:.3f} ms)"
            lines.append(f"  {c['name']:<28} x{c['count']}  {c['ms']:8.3f} ms  {share:5.1f}%{dealer_part}")
        lines.append(f"  {'rest (measured - sum)':<28}     {b['other_ms']:8.3f} ms  {100 * b['other_ms'] / b['measured_ms']:5.1f}%"
                     "  (carrier conversions, bias adds, key splits; minus what fusion saves)")
    if report["relu_vs_square"]:
        lines += ["", "relu / square time: " + ", ".join(f"{k} {v:.2f}x" for k, v in report["relu_vs_square"].items())]
        if report.get("relu_vs_square_cpu"):
            lines.append("  by CPU time: " + ", ".join(f"{k} {v:.2f}x" for k, v in report["relu_vs_square_cpu"].items()))
    for t in report["targets"]:
        lines.append(
            f"target {t['name']} {t['metric']} <= {t['target']:g}: {t['value']:.2f} "
            f"({'met' if t['met'] else 'NOT met'})"
        )
    for n in report["notes"]:
        lines.append(f"note: {n}")
    for r in res:
        if r.get("note"):
            lines.append(f"note: {r['name']}: {r['note']}")
    return "\n".join(lines)


def device_description() -> str:
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        model = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        model = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        return f"cpu: {model}, {os.cpu_count()} cores"
    return f"{dev.platform}: {dev.device_kind} (x{jax.device_count()})"


def source_revision() -> str | None:
    """``git`` commit of the source tree being measured (``+dirty`` with local
    changes), or None outside a git checkout."""
    import subprocess

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # jaxmpc/
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = [r for r in report["results"] if r["group"] != "memory"]
    names = [r["name"] for r in res]
    y = np.arange(len(res))
    fig, ax = plt.subplots(figsize=(11, 0.28 * len(res) + 1.6))
    med = np.array([r["median_ms"] for r in res])
    err = np.array([[m - r["min_ms"], r["max_ms"] - m] for m, r in zip(med, res)]).T
    ax.barh(y + 0.2, med, 0.4, xerr=err, label="secure (median, min-max)", color="tab:blue")
    online = np.array([r.get("online_ms") or 0.0 for r in res])
    ax.barh(y + 0.2, online, 0.4, color="none", edgecolor="black", hatch="//", label="online part")
    plain = np.array([r.get("plain_median_ms") or 0.0 for r in res])
    ax.barh(y - 0.2, plain, 0.4, label="plain JAX float32", color="tab:orange")
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms (log scale)")
    ax.set_title(f"jaxmpc bench: {report['device']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
