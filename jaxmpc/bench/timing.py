"""The measuring: compile time, interleaved wall and CPU time (medians, min,
max) of the secure program, its plain twin and the dealer/online split
(:func:`run_case`), and memory over a short training run (:func:`run_memory`).
Each returns the benchmark's JSON record."""

from __future__ import annotations

import gc
import os
import resource
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxmpc import cost, tensor
from jaxmpc.bench.cases import Case, _key
from jaxmpc.bench.dealer_split import dealer_inputs, dealer_program, online_program, random_words, trace_cost_and_dealer
from jaxmpc.bench.netmodel import estimates_ms

MIB = 2**20
MEMORY_BATCHES = 10


def _compile(fn: Callable, args: tuple, **jit_kwargs):
    """Trace, lower and compile a fresh jit of ``fn`` (no cache hit): (executable, seconds)."""
    t0 = time.perf_counter()
    compiled = jax.jit(lambda *a: fn(*a), **jit_kwargs).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def time_interleaved(
    programs: dict[str, tuple[Callable, tuple]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall times and process CPU times (all threads) in ms of each compiled
    program: two warm-up calls each, then ``repeats`` rounds calling every
    program once (interleaved).

    CPU time is what the call cost the machine; unlike wall time it hardly
    grows when other processes compete for the cores (on an idle machine,
    wall ~ CPU / cores used)."""
    for _ in range(2):
        for f, a in programs.values():
            jax.block_until_ready(f(*a))
    wall: dict[str, list[float]] = {k: [] for k in programs}
    cpu: dict[str, list[float]] = {k: [] for k in programs}
    for _ in range(repeats):
        for k, (f, a) in programs.items():
            c0, t0 = time.process_time(), time.perf_counter()
            jax.block_until_ready(f(*a))
            wall[k].append((time.perf_counter() - t0) * 1e3)
            cpu[k].append((time.process_time() - c0) * 1e3)
    return wall, cpu


def _stats(samples: list[float]) -> tuple[float, float, float]:
    return statistics.median(samples), min(samples), max(samples)


def run_case(case: Case, repeats: int, *, dealer_split: bool = True, log: Callable[[str], None]) -> dict[str, Any]:
    """Compile and time one benchmark; returns its JSON record."""
    built = case.build()
    op, _, rest = case.name.partition("/")
    rec: dict[str, Any] = {"name": case.name, "group": case.group, "op": op, "parties": case.parties, "repeats": repeats}
    notes: list[str] = []

    c, calls = trace_cost_and_dealer(built.secure, built.args)
    rec.update(rounds=c.rounds, bytes=c.bytes_per_party, bytes_total=c.bytes_total)

    log("compiling")
    secure, rec["compile_s"] = _compile(built.secure, built.args)
    programs = {"secure": (secure, built.args)}
    if built.plain is not None:
        plain, rec["plain_compile_s"] = _compile(built.plain, built.plain_args)
        programs["plain"] = (plain, built.plain_args)
    if dealer_split and calls:
        try:
            d_args = (_key(12345), dealer_inputs(calls))  # the main job's PRNG
            d_fn, o_fn = dealer_program(calls), online_program(built.secure, calls)
            d_prog, rec["dealer_compile_s"] = _compile(d_fn, d_args)
            pre = jax.block_until_ready(d_prog(*d_args))
            o_prog, rec["online_compile_s"] = _compile(o_fn, (pre,) + built.args)
            programs["dealer"] = (d_prog, d_args)
            programs["online"] = (o_prog, (pre,) + built.args)
            words = {
                "full": random_words(built.secure, *built.args),
                "dealer": random_words(d_fn, *d_args),
                "online": random_words(o_fn, pre, *built.args),
            }
            rec["dealer_words"] = words["dealer"]
            if words["dealer"] + words["online"] != words["full"]:
                notes.append(
                    f"dealer split inexact: PRNG words full {words['full']}, dealer {words['dealer']}, "
                    f"online {words['online']}"
                )
        except Exception as e:  # the split is a diagnostic; never lose the main timing
            notes.append(f"dealer split failed: {type(e).__name__}: {e}")
    log(f"timing ({repeats} repeats)")
    samples, cpu = time_interleaved(programs, repeats)

    rec["median_ms"], rec["min_ms"], rec["max_ms"] = _stats(samples["secure"])
    rec["cpu_median_ms"] = statistics.median(cpu["secure"])
    if "plain" in samples:
        rec["plain_median_ms"], rec["plain_min_ms"], rec["plain_max_ms"] = _stats(samples["plain"])
        rec["plain_cpu_median_ms"] = statistics.median(cpu["plain"])
        rec["ratio"] = rec["median_ms"] / rec["plain_median_ms"]
    else:
        rec["plain_median_ms"] = None
    if "dealer" in samples:
        rec["dealer_ms"] = statistics.median(samples["dealer"])
        rec["online_ms"] = statistics.median(samples["online"])
        rec["dealer_fraction"] = rec["dealer_ms"] / (rec["dealer_ms"] + rec["online_ms"])
    elif not calls:
        rec["dealer_ms"], rec["online_ms"], rec["dealer_fraction"] = 0.0, rec["median_ms"], 0.0
    rec.update(estimates_ms(rec["median_ms"], rec["rounds"], rec["bytes"]))
    if notes:
        rec["note"] = "; ".join(notes)
    return rec


def _rss_bytes() -> int | None:
    """Current resident set size (Linux ``/proc``), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _device_memory() -> dict[str, int] | None:
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    if not stats:
        return None
    return {k: int(v) for k, v in stats.items() if k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit")}


def run_memory(case: Case, epochs: int, *, log: Callable[[str], None]) -> dict[str, Any]:
    """A short training run (``epochs`` x 10 batches, donated buffers, as
    :func:`jaxmpc.train.train`): RSS after each epoch and the process peak."""
    built = case.build()
    params, state, xs, ys, key = built.args
    c = cost.cost_of(built.secure, *built.args)
    n = case.parties
    # ten distinct batches: the one batch with fresh shares (same secret)
    def reshare(t, i):
        noise = tensor.split(jax.random.fold_in(jax.random.key(77), i), jnp.zeros(t.shape, jnp.uint64), n)
        return tensor.SharedTensor(t.shares + noise, t.frac_bits)

    bx = tensor.stack([reshare(xs, i) for i in range(MEMORY_BATCHES)])
    by = tensor.stack([reshare(ys, 100 + i) for i in range(MEMORY_BATCHES)])
    log("compiling")
    step, compile_s = _compile(built.secure, (params, state, bx[0], by[0], key), donate_argnums=(0, 1))
    rss, times = [], []
    for epoch in range(epochs):
        for i in range(MEMORY_BATCHES):
            k = jax.random.fold_in(key, epoch * MEMORY_BATCHES + i)
            t0 = time.perf_counter()
            params, state, _loss = step(params, state, bx[i], by[i], k)
            jax.block_until_ready(params)
            times.append((time.perf_counter() - t0) * 1e3)
        gc.collect()
        rss.append(_rss_bytes())
        log(f"epoch {epoch + 1}/{epochs}: rss {rss[-1] / MIB if rss[-1] else float('nan'):.1f} MiB")
    rec: dict[str, Any] = {
        "name": case.name, "group": "memory", "op": "memory", "parties": n, "repeats": len(times),
        "epochs": epochs, "batches_per_epoch": MEMORY_BATCHES, "compile_s": compile_s,
        "median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
        "plain_median_ms": None, "rounds": c.rounds, "bytes": c.bytes_per_party, "bytes_total": c.bytes_total,
        "peak_rss_mib": _peak_rss_bytes() / MIB,
    }
    if all(r is not None for r in rss):
        rec["rss_mib_per_epoch"] = [r / MIB for r in rss]
        growth = (max(rss[1:]) - rss[0]) if len(rss) > 1 else 0
        rec["rss_growth_mib"] = growth / MIB
        rec["flat"] = growth <= max(16 * MIB, 0.02 * rss[0])
    dev = _device_memory()
    if dev:
        rec["device_memory"] = dev
    rec.update(estimates_ms(rec["median_ms"], rec["rounds"], rec["bytes"]))
    return rec
