"""Parties as separate processes on JAX's distributed runtime (jaxmpc.distributed).

Every multi-process test starts real OS processes (n parties + the dealer)
joined by ``jax.distributed`` over loopback with gloo collectives, and checks
the results bit for bit against the simulated mode (vmap in one process)
for the same seeds, and that each process holds only its own party's share.

Run as a script (``python tests/test_distributed.py mesh``) this file is also
the worker of the single-process mesh test, which needs several CPU devices
and so a fresh process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(devices: int | None = None, **extra: str) -> dict[str, str]:
    """The child processes' environment: conftest's settings (strict promotion,
    XLA flags, compilation cache) carried over, no JAXMPC_* from outside."""
    import jax

    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXMPC_")}
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    if devices:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env.update(
        PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
        JAX_PLATFORMS="cpu",
        JAX_NUMPY_DTYPE_PROMOTION="strict",
        XLA_FLAGS=" ".join(flags),
    )
    cache = jax.config.jax_compilation_cache_dir
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _jaxmpc(args: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jaxmpc", *args], env=_env(**env), capture_output=True, text=True, timeout=timeout
    )


def _launch(n: int, demo_args: list[str], timeout: float) -> subprocess.CompletedProcess:
    proc = _jaxmpc(["launch", "--parties", str(n), "--port", str(_free_port()), "--", "party-demo", *demo_args],
                   timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


# ------------------------------------------------------------ checking dumps


def _check_dump(directory: str, n: int, steps: int) -> None:
    """Each party's dumped blocks are exactly share i of the simulated run."""
    import jax

    from jaxmpc import distributed as D

    c = D.DemoConfig(parties=n, steps=steps)
    sim = D.simulate(c)
    ref = {"x": sim["x_shares"], "y": sim["y_shares"], "ops": sim["ops"]}
    if steps:
        ref.update(data_x=sim["data_x"], data_y=sim["data_y"], params=sim["params"])
    named = D._named_shared(ref)
    # the dealer's feed for the product demo, as the simulation's dealer makes it
    feed = np.asarray(sim["feed"].shares)
    assert feed.shape[1] > 0

    for i in range(n):
        blocks = np.load(os.path.join(directory, f"party{i}.npz"))
        with open(os.path.join(directory, f"party{i}.json")) as f:
            meta = json.load(f)
        layout = meta["layout"]
        assert set(layout) == set(named) | {"['feed']"}
        for name, value in named.items():
            full = np.asarray(value.shares)
            block = blocks["share" + name]
            # only its own share: one block of shape (1, ...), at row i, on its own device
            assert block.shape == (1,) + full.shape[1:], name
            assert len(layout[name]["blocks"]) == 1, name
            (b,) = layout[name]["blocks"]
            assert b["index"][0] == [i, i + 1] and b["device_process"] == i, (name, b)
            assert layout[name]["global_shape"] == list(full.shape)
            np.testing.assert_array_equal(block[0], full[i], err_msg=f"party {i}: {name}")
        # it received exactly row i of the dealer's correlated randomness
        np.testing.assert_array_equal(blocks["share['feed']"][0], feed[i])
        for k, v in sim["ops_revealed"].items():
            np.testing.assert_array_equal(blocks["opened" + k], v)
        summary = meta["summary"]
        assert summary.get("losses", []) == sim["losses"]
        assert summary["less_correct"] is True and summary["ops_max_error"] < 1e-3
        models = {k[len("model"):]: blocks[k] for k in blocks.files if k.startswith("model")}
        if i == 0 and steps:  # the model goes back to its owner only
            expected = D._named_shared_plain(sim["model"])
            assert set(models) == set(expected)
            for k, v in expected.items():
                np.testing.assert_array_equal(models[k], v)
        else:
            assert not models
    # the dealer holds no share and sees no opened value
    dealer = np.load(os.path.join(directory, "dealer.npz"))
    assert dealer.files == []
    with open(os.path.join(directory, "dealer.json")) as f:
        meta = json.load(f)
    assert all(v.get("placeholder") for v in meta["layout"].values())
    assert meta["summary"].get("losses", []) == []


def _arith_ops(x, y, key):
    """Products with several dealer calls each (triples, square pairs, truncation pairs)."""
    import jax

    from jaxmpc.protocols import arithmetic

    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "product": arithmetic.mul(x, y, k1),
        "square": arithmetic.square(x, k2),
        "outer": arithmetic.matmul(x.reshape(-1, 1), y.reshape(1, -1), k3),
    }


def _record(fn, n, *args):
    """Run ``fn`` (jitted) with the dealer's calls recorded: (outputs, calls, feed rows)."""
    import jax

    from jaxmpc import distributed as D

    tap = D._DealerTap("record", n)

    def shadow(*a):
        with tap.active():
            out = fn(*a)
        return out, D._concat_rows(tap.outputs, n)

    out, flat = jax.jit(shadow)(*args)
    return out, tap.calls, flat


def _fed(fn, n, calls, flat, *args):
    import jax

    from jaxmpc import distributed as D

    def run(flat, *a):
        with D._DealerTap("feed", n, calls, flat).active():
            return fn(*a)

    return jax.jit(run)(flat, *args)


# ======================================================== in-process (fast)


def test_dealer_tap_feeds_back_what_the_dealer_recorded():
    import jax

    from jaxmpc import dealer, tensor
    from jaxmpc import distributed as D

    n = 3
    c = D.DemoConfig(parties=n)
    keys = D.demo_keys(c)
    x, y = D.demo_inputs(c)
    xs, ys = tensor.share(x, keys["x"], n), tensor.share(y, keys["y"], n)
    originals = dict(vars(dealer))
    ref, calls, flat = _record(_arith_ops, n, xs, ys, keys["mul"])
    assert calls and all(c.shapes[0][0] == n for c in calls)
    assert flat.shape == (n, D.feed_width(calls))
    # the parties' side: a wrong key, since the dealer's functions are not evaluated at all
    got = _fed(_arith_ops, n, calls, flat, xs, ys, jax.random.key(12345))
    for k in ref:
        np.testing.assert_array_equal(np.asarray(got[k].shares), np.asarray(ref[k].shares))
    assert np.max(np.abs(np.asarray(tensor.reveal(got["product"])) - x * y)) < 1e-3
    assert dict(vars(dealer)) == originals  # the dealer module is restored


def test_dealer_tap_rejects_a_different_call_sequence():
    import jax

    from jaxmpc import tensor
    from jaxmpc import distributed as D
    from jaxmpc.protocols import arithmetic

    n = 2
    k = jax.random.key(0)
    x = tensor.share(np.ones(4), k, n)
    rec = D._DealerTap("record", n)
    with rec.active():
        jax.eval_shape(lambda: arithmetic.mul(x, x, k))
    flat = jax.ShapeDtypeStruct((n, D.feed_width(rec.calls)), np.uint64)

    def other(flat):
        with D._DealerTap("feed", n, rec.calls, flat).active():
            return arithmetic.square(x, k)

    with pytest.raises(D.DistributedError, match="dealer"):
        jax.eval_shape(other, flat)


def test_config_errors_are_clear(capsys):
    from jaxmpc import cli
    from jaxmpc import distributed as D

    with pytest.raises(D.DistributedError, match="host:port"):
        D.parse_address("localhost")
    with pytest.raises(D.DistributedError, match="out of range"):
        D.parse_address("127.0.0.1:70000")
    with pytest.raises(D.DistributedError, match="cannot resolve"):
        D.parse_address("no.such.host.invalid:1234")
    with pytest.raises(D.DistributedError, match="0..1 or 'dealer'"):
        D.parse_role("2x", 2)
    assert D.parse_role("dealer", 2) == D.DEALER and D.parse_role("2", 2) == D.DEALER
    assert D.parse_role(" 1 ", 3) == 1
    assert cli.main(["launch", "--parties", "2"]) == 2
    assert "give the command to run after --" in capsys.readouterr().err


def test_audit_collectives_counts_words_per_party():
    from jaxmpc import cost
    from jaxmpc import distributed as D

    hlo = (
        "  %a = (u64[4,2]{1,0}, u64[3]{0}) all-reduce(%x, %y), replica_groups={{0,1}}\n"
        "  %g = u64[2,5]{1,0} all-gather(%z), dimensions={0}\n"
        "  %p = u64[7]{0} collective-permute(%w), source_target_pairs={{1,0}}\n"
    )
    openings = [
        cost.Opening("beaver", "arith", ((4, 2), (3,)), True, 2),
        cost.Opening("and", "xor", ((5,),), True, 2),
        cost.Opening("model", "send", ((7,),), False, 2, owner=0),
    ]
    audit = D.audit_collectives(hlo, openings, 2)
    assert audit["ok"], audit
    extra = hlo + "  %q = u64[9]{0} all-gather(%v), dimensions={0}\n"
    assert not D.audit_collectives(extra, openings, 2)["ok"]


# ================================================= subprocess, single process


def test_party_map_over_a_mesh_matches_vmap():
    """spmd.party_map's shard_map branch (3 CPU devices in one process) gives the
    vmap results bit for bit; secure_jit's compiled program communicates exactly
    what the protocols open."""
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "mesh"],
        env=_env(devices=3),
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout[-3000:] + proc.stderr[-5000:]


def _mesh_worker() -> None:
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    jax.config.update("jax_numpy_dtype_promotion", "strict")
    from jaxmpc import dealer, ring, spmd, tensor
    from jaxmpc import distributed as D
    from jaxmpc.protocols import arithmetic

    assert len(jax.devices()) == 3
    for n in (2, 3):
        mesh = Mesh(np.array(jax.devices()[:n]), ("party",))
        k = jax.random.key(0)
        x = tensor.share(np.linspace(-3, 3, 12).reshape(3, 4), jax.random.fold_in(k, 1), n)
        y = tensor.share(np.linspace(-1, 2, 12).reshape(3, 4), jax.random.fold_in(k, 2), n)
        t = dealer.beaver_triple(k, n, (3, 4), (3, 4), ring.mul)
        pub = jnp.arange(4, dtype=jnp.uint64)

        def f(xs, ys, t, pub):
            return (
                spmd.party_map(lambda *s: arithmetic.beaver_local(*s, ring.mul))(xs, ys, t.a, t.b, t.c),
                spmd.party_map(lambda s, p: s * p, in_axes=(0, None))(xs, pub),
                spmd.party_map(lambda s: spmd.open_sum(s, what="t"))(xs),
                spmd.party_map(lambda s: spmd.send_to(s, n - 1, what="t"))(xs),
                spmd.party_map(lambda s: spmd.open_xor(s, what="t"))(xs),
                spmd.party_map(lambda s, q=None: s + q["a"])(xs, q={"a": ys}),  # keyword, pytree
                spmd.party_map(lambda s: spmd.party_index().astype(jnp.uint64) + 0 * s.sum())(xs),
                spmd.party_map(lambda s: s, in_axes=1)(jnp.moveaxis(xs, 0, 1)),  # party axis 1
                spmd.party_map(lambda s, u: s + u[0] * u[1], in_axes=(0, (0, None)))(xs, (ys, pub)),  # prefix
            )

        ref = jax.jit(f)(x.shares, y.shares, t, pub)
        with jax.set_mesh(mesh):
            args = jax.device_put((x.shares, y.shares, t), NamedSharding(mesh, P("party")))
            out = jax.jit(f)(*args, pub)
            eager = f(*args, pub)
            try:
                spmd.party_map(lambda s: s)(jnp.zeros((n + 1, 2), jnp.uint64))
                raise AssertionError("a party-count mismatch was not caught")
            except ValueError as e:
                assert "one device per party" in str(e)
        for i, (a, b, e) in enumerate(zip(ref, out, eager)):
            assert np.array_equal(np.asarray(a), np.asarray(b)), (n, i)
            assert np.array_equal(np.asarray(a), np.asarray(e)), (n, i)
            assert b.sharding.spec == P("party"), (n, i, b.sharding)

        if n == 2:
            continue
        # secure_jit: dealer feed + shard_map program, bit-identical to the simulation
        rt = D.single_process(n)
        c = D.DemoConfig(parties=n)
        keys = D.demo_keys(c)
        xv, yv = D.demo_inputs(c)
        xs, ys = tensor.share(xv, keys["x"], n), tensor.share(yv, keys["y"], n)
        ops = _arith_ops  # the comparisons run over a mesh in the multi-process tests
        fn = D.secure_jit(ops, rt)
        got = fn(xs, ys, keys["mul"])
        want = jax.jit(ops)(xs, ys, keys["mul"])
        for name in want:
            assert np.array_equal(np.asarray(got[name].shares), np.asarray(want[name].shares)), name
            assert got[name].shares.sharding.spec == P("party")
        audit = fn.audit(xs, ys, keys["mul"])
        assert audit["ok"], audit
        opened = D.reveal(rt, got)
        assert np.array_equal(opened["product"], np.asarray(tensor.reveal(want["product"])))
        to_last = D.reveal(rt, got, to=n - 1)
        assert np.array_equal(to_last["product"], np.asarray(tensor.reveal(want["product"])))
        # reveal to one party compiles to point-to-point messages to it, and nothing else
        with jax.set_mesh(rt.party_mesh):
            hlo = D._open_program(rt, ((8,),), n - 1, "t").lower(got["product"].shares).compile().as_text()
        assert "collective-permute" in hlo and "all-reduce" not in hlo and "all-gather" not in hlo

        # misuse is refused at trace time: parties using a dealer key, a dealer call on shares
        def shares_inside(x, k):
            return x + tensor.share(np.ones(8), k, n)

        def dealer_on_shares(x, k):
            t = dealer.beaver_transpose_triples(k, x.shares, x.shares, (8,), ring.mul, None, 0, 0)
            return tensor.SharedTensor(t.c_x, x.frac_bits)

        for bad, words in ((shares_inside, "uses a PRNG key"), (dealer_on_shares, "depends on secret-shared")):
            try:
                D.secure_jit(bad, rt)(xs, keys["mul"])
                raise AssertionError(f"{bad.__name__} was not refused")
            except D.DistributedError as e:
                assert words in str(e), e
        D.reset()
    print("OK")


@pytest.mark.slow
def test_training_step_communicates_only_its_openings():
    """The parties' compiled training step: its collectives carry exactly the
    recorded openings (XLA adds no traffic), and it matches the simulation."""
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "train-audit"],
        env=_env(devices=2),
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout[-3000:] + proc.stderr[-5000:]


def _train_audit_worker() -> None:
    import jax

    jax.config.update("jax_numpy_dtype_promotion", "strict")
    from jaxmpc import distributed as D
    from jaxmpc import nn, optim, train

    n = 2
    rt = D.single_process(n)
    c = D.DemoConfig(parties=n, steps=1)
    keys = D.demo_keys(c)
    tc = D.demo_train_config(c)
    _, xb, yb = D.demo_data(c)
    params = nn.share_params(nn.init_mlp(keys["init"]), keys["model"], n)
    sx, sy = train.share_batches(xb.reshape(-1, 784), yb.reshape(-1, 10), c.batch_size, keys["data"], n, c.frac_bits)
    opt = optim.sgd(tc.lr, keys["opt"])
    state = opt.init(params)
    run = D._batch_step(train.make_train_step(tc, opt))
    fn = D.secure_jit(run, rt)
    args = (params, state, sx, sy, np.int32(0), keys["steps"])
    audit = fn.audit(*args)
    assert audit["ok"], audit
    got = fn(*args)
    want = jax.jit(run)(*args)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        assert np.array_equal(np.asarray(a), np.asarray(b))
    print(json.dumps(audit))
    print("OK")


# ====================================================== multi-process runs


def test_two_parties_product_and_comparison_bit_exact(tmp_path):
    """2 parties + dealer as processes: x*y, [x<y], relu(x) on shares; every
    party holds only its share, equal to share i of the simulation."""
    dump = str(tmp_path / "dump")
    proc = _launch(2, ["--steps", "0", "--dump", dump, "--json"], timeout=240)
    _check_dump(dump, 2, 0)
    lines = proc.stdout.splitlines()
    assert any(line.startswith("[party 0] x*y = ") for line in lines)
    assert any(line.startswith("[party 1] [x < y] = ") for line in lines)
    assert not any(line.startswith("[dealer] x*y") for line in lines)  # the dealer sees no opened value


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3])
def test_training_steps_bit_exact(tmp_path, n):
    """n parties + dealer: product, comparison, 2 training steps of the reference
    MLP; shares of inputs, data, parameters, the losses and the model decrypted
    at party 0 equal the simulated run's, bit for bit."""
    dump = str(tmp_path / "dump")
    _launch(n, ["--steps", "2", "--dump", dump, "--json"], timeout=1500)
    _check_dump(dump, n, 2)


def _start(n: int, port: int, demo_args: list[str], roles=None, **env: str) -> dict[str, subprocess.Popen]:
    roles = roles or [str(i) for i in range(n)] + ["dealer"]
    base = dict(JAXMPC_COORDINATOR=f"127.0.0.1:{port}", JAXMPC_NUM_PARTIES=str(n), **env)
    return {
        r: subprocess.Popen(
            [sys.executable, "-m", "jaxmpc", "party-demo", *demo_args],
            env=_env(JAXMPC_PARTY_ID=r, **base), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for r in roles
    }


def test_a_party_that_never_joins_stops_the_others():
    port = _free_port()
    t0 = time.monotonic()
    procs = _start(2, port, ["--steps", "0"], roles=["0", "dealer"], JAXMPC_INIT_TIMEOUT="5")
    for role, p in procs.items():
        _, err = p.communicate(timeout=60)
        assert p.returncode == 3, (role, err[-3000:])
        assert "not every process joined" in err and f"127.0.0.1:{port}" in err, err[-3000:]
    assert time.monotonic() - t0 < 60


def test_port_in_use_and_bad_addresses_fail_clearly(monkeypatch, capsys):
    """Configuration errors are found before JAX's runtime starts, with a clear message."""
    from jaxmpc import cli

    for name in ("JAXMPC_COORDINATOR", "JAXMPC_NUM_PARTIES", "JAXMPC_PARTY_ID"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["party-demo"]) == 2
    err = capsys.readouterr().err
    assert "JAXMPC_COORDINATOR" in err and "jaxmpc launch" in err
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        port = s.getsockname()[1]
        assert cli.main(["launch", "--port", str(port), "--", "party-demo"]) == 2
        err = capsys.readouterr().err
        assert f"port {port}" in err and "in use" in err, err
        assert cli.main(["party-demo", "--coordinator", f"127.0.0.1:{port}", "--parties", "2", "--party-id", "0"]) == 2
        assert "in use" in capsys.readouterr().err
    assert cli.main(["party-demo", "--coordinator", "no.such.host.invalid:1234", "--parties", "2",
                     "--party-id", "1"]) == 2
    assert "cannot resolve host" in capsys.readouterr().err
    assert cli.main(["party-demo", "--coordinator", "127.0.0.1:1", "--parties", "2", "--party-id", "7"]) == 2
    assert "0..1 or 'dealer'" in capsys.readouterr().err
    assert cli.main(["launch", "--parties", "1", "--", "party-demo"]) == 2
    assert "at least 2" in capsys.readouterr().err


def test_launch_reports_a_failing_command():
    proc = _jaxmpc(["launch", "--parties", "2", "--", "party-demo", "--no-such-flag"], timeout=120)
    assert proc.returncode != 0
    assert "[party 0]" in proc.stderr and "failed first" in proc.stderr, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill", "freeze"])
def test_a_party_lost_mid_run_stops_the_others_in_bounded_time(how):
    """Party 1 is killed (or frozen) while the parties exchange shares in a loop:
    party 0 and the dealer stop with an error, within a bounded time."""
    port = _free_port()
    procs = _start(2, port, ["--steps", "0", "--repeat", "100000"], JAXMPC_TIMEOUT="30")
    victim = procs["1"]
    deadline = time.monotonic() + 600
    for line in victim.stdout:
        if "round 3" in line or time.monotonic() > deadline:
            break
    assert "round 3" in line, "the run did not get going"
    if how == "kill":
        victim.kill()
    else:
        victim.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        for role in ("0", "dealer"):
            p = procs[role]
            try:
                _, err = p.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                p.kill()
                pytest.fail(f"{role} still running 90 s after party 1 was lost")
            elapsed = time.monotonic() - t0
            assert p.returncode != 0, role
            if how == "kill":  # gloo notices at once: our message and exit code
                assert p.returncode == 3 and "a peer is gone" in err, (role, err[-3000:])
                assert elapsed < 30
            else:  # our watchdog, or JAX's heartbeat check (default 10 s), whichever is first
                assert p.returncode in (3, -signal.SIGABRT), (role, p.returncode, err[-3000:])
                assert "did not finish within" in err or "another task died" in err, err[-3000:]
                assert elapsed < 60
    finally:
        victim.kill()
        for p in procs.values():
            if p.poll() is None:
                p.kill()


if __name__ == "__main__":
    {"mesh": _mesh_worker, "train-audit": _train_audit_worker}[sys.argv[1]]()
