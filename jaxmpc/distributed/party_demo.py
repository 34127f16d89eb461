"""``jaxmpc party-demo``: the demo run as one role (a party or the dealer), with
its ``--dump`` of what the process holds and its ``--check`` against the simulation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

from jaxmpc.distributed.arrays import _is_shared, describe_local, local_block, placeholder, reveal, share, share_tree
from jaxmpc.distributed.demo import (
    DEALER_KEYS, DemoConfig, _batch_step, demo_data, demo_inputs, demo_keys, demo_secure_ops, demo_train_config,
    simulate,
)
from jaxmpc.distributed.failure import EXIT_CONFIG, fail
from jaxmpc.distributed.feed import _dummy_key
from jaxmpc.distributed.runtime import DEALER, DistributedError, Runtime, initialize, shutdown
from jaxmpc.distributed.secure_jit import secure_jit
from jaxmpc.tensor import SharedTensor

def run_demo(rt: Runtime, c: DemoConfig, *, log: Callable[[str], None] = print, dump: str | None = None,
             check: bool = False, repeat: int = 1) -> dict[str, Any]:
    """The demo as this process's role: see :func:`demo_secure_ops` and the module docstring.

    ``repeat`` runs the product demo that many times (a steady stream of
    collectives, e.g. to try out failures); ``c.steps == 0`` skips training.
    """
    from jaxmpc import nn, optim, train

    n = rt.n_parties
    if c.parties != n:
        c = dataclasses.replace(c, parties=n)
    if n < 2:
        raise DistributedError("the demo needs at least 2 parties")
    all_keys = demo_keys(c)
    # each role keeps only its own keys; the others become placeholders
    mine = set()
    if rt.is_dealer:
        mine |= set(DEALER_KEYS)
    if rt.holds(0):
        mine |= {"init", "model", "x"}
    if rt.holds(1):
        mine |= {"y"}
    if rt.is_party:
        mine |= {"data"}  # each worker derives fold_in(data, w) for its own w only (below)
    keys = {k: (v if k in mine else placeholder(v)) for k, v in all_keys.items()}
    summary: dict[str, Any] = {"role": rt.name, "parties": n}

    # -- 1. product and comparisons: party 0 owns x, party 1 owns y
    x, y = demo_inputs(c)
    ops_fn = secure_jit(demo_secure_ops, rt, name="product demo")
    opened = None
    for r in range(repeat):
        t0 = time.perf_counter()
        xs_ = share(rt, 0, x if rt.holds(0) else None, keys["x"] if rt.holds(0) else None, x.shape, c.frac_bits)
        ys_ = share(rt, 1, y if rt.holds(1) else None, keys["y"] if rt.holds(1) else None, y.shape, c.frac_bits)
        ops_r = ops_fn(xs_, ys_, keys["mul"])
        opened_r = reveal(rt, ops_r, what="demo")  # to every party
        if r == 0:
            ops, opened = ops_r, opened_r
            summary["ops_seconds"] = time.perf_counter() - t0
        if repeat > 1:
            log(f"round {r}: {time.perf_counter() - t0:.3f} s")
    if opened is not None:
        log(f"x*y = {np.round(opened['product'], 3).tolist()}")
        if "less" in opened:
            log(f"[x < y] = {np.round(opened['less']).astype(int).tolist()}")
        summary["ops_max_error"] = float(np.max(np.abs(opened["product"] - x * y)))
        if "less" in opened:
            summary["less_correct"] = bool(np.array_equal(np.round(opened["less"]), (x < y).astype(float)))
    shared = dict(x=xs_, y=ys_, ops=ops)
    if rt.is_party:  # this party's row of the dealer's feed for the product demo
        shared["feed"] = SharedTensor(ops_fn.last_feed, 0)
    model = None
    if c.steps == 0:
        return _finish(rt, c, summary, shared, [], model, opened, dump, check, log)

    # -- 2. training steps of the reference network
    tc = demo_train_config(c)
    source, xb, yb = demo_data(c)
    summary["data_source"] = source
    nb = xb.shape[0]
    template_params = jax.eval_shape(
        lambda k: nn.share_params(nn.init_mlp(k), k, n, c.frac_bits), all_keys["init"]
    )
    params_full = nn.share_params(nn.init_mlp(keys["init"]), keys["model"], n, c.frac_bits) if rt.holds(0) else None
    params = share_tree(rt, 0, params_full, template_params)  # the model owner shares the model
    # each worker w shares its own batches w, w+n, ... exactly as jaxmpc.train.share_batches does
    parts_x, parts_y = [], []
    for w in range(n):
        idx = np.arange(w, nb, n)
        if idx.size == 0:
            continue
        kw = jax.random.fold_in(all_keys["data"], w) if rt.holds(w) else None
        kx = jax.random.fold_in(kw, 0) if kw is not None else None
        ky = jax.random.fold_in(kw, 1) if kw is not None else None
        own = rt.holds(w)
        parts_x.append(share(rt, w, xb[idx] if own else None, kx, (idx.size,) + xb.shape[1:], c.frac_bits))
        parts_y.append(share(rt, w, yb[idx] if own else None, ky, (idx.size,) + yb.shape[1:], c.frac_bits))
    order = np.concatenate([np.arange(w, nb, n) for w in range(n)])
    inverse = np.argsort(order)

    def assemble(px, py, inv):
        from jaxmpc import tensor

        return tensor.concatenate(px, 0)[inv], tensor.concatenate(py, 0)[inv]

    sx, sy = secure_jit(assemble, rt, name="batch assembly")(parts_x, parts_y, inverse)
    # the optimizer's key is the dealer's (its truncations); the parties hold a constant stand-in
    k_opt = keys["opt"] if rt.is_dealer else _dummy_key(keys["opt"])
    opt = optim.sgd(tc.lr, k_opt, tc.momentum, trunc=tc.trunc)
    state = opt.init(params) if rt.is_party else opt.init(template_params)
    step = secure_jit(_batch_step(train.make_train_step(tc, opt)), rt, name="training step")
    losses, times, cpu = [], [], []
    log(f"training {c.steps} steps of the {nn.MNIST_MLP} MLP, batch {c.batch_size}, data: {source}")
    for i in range(c.steps):
        k = jax.random.fold_in(keys["steps"], i) if rt.is_dealer else keys["steps"]
        t0, c0 = time.perf_counter(), time.process_time()
        params, state, loss = step(params, state, sx, sy, np.int32(i), k)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        value = reveal(rt, loss, what="loss")
        if value is not None:
            losses.append(float(value))
            log(f"step {i}: loss {float(value):.6f}  ({times[-1] * 1e3:.1f} ms)")
        elif rt.role == DEALER:
            log(f"step {i}: correlated randomness sent ({times[-1] * 1e3:.1f} ms)")
    summary.update(
        losses=losses,
        step_ms=[t * 1e3 for t in times],
        step_ms_median=float(np.median(times[1:] if len(times) > 1 else times) * 1e3),
        first_step_s=times[0],
        feed_words_per_step=step.feed_words(params, state, sx, sy, np.int32(0), keys["steps"]),
    )
    summary["cpu_ms_median"] = float(np.median(cpu[1:] if len(cpu) > 1 else cpu) * 1e3)
    later = step.timings[1:] or step.timings
    summary["feed_ms_median"] = float(np.median([t[0] for t in later]) * 1e3)
    summary["program_ms_median"] = float(np.median([t[1] for t in later]) * 1e3)

    # -- 3. the model goes back to its owner (party 0) only
    model = reveal(rt, params, to=0, what="model")
    if model is not None:
        model = jax.tree.map(lambda v: np.asarray(v, np.float32), model)
        summary["model_checksum"] = float(sum(np.abs(l).sum() for l in jax.tree.leaves(model)))
        log(f"model decrypted at party 0 (sum |w| = {summary['model_checksum']:.6f})")

    shared.update(data_x=sx, data_y=sy, params=params)
    return _finish(rt, c, summary, shared, losses, model, opened, dump, check, log)


def _finish(rt, c, summary, shared, losses, model, opened, dump, check, log) -> dict[str, Any]:
    if dump:
        _dump(rt, dump, shared, summary, model, opened)
    if check and rt.is_party:
        summary["check"] = _check_against_simulation(rt, c, shared, losses, model, log)
    return summary


def _named_shared(tree: Any) -> dict[str, Any]:
    flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_shared)[0]
    return {jax.tree_util.keystr(p): v for p, v in flat if _is_shared(v)}


def _dump(rt: Runtime, directory: str, shared: dict[str, Any], summary: dict, model: Any, opened: Any) -> None:
    """Write what this process holds: its blocks of every shared value and their layout."""
    os.makedirs(directory, exist_ok=True)
    tag = "dealer" if rt.role == DEALER else f"party{rt.role}"
    arrays, layout = {}, {}
    for name, value in _named_shared(shared).items():
        if isinstance(value.shares, jax.ShapeDtypeStruct):
            layout[name] = {"placeholder": True, "global_shape": list(value.shares.shape)}
            continue
        layout[name] = describe_local(value)
        arrays["share" + name] = local_block(value)
    if model is not None:
        for name, v in _named_shared_plain(model).items():
            arrays["model" + name] = v
    if opened is not None:
        for k, v in opened.items():
            arrays["opened" + k] = v
    np.savez(os.path.join(directory, f"{tag}.npz"), **arrays)
    with open(os.path.join(directory, f"{tag}.json"), "w") as f:
        json.dump({"summary": summary, "layout": layout}, f, indent=1, default=str)


def _named_shared_plain(tree: Any) -> dict[str, np.ndarray]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}


def _check_against_simulation(rt, c, shared, losses, model, log) -> str:
    """Compare this party's shares with share ``i`` of the simulated run (all seeds known: demo only)."""
    sim = simulate(c)
    ref = {"x": sim["x_shares"], "y": sim["y_shares"], "ops": sim["ops"], "feed": sim["feed"]}
    if c.steps:
        ref.update(data_x=sim["data_x"], data_y=sim["data_y"], params=sim["params"])
    mine, theirs = _named_shared(shared), _named_shared(ref)
    bad = []
    rows = [rt.role] if isinstance(rt.role, int) else list(range(rt.n_parties))
    for name, value in mine.items():
        full = np.asarray(theirs[name].shares)
        got = local_block(value) if rt.multiprocess else np.asarray(value.shares)
        if not np.array_equal(got, full[rows]):
            bad.append(name)
    if losses != sim["losses"]:
        bad.append("losses")
    if model is not None and c.steps:
        for a, b in zip(jax.tree.leaves(model), jax.tree.leaves(sim["model"])):
            if not np.array_equal(a, b):
                bad.append("model")
                break
    result = "bit-identical to the simulated run" if not bad else "MISMATCH in " + ", ".join(bad)
    log(f"check against the simulated mode: {result}")
    return result


def _run_party_demo(args: argparse.Namespace) -> int:
    c = DemoConfig(parties=args.parties or 2, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                   activation=args.activation, trunc=args.trunc)
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, flush=True))
    if args.simulated:
        if c.steps:
            demo_train_config(c)
        t0 = time.perf_counter()
        sim = simulate(c)
        times = sim["step_times"]
        summary = {
            "role": "simulated", "parties": c.parties, "losses": sim["losses"],
            "step_ms": [t * 1e3 for t in times], "total_s": time.perf_counter() - t0,
        }
        if times:
            cpu = sim["step_cpu"]
            summary.update(step_ms_median=float(np.median(times[1:] if len(times) > 1 else times) * 1e3),
                           cpu_ms_median=float(np.median(cpu[1:] if len(cpu) > 1 else cpu) * 1e3),
                           first_step_s=times[0])
        for i, loss in enumerate(sim["losses"]):
            log(f"step {i}: loss {loss:.6f}  ({times[i] * 1e3:.1f} ms)")
        if args.json:
            print(json.dumps(summary), flush=True)
        return 0
    try:
        rt = initialize(args.coordinator, args.parties, args.party_id)
    except DistributedError as e:
        print(f"jaxmpc party-demo: error: {e}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    prefix = "" if os.environ.get("JAXMPC_LAUNCHED") else f"[{rt.name}] "
    try:
        summary = run_demo(rt, dataclasses.replace(c, parties=rt.n_parties), log=lambda m: log(prefix + m),
                           dump=args.dump, check=args.check, repeat=args.repeat)
    except BaseException:  # the others are waiting for us: leave now, they notice at once
        import traceback

        traceback.print_exc()
        fail(rt.name, "party-demo failed (traceback above)", code=1)
    if args.json:
        print(json.dumps(summary, default=str), flush=True)
    shutdown(rt)
    ok = "MISMATCH" not in str(summary.get("check", ""))
    return 0 if ok else 1
