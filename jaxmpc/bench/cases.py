"""The benchmark cases: what each one runs (:class:`Built`), how it is named
and grouped (:class:`Case`), its inputs, and the protocol-level cases (one
secure op on the shapes of the reference MLP) with their plain JAX float32
twins. The end-to-end cases are in :mod:`jaxmpc.bench.e2e`, the full list
and the selection by name in :mod:`jaxmpc.bench.suite`."""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmpc import tensor
from jaxmpc.train import PRNGS, TrainConfig
from jaxmpc.protocols import arithmetic, comparison


BATCH = 64
CLASSES = 10

#: The matmul shapes of one training step of the reference MLP (batch 64),
#: as M x K x N: forward, backward dx (not for the input layer), backward dW.
MATMUL_SHAPES = (
    (64, 784, 128),  # forward 1
    (64, 128, 64),  # forward 2
    (64, 64, 10),  # forward 3 (and dW 3 = h2^T @ ct)
    (64, 64, 128),  # dx 2 = ct @ w2^T
    (64, 10, 64),  # dx 3 = ct @ w3^T
    (784, 64, 128),  # dW 1 = x^T @ ct
    (128, 64, 64),  # dW 2 = h1^T @ ct
)


@dataclasses.dataclass(frozen=True)
class Built:
    """What a benchmark runs: ``secure(*args)`` and, if any, ``plain(*plain_args)``."""

    secure: Callable[..., Any]
    args: tuple
    plain: Callable[..., Any] | None = None
    plain_args: tuple = ()


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    group: str  # "op", "e2e" or "memory"
    parties: int
    build: Callable[[], Built]
    quick: bool = False  # in the --quick subset
    default: bool = True  # run without --only (False: only when named)
    skip: str | None = None  # why it cannot run (e.g. a protocol not there yet)


def _key(seed: int = 0) -> jax.Array:
    """A key of the default PRNG of :class:`jaxmpc.train.TrainConfig` (what the main job uses)."""
    return jax.random.key(seed, impl=PRNGS[TrainConfig.prng])


def _uniform(shape: Sequence[int], lo: float, hi: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(lo, hi, size=tuple(shape)).astype(np.float32)


def _shared(x: np.ndarray, n: int, seed: int) -> tensor.SharedTensor:
    return tensor.share(x, _key(1000 + seed), n)


def _shape_name(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _binary_op(n: int, shape, secure_fn, plain_fn, lo=-2.0, hi=2.0) -> Callable[[], Built]:
    def build() -> Built:
        x, y = _uniform(shape, lo, hi, 1), _uniform(shape, lo, hi, 2)
        return Built(secure_fn, (_shared(x, n, 1), _shared(y, n, 2), _key()), plain_fn, (jnp.asarray(x), jnp.asarray(y)))

    return build


def _unary_op(n: int, shape, secure_fn, plain_fn, lo=-2.0, hi=2.0) -> Callable[[], Built]:
    def build() -> Built:
        x = _uniform(shape, lo, hi, 1)
        plain = (plain_fn, (jnp.asarray(x),)) if plain_fn else (None, ())
        return Built(secure_fn, (_shared(x, n, 1), _key()), *plain)

    return build


def _matmul_case(n: int, m: int, k: int, nn_: int) -> Callable[[], Built]:
    def build() -> Built:
        x = _uniform((m, k), -1.0, 1.0, 1)
        w = _uniform((k, nn_), -1.0 / math.sqrt(k), 1.0 / math.sqrt(k), 2)
        return Built(
            arithmetic.matmul,
            (_shared(x, n, 1), _shared(w, n, 2), _key()),
            jnp.matmul,
            (jnp.asarray(x), jnp.asarray(w)),
        )

    return build


def _mul_bit_case(n: int, shape) -> Callable[[], Built]:
    def build() -> Built:
        bits = (np.random.default_rng(3).random(shape) < 0.5).astype(np.float32)
        y = _uniform(shape, -2.0, 2.0, 2)
        b = tensor.SharedTensor(tensor.split(_key(7), jnp.asarray(bits.astype(np.uint64)), n), 0)
        return Built(
            comparison.mul_bit,
            (b, _shared(y, n, 2), _key()),
            lambda b, y: b * y,
            (jnp.asarray(bits), jnp.asarray(y)),
        )

    return build


def _share_reveal_case(n: int, shape) -> Callable[[], Built]:
    def build() -> Built:
        x = _uniform(shape, 0.0, 1.0, 1)
        return Built(lambda x, key: tensor.reveal(tensor.share(x, key, n)), (jnp.asarray(x), _key()))

    return build


def _onehot_argmax(x: jax.Array) -> jax.Array:
    return jax.nn.one_hot(jnp.argmax(x, axis=-1), x.shape[-1], dtype=x.dtype)


def _approx(name: str) -> tuple[Callable | None, str | None]:
    """``jaxmpc.protocols.approx.<name>`` if that module and function exist."""
    try:
        mod = importlib.import_module("jaxmpc.protocols.approx")
    except ImportError as e:
        return None, f"skipped: jaxmpc.protocols.approx is not available ({e})"
    fn = getattr(mod, name, None)
    if fn is None:
        return None, f"skipped: jaxmpc.protocols.approx has no {name}"
    return fn, None


def _widen(x: tensor.SharedTensor) -> tensor.SharedTensor:
    """``x`` read with twice the fractional bits, as after a product (for trunc)."""
    return tensor.SharedTensor(x.shares << jnp.uint64(x.frac_bits), 2 * x.frac_bits)


def _trunc_after_product(x: tensor.SharedTensor, key: jax.Array) -> tensor.SharedTensor:
    return arithmetic.truncate(_widen(x), key)


def _trunc_local_after_product(x: tensor.SharedTensor, key: jax.Array) -> tensor.SharedTensor:
    return arithmetic.truncate(_widen(x), key, method="local")


def _ltz_plain(x: jax.Array) -> jax.Array:
    return (x < 0).astype(x.dtype)


def _relu_plain(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jax.nn.relu(x), (x > 0).astype(x.dtype)  # the value and the derivative bit, as comparison.relu
