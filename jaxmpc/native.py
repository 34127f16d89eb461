"""Native CPU kernels: C++ sources in ``jaxmpc/csrc`` built on first use and registered as XLA FFI targets.

A kernel is compiled once per machine with the system C++ compiler against the
XLA FFI headers that ship with jaxlib, and cached under ``$JAXMPC_CACHE_DIR``
(default ``~/.cache/jaxmpc``), keyed by a hash of the source, the flags and
the jaxlib version. Building takes a few seconds; later processes load the
cached library. Every kernel has a pure ``jax.numpy`` reference that gives the
same bits; when a kernel cannot be built or loaded (no compiler, another CPU
architecture, ``JAXMPC_NATIVE=0``), :func:`load` raises
:class:`NativeUnavailable` saying why, and callers use the reference.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import tempfile

import jax

_SOURCES = pathlib.Path(__file__).parent / "csrc"
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")


class NativeUnavailable(RuntimeError):
    """A native kernel could not be built or loaded; the message says why."""


def cache_dir() -> pathlib.Path:
    """Where built kernels are kept: ``$JAXMPC_CACHE_DIR``, else ``~/.cache/jaxmpc``."""
    env = os.environ.get("JAXMPC_CACHE_DIR")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "jaxmpc"


def _compiler() -> str:
    for cxx in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if cxx and shutil.which(cxx):
            return cxx
    raise NativeUnavailable("no C++ compiler found (set CXX, or install g++)")


def _build(source: pathlib.Path) -> pathlib.Path:
    """Compile ``source`` into the cache (atomically, so concurrent builds are safe)."""
    cxx = _compiler()
    include = jax.ffi.include_dir()
    tag = hashlib.sha256(
        source.read_bytes() + repr((cxx, _FLAGS, importlib.metadata.version("jaxlib"))).encode()
    ).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{tag}.so"
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out_dir = target.parent
    except OSError:  # read-only home: build for this process only
        out_dir = pathlib.Path(tempfile.mkdtemp(prefix="jaxmpc-"))
        target = out_dir / target.name
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    cmd = [cxx, *_FLAGS, "-isystem", include, str(source), "-o", tmp]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise NativeUnavailable(f"building {source.name} failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    os.replace(tmp, target)
    return target


@functools.cache
def _load_cached(name: str) -> ctypes.CDLL:
    return ctypes.CDLL(str(_build(_SOURCES / f"{name}.cc")))


def load(name: str) -> ctypes.CDLL:
    """The built library for ``csrc/<name>.cc``; raises :class:`NativeUnavailable` with the reason."""
    if os.environ.get("JAXMPC_NATIVE", "1") == "0":
        raise NativeUnavailable("native kernels are switched off (JAXMPC_NATIVE=0)")
    try:
        return _load_cached(name)
    except OSError as e:  # a library that would not load (e.g. a foreign architecture)
        raise NativeUnavailable(f"loading {name} failed: {e}") from e

