"""``jaxmpc bench``: a cheap run through the CLI, the JSON report, argument errors."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxmpc import bench, cli, cost, dealer, tensor
from jaxmpc.protocols import arithmetic

CHEAP = "share_reveal,mul/64x128,trunc/64x128"


def test_cli_quick_json(capsys):
    rc = cli.main(["bench", "--quick", "--only", CHEAP, "--parties", "2", "--dealer-split", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rep = json.loads(out.strip().splitlines()[-1])  # the JSON object is the last line of stdout
    assert "benchmark" in out and "median" in out  # the human table comes first
    assert "[1/3]" in err  # progress goes to stderr
    assert rep["device"] and rep["backend"] == jax.default_backend()
    names = [r["name"] for r in rep["results"]]
    assert names == ["share_reveal/64x784/2p", "mul/64x128/2p", "trunc/64x128/2p"]
    for r in rep["results"]:
        for field in ("name", "parties", "median_ms", "min_ms", "max_ms", "plain_median_ms", "rounds", "bytes",
                      "compile_s", "lan_est_ms", "wan_est_ms", "dealer_ms", "online_ms"):
            assert field in r, (r["name"], field)
        assert r["parties"] == 2 and r["repeats"] == 3
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["compile_s"] > 0 and r["cpu_median_ms"] >= 0
        assert "note" not in r, r["note"]  # the dealer split accounted for every PRNG word
        assert r["lan_est_ms"] == pytest.approx(bench.network_estimate_ms(r["median_ms"], r["rounds"], r["bytes"], "lan"))
        assert r["median_ms"] < r["lan_est_ms"] < r["wan_est_ms"]
    by = {r["name"]: r for r in rep["results"]}
    mul = by["mul/64x128/2p"]
    assert mul["plain_median_ms"] > 0 and mul["ratio"] == pytest.approx(mul["median_ms"] / mul["plain_median_ms"])
    assert mul["dealer_ms"] > 0 and mul["online_ms"] > 0 and mul["dealer_words"] > 0
    assert by["share_reveal/64x784/2p"]["plain_median_ms"] is None
    assert by["share_reveal/64x784/2p"]["dealer_ms"] == 0.0  # sharing uses the owner's randomness, no dealer

    # rounds and bytes are cost_of's, traced independently here
    key = jax.random.key(0)
    x = tensor.share(np.zeros((64, 128), np.float32), key, 2)
    expected = {
        "mul/64x128/2p": cost.cost_of(arithmetic.mul, x, x, key),
        "trunc/64x128/2p": cost.cost_of(lambda x, k: arithmetic.truncate(x, k, 8), x, key),
        "share_reveal/64x784/2p": cost.cost_of(
            lambda v, k: tensor.reveal(tensor.share(v, k, 2)), jax.ShapeDtypeStruct((64, 784), np.float32), key
        ),
    }
    for name, c in expected.items():
        assert (by[name]["rounds"], by[name]["bytes"], by[name]["bytes_total"]) == (
            c.rounds, c.bytes_per_party, c.bytes_total
        ), name
    assert by["share_reveal/64x784/2p"]["bytes"] == 8 * 64 * 784  # one opening, one peer


def test_bad_arguments(capsys):
    for argv in (["--parties", "1"], ["--parties", "two"], ["--repeats", "0"], ["--only", ","]):
        assert cli.main(["bench", *argv]) == 2
        assert "error" in capsys.readouterr().err
    assert cli.main(["bench", "--only", "no_such_op", "--list"]) == 2
    assert "no benchmark matches" in capsys.readouterr().err
    assert cli.main(["bench", "--only", "mul/64x10", "--plot", "/no/such/dir/b.png"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_selection():
    cases = bench.all_cases([2, 3])
    names = lambda only, quick=False: [c.name for c in bench.select(cases, only, quick)]  # noqa: E731
    assert names(["mul/64x10"]) == ["mul/64x10/2p", "mul/64x10/3p"]  # not matmul/..., not mul_bit/...
    assert names(["train_step/relu"]) == ["train_step/relu/2p", "train_step/relu/3p"]
    assert names(["memory"]) == ["memory/train/relu/2p"]  # memory runs for the first party count
    assert names(["matmul/*/3p"]) == [f"matmul/{m}x{k}x{n}/3p" for m, k, n in bench.MATMUL_SHAPES]
    assert "eval_step/relu/2p" not in names(None) and "eval_step/relu/2p" in names(["eval_step"])
    quick = names(None, quick=True)
    assert "train_step/relu/2p" in quick and len(quick) < len(names(None)) / 3
    # every op a train step is made of has a per-op benchmark (for the breakdown)
    all_names = {c.name for c in cases}
    for kind in ("train_step", "inference"):
        for act in ("relu", "square"):
            for op, _ in bench.step_composition(kind, act):
                assert f"{op}/2p" in all_names


def test_dealer_hook_restores_module():
    before = dict(vars(dealer))
    key = jax.random.key(0)
    x = tensor.share(np.ones((2, 3), np.float32), key, 3)
    for _ in range(2):  # the same function object twice: JAX's trace caches must not hide the second trace
        c, calls = bench.trace_cost_and_dealer(arithmetic.mul, (x, x, key))
        assert c.rounds == cost.cost_of(arithmetic.mul, x, x, key).rounds and len(calls) >= 1
    assert {n: f for n, f in vars(dealer).items() if callable(f)} == {n: f for n, f in before.items() if callable(f)}


def test_dealer_split_of_a_training_step():
    """Tracing only: the dealer program draws every PRNG word of a (tiny) training
    step and the online program none, also where dealer calls take arrays (the
    backward pass reusing forward masks)."""
    from jaxmpc import nn, optim, train

    n, key = 2, jax.random.key(0)
    config = train.TrainConfig(parties=n)
    params = nn.share_params(nn.init_mlp(key, (8, 4, 3)), key, n)
    opt = optim.sgd(0.1, key)
    x = tensor.share(np.ones((2, 8), np.float32), key, n)
    y = tensor.share(np.eye(3, dtype=np.float32)[:2], key, n)
    step = train.make_train_step(config, opt)
    args = (params, opt.init(params), x, y, key)
    c, calls = bench.trace_cost_and_dealer(step, args)
    assert (c.rounds, c.bytes_per_party) == (lambda k: (k.rounds, k.bytes_per_party))(cost.cost_of(step, *args))
    d_args = (jax.random.key(1), bench.dealer_inputs(calls))
    pre = jax.eval_shape(bench.dealer_program(calls), *d_args)
    assert jax.tree.structure(pre) == jax.tree.structure([call.out for call in calls])
    full = bench.random_words(step, *args)
    assert full > 0
    assert bench.random_words(bench.dealer_program(calls), *d_args) == full
    assert bench.random_words(bench.online_program(step, calls), pre, *args) == 0


def test_breakdown_and_ratios_from_records():
    """The report's derived parts, from synthetic records: per-op sums (CPU time
    when every record has it), relu/square ratios, targets."""
    def rec(name, group, wall, cpu):
        return {"name": name, "group": group, "op": name.split("/")[0], "median_ms": wall, "cpu_median_ms": cpu,
                "dealer_ms": wall / 2}

    ops = [rec(f"{op}/2p", "op", 1.0, 2.0) for op, _ in bench.step_composition("inference", "relu")]
    results = ops + [rec("inference/relu/2p", "e2e", 9.0, 30.0), rec("inference/square/2p", "e2e", 3.0, 10.0)]
    b = bench.breakdowns(results)
    assert list(b) == ["inference/relu/2p"]  # square's ops were not all measured
    inf = b["inference/relu/2p"]
    assert inf["metric"] == "cpu_median_ms" and inf["measured_ms"] == 30.0
    assert inf["sum_of_ops_ms"] == 2.0 * len(ops) and inf["other_ms"] == 30.0 - 2.0 * len(ops)
    assert bench.relu_vs_square(results) == {"inference/2p": 3.0}
    assert bench.relu_vs_square(results, "cpu_median_ms") == {"inference/2p": 3.0}
    (t,) = bench.target_report(results)
    assert (t["name"], t["value"], t["met"]) == ("inference/relu/2p", 9.0, False)
    del results[0]["cpu_median_ms"]  # one record without CPU time: wall time throughout
    assert bench.breakdowns(results)["inference/relu/2p"]["metric"] == "median_ms"
