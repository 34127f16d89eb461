"""``jaxmpc bench``: timings of the protocols and of secure training/inference.

What is measured, for every benchmark (all on the default JAX backend: the CPU,
or the GPU when ``jax.devices()`` has one; every party is simulated in one
process, see :func:`jaxmpc.spmd.party_map`):

* **run time** of the jit-compiled secure computation, after compilation and
  two warm-up calls: median, min and max over ``--repeats`` calls, each ended
  by ``block_until_ready``, and the median process CPU time per call (all
  threads), which other processes' load hardly inflates;
* **compile time** (``jax.jit(fn).lower(...).compile()``), reported apart;
* the same computation in **plain JAX float32** (where a twin exists), timed
  in the same loop (calls are interleaved, so background load hits both alike),
  and the ratio secure / plain;
* the **dealer's share**: every call of a public ``jaxmpc.dealer`` function
  made while tracing the computation is recorded (its static arguments and
  output shapes). Two extra programs are then compiled: *dealer*, which makes
  exactly those correlations (same functions, same shapes) and nothing else,
  and *online*, the computation with each dealer call replaced by the next of
  a list of precomputed correlations passed in as arguments (randomness
  precomputed). ``dealer_ms + online_ms`` need not equal the fused
  ``median_ms``: XLA fuses and schedules the two parts together there. The
  split is checked by counting the PRNG words each program draws; any
  mismatch is reported in the record's ``note``;
* **rounds and bytes** per party from :func:`jaxmpc.cost.cost_of` (trace-time,
  see :mod:`jaxmpc.cost` for the conventions), and an *estimate* of the wall
  time over a network, ``t = compute + rounds * RTT + bytes_per_party /
  bandwidth`` for a LAN (10 Gbit/s, 0.2 ms RTT) and a WAN (100 Mbit/s, 40 ms
  RTT), with ``compute`` = the measured simulated time (all parties on one
  machine, dealer included: an upper bound for one party's compute);
* for a short training run: resident memory after each epoch (does it stay
  flat?) and the process's peak (``getrusage``), plus the device allocator's
  statistics where the backend has them (GPU).

Benchmarks are selected by name (``--only``); names look like
``matmul/64x784x128/2p``, ``train_step/relu/2p``, ``inference/square/3p``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import fnmatch
import functools
import gc
import importlib
import inspect
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmpc import cost, dealer, losses, nn, optim, tensor, train
from jaxmpc.protocols import arithmetic, comparison

MIB = 2**20

#: The network model of the estimates: (bandwidth in bytes/s, round-trip time in s).
NETWORKS = {
    "lan": {"bandwidth_bit_per_s": 10e9, "rtt_ms": 0.2},
    "wan": {"bandwidth_bit_per_s": 100e6, "rtt_ms": 40.0},
}

#: Targets to report against (benchmarks, not pass/fail tests).
TARGETS = {
    "train_step/relu/2p": {"median_ms": 15.0, "ratio": 40.0},
    "inference/relu/2p": {"median_ms": 5.0},
}

BATCH = 64
CLASSES = 10
DEFAULT_REPEATS = 20
QUICK_REPEATS = 3
MEMORY_EPOCHS, MEMORY_EPOCHS_QUICK, MEMORY_BATCHES = 5, 2, 10

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


# ------------------------------------------------------------------ cases


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
    return jax.random.key(seed)


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


def _reference_model(n: int, activation: str, seed: int = 0):
    """Shared and plaintext parameters, optimizer and one batch of synthetic data.

    The data are random (inputs like normalised pixels, one-hot labels):
    timings do not depend on the values."""
    config = train.TrainConfig(parties=n, activation=activation).validate()
    root = _key(seed)
    k_init, k_model, k_data, k_opt = jax.random.split(root, 4)
    params_plain = nn.init_mlp(k_init)
    params = nn.share_params(params_plain, k_model, n, config.frac_bits)
    x = _uniform((BATCH, nn.MNIST_MLP[0]), -0.42, 2.8, 5)
    labels = np.random.default_rng(6).integers(0, CLASSES, BATCH)
    y = np.eye(CLASSES, dtype=np.float32)[labels]
    xs = tensor.share(x, jax.random.fold_in(k_data, 0), n, config.frac_bits)
    ys = tensor.share(y, jax.random.fold_in(k_data, 1), n, config.frac_bits)
    optimizer = optim.sgd(config.lr, k_opt, config.momentum, trunc=config.trunc)
    return config, params_plain, params, optimizer, (x, y), (xs, ys)


def _plain_train_step(config: train.TrainConfig):
    """The same SGD step in plain JAX float32 (as :func:`jaxmpc.train.train_plaintext`)."""
    opt = optax.sgd(config.lr)

    def loss(p, x, y):
        return losses.mse_plain(nn.mlp_plain(p, x, activation=config.activation), y)

    def step(p, s, x, y):
        v, g = jax.value_and_grad(loss)(p, x, y)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, v

    return step, opt


def _train_step_case(n: int, activation: str) -> Callable[[], Built]:
    def build() -> Built:
        config, pp, params, optimizer, (x, y), (xs, ys) = _reference_model(n, activation)
        step = train.make_train_step(config, optimizer)
        plain_step, plain_opt = _plain_train_step(config)
        pp = jax.tree.map(jnp.asarray, pp)
        return Built(
            step,
            (params, optimizer.init(params), xs, ys, _key(9)),
            plain_step,
            (pp, plain_opt.init(pp), jnp.asarray(x), jnp.asarray(y)),
        )

    return build


def _inference_case(n: int, activation: str) -> Callable[[], Built]:
    def build() -> Built:
        config, pp, params, _, (x, _y), (xs, _ys) = _reference_model(n, activation)
        return Built(
            lambda p, x, key: nn.mlp(p, x, key, activation=activation, trunc=config.trunc),
            (params, xs, _key(9)),
            lambda p, x: nn.mlp_plain(p, x, activation=activation),
            (jax.tree.map(jnp.asarray, pp), jnp.asarray(x)),
        )

    return build


def _eval_step_case(n: int, activation: str) -> Callable[[], Built]:
    def build() -> Built:
        config, pp, params, _, (x, y), (xs, ys) = _reference_model(n, activation)

        def plain(p, x, y):
            pred = jnp.argmax(nn.mlp_plain(p, x, activation=activation), axis=-1)
            return jnp.sum(pred == jnp.argmax(y, axis=-1))

        return Built(
            train.make_eval_step(config),
            (params, xs, ys, _key(9)),
            plain,
            (jax.tree.map(jnp.asarray, pp), jnp.asarray(x), jnp.asarray(y)),
        )

    return build


def _sgd_case(n: int) -> Callable[[], Built]:
    """One SGD update of all parameters of the reference MLP (gradient -> new params)."""

    def build() -> Built:
        config, pp, params, optimizer, _, _ = _reference_model(n, "relu")
        grads = nn.share_params(jax.tree.map(lambda p: p * 0.01, pp), _key(11), n, config.frac_bits)

        def secure(params, state, grads):
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        plain_opt = optax.sgd(config.lr)
        pp = jax.tree.map(jnp.asarray, pp)
        pg = jax.tree.map(lambda p: p * 0.01, pp)

        def plain(p, s, g):
            u, s = plain_opt.update(g, s, p)
            return optax.apply_updates(p, u), s

        return Built(secure, (params, optimizer.init(params), grads), plain, (pp, plain_opt.init(pp), pg))

    return build


def all_cases(parties: Sequence[int]) -> list[Case]:
    """Every benchmark, in the order they run."""
    cases: list[Case] = []
    for n in parties:
        p = f"{n}p"

        def op(name, build, quick=False, skip=None):
            cases.append(Case(f"{name}/{p}", "op", n, build, quick, skip=skip))

        op("share_reveal/64x784", _share_reveal_case(n, (BATCH, 784)), quick=True)
        for shape in ((BATCH, 128), (BATCH, 64), (BATCH, CLASSES)):
            s, q = _shape_name(shape), shape == (BATCH, 128)
            op(f"mul/{s}", _binary_op(n, shape, arithmetic.mul, jnp.multiply), quick=q)
            op(f"square/{s}", _unary_op(n, shape, arithmetic.square, jnp.square))
        for m, k, nn_ in MATMUL_SHAPES:
            op(f"matmul/{m}x{k}x{nn_}", _matmul_case(n, m, k, nn_), quick=(m, k, nn_) == (64, 784, 128))
        op("trunc/64x128", _unary_op(n, (BATCH, 128), _trunc_after_product, None), quick=True)
        if n == 2:
            op("trunc_local/64x128", _unary_op(n, (BATCH, 128), _trunc_local_after_product, None))
        op("ltz/64x128", _unary_op(n, (BATCH, 128), comparison.ltz, _ltz_plain))
        for shape in ((BATCH, 128), (BATCH, 64)):
            s = _shape_name(shape)
            op(f"relu/{s}", _unary_op(n, shape, comparison.relu, _relu_plain), quick=shape == (BATCH, 128))
            op(f"mul_bit/{s}", _mul_bit_case(n, shape))
        op("argmax/64x10", _unary_op(n, (BATCH, CLASSES), comparison.argmax, _onehot_argmax))
        for name, plain, lo, hi in (
            ("exp", jnp.exp, -4.0, 1.0),
            ("reciprocal", jnp.reciprocal, 0.5, 8.0),
            ("softmax", jax.nn.softmax, -3.0, 3.0),
        ):
            fn, why = _approx(name)  # called as fn(x, key)
            op(f"{name}/64x10", _unary_op(n, (BATCH, CLASSES), fn, plain, lo, hi), quick=name == "exp", skip=why)
        op("sgd_update/mlp", _sgd_case(n))
    for n in parties:
        for act in nn.ACTIVATIONS:
            quick = n == parties[0] and act == "relu"
            cases.append(Case(f"train_step/{act}/{n}p", "e2e", n, _train_step_case(n, act), quick))
            cases.append(Case(f"inference/{act}/{n}p", "e2e", n, _inference_case(n, act), quick))
            # encrypted evaluation (logits, argmax, count of correct): only when named
            cases.append(Case(f"eval_step/{act}/{n}p", "e2e", n, _eval_step_case(n, act), default=False))
    n0 = parties[0]
    cases.append(Case(f"memory/train/relu/{n0}p", "memory", n0, _train_step_case(n0, "relu")))
    return cases


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


def select(cases: Sequence[Case], only: Sequence[str] | None, quick: bool) -> list[Case]:
    """Cases whose name matches a pattern of ``only``: a glob, or (without
    ``*?[``) whole ``/``-separated parts of the name in a row. Without ``only``:
    all cases (``quick``: the quick subset)."""
    if not only:
        return [c for c in cases if (c.quick if quick else c.default)]

    def hit(name: str, pat: str) -> bool:
        if any(ch in pat for ch in "*?["):
            return fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(name, pat + "/*")
        # no glob: the pattern's /-separated parts appear in a row among the name's
        parts, want = name.split("/"), pat.strip("/").split("/")
        return any(parts[i : i + len(want)] == want for i in range(len(parts) - len(want) + 1))

    chosen = [c for c in cases if any(hit(c.name, p) for p in only)]
    if not chosen:
        names = ", ".join(sorted({_family(c.name) for c in cases}))
        raise ValueError(f"no benchmark matches --only {','.join(only)}; names look like {names} (see --list)")
    return chosen


def _family(name: str) -> str:
    parts = name.split("/")
    return "/".join(parts[:2]) + "/..." if len(parts) > 2 else name


# --------------------------------------------------------- dealer split


def _dealer_functions() -> dict[str, Callable]:
    """Public functions of :mod:`jaxmpc.dealer` that take a ``key`` first."""
    out = {}
    for name, obj in vars(dealer).items():
        if name.startswith("_") or not inspect.isfunction(obj) or obj.__module__ != dealer.__name__:
            continue
        params = list(inspect.signature(obj).parameters)
        if params and params[0] == "key":
            out[name] = obj
    return out


@contextlib.contextmanager
def _dealer_hook(hook: Callable) -> Iterator[dict[str, Callable]]:
    """While active, an outermost call ``dealer.f(key, *rest)`` becomes
    ``hook(name, f, key, rest, kwargs)`` (calls made by dealer functions
    themselves pass through). Restores the module on exit."""
    originals = _dealer_functions()
    depth = [0]

    def wrap(name: str, f: Callable) -> Callable:
        @functools.wraps(f)
        def wrapper(key, *rest, **kwargs):
            if depth[0]:
                return f(key, *rest, **kwargs)
            depth[0] += 1
            try:
                return hook(name, f, key, rest, kwargs)
            finally:
                depth[0] -= 1

        return wrapper

    for name, f in originals.items():
        setattr(dealer, name, wrap(name, f))
    try:
        yield originals
    finally:
        for name, f in originals.items():
            setattr(dealer, name, f)


@dataclasses.dataclass(frozen=True)
class DealerCall:
    """One call ``dealer.<name>(key, *rest, **kwargs)`` seen while tracing.

    Array arguments (e.g. forward masks that ``beaver_transpose_triples``
    reuses) are traced values of the computation; they are kept as
    :class:`ArrayArg` placeholders and fed to the dealer program as inputs.
    """

    name: str
    rest: tuple
    kwargs: dict
    out: Any  # pytree of ShapeDtypeStruct


@dataclasses.dataclass(frozen=True)
class ArrayArg:
    index: int  # position in the dealer program's list of array inputs
    spec: jax.ShapeDtypeStruct


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray))


def trace_cost_and_dealer(fn: Callable, args: tuple) -> tuple[cost.Cost, list[DealerCall]]:
    """One abstract trace: the communication cost and the dealer calls, in order."""
    calls: list[DealerCall] = []
    n_arrays = [0]

    def placeholder(x):
        if not _is_array(x):
            return x
        n_arrays[0] += 1
        return ArrayArg(n_arrays[0] - 1, jax.ShapeDtypeStruct(x.shape, x.dtype))

    def record(name, f, key, rest, kwargs):
        out = f(key, *rest, **kwargs)
        rest, kwargs = jax.tree.map(placeholder, (rest, kwargs))
        calls.append(DealerCall(name, rest, kwargs, jax.tree.map(lambda t: jax.ShapeDtypeStruct(t.shape, t.dtype), out)))
        return out

    with _dealer_hook(record), cost.recording() as log:
        jax.eval_shape(lambda *a: fn(*a), *args)  # a fresh function: a cached trace records nothing
    return cost.Cost(tuple(log)), calls


def _array_args(calls: Sequence[DealerCall]) -> list[ArrayArg]:
    leaves = jax.tree.leaves([(c.rest, c.kwargs) for c in calls], is_leaf=lambda x: isinstance(x, ArrayArg))
    return sorted((x for x in leaves if isinstance(x, ArrayArg)), key=lambda a: a.index)


def dealer_inputs(calls: Sequence[DealerCall], seed: int = 0) -> list[jax.Array]:
    """Stand-ins (uniform words of the same shape and dtype) for the array
    arguments of the recorded dealer calls, made outside the dealer program.
    The dealer's work does not depend on their values."""
    rng = np.random.default_rng(seed)
    out = []
    for a in _array_args(calls):
        dtype = np.dtype(a.spec.dtype)
        if dtype.kind in "ui":
            out.append(jnp.asarray(rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, a.spec.shape, dtype, True)))
        else:
            out.append(jnp.zeros(a.spec.shape, a.spec.dtype))
    return out


def dealer_program(calls: Sequence[DealerCall]) -> Callable[[jax.Array, list], list]:
    """The dealer alone, ``run(key, arrays)``: the same correlations (functions,
    static arguments, shapes) from fresh keys; ``arrays`` from :func:`dealer_inputs`."""
    funcs = _dealer_functions()

    def run(key, arrays):
        def fill(x):
            return arrays[x.index] if isinstance(x, ArrayArg) else x

        outs = []
        for i, c in enumerate(calls):
            rest, kwargs = jax.tree.map(fill, (c.rest, c.kwargs), is_leaf=lambda x: isinstance(x, ArrayArg))
            outs.append(funcs[c.name](jax.random.fold_in(key, i), *rest, **kwargs))
        return outs

    return run


def online_program(fn: Callable, calls: Sequence[DealerCall]) -> Callable:
    """``fn`` with its dealer calls answered from ``pre`` (precomputed correlations)."""

    def run(pre, *args):
        used = [0]

        def replay(name, f, key, rest, kwargs):
            i = used[0]
            if i >= len(calls) or calls[i].name != name:
                raise RuntimeError(f"dealer call {i} ({name}) differs from the recorded trace")
            used[0] += 1
            return pre[i]

        with _dealer_hook(replay):
            out = fn(*args)
        if used[0] != len(calls):
            raise RuntimeError(f"replayed {used[0]} of {len(calls)} dealer calls")
        return out

    return run


def _random_words(jaxpr) -> int:
    """64-bit words drawn by ``random_bits`` in a jaxpr (sub-jaxprs included)."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "random_bits":
            keys = math.prod(eqn.invars[0].aval.shape)
            total += keys * math.prod(eqn.params["shape"]) * eqn.params["bit_width"] // 64
        for p in eqn.params.values():
            for sub in p if isinstance(p, (tuple, list)) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += _random_words(inner)
    return total


def random_words(fn: Callable, *args) -> int:
    return _random_words(jax.make_jaxpr(lambda *a: fn(*a))(*args).jaxpr)


# ----------------------------------------------------------------- timing


def _compile(fn: Callable, args: tuple, **jit_kwargs):
    """Trace, lower and compile a fresh jit of ``fn`` (no cache hit): (executable, seconds)."""
    t0 = time.perf_counter()
    compiled = jax.jit(lambda *a: fn(*a), **jit_kwargs).lower(*args).compile()
    return compiled, time.perf_counter() - t0


def time_interleaved(
    programs: dict[str, tuple[Callable, tuple]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall times and process CPU times (all threads) in ms of each compiled
    program: two warm-up calls each, then ``repeats`` rounds calling every
    program once (interleaved).

    CPU time is what the call cost the machine; unlike wall time it hardly
    grows when other processes compete for the cores (on an idle machine,
    wall ~ CPU / cores used)."""
    for _ in range(2):
        for f, a in programs.values():
            jax.block_until_ready(f(*a))
    wall: dict[str, list[float]] = {k: [] for k in programs}
    cpu: dict[str, list[float]] = {k: [] for k in programs}
    for _ in range(repeats):
        for k, (f, a) in programs.items():
            c0, t0 = time.process_time(), time.perf_counter()
            jax.block_until_ready(f(*a))
            wall[k].append((time.perf_counter() - t0) * 1e3)
            cpu[k].append((time.process_time() - c0) * 1e3)
    return wall, cpu


def network_estimate_ms(compute_ms: float, rounds: int, bytes_per_party: int, network: str) -> float:
    net = NETWORKS[network]
    return compute_ms + rounds * net["rtt_ms"] + 1e3 * bytes_per_party * 8 / net["bandwidth_bit_per_s"]


def _stats(samples: list[float]) -> tuple[float, float, float]:
    return statistics.median(samples), min(samples), max(samples)


def run_case(case: Case, repeats: int, *, dealer_split: bool = True, log: Callable[[str], None]) -> dict[str, Any]:
    """Compile and time one benchmark; returns its JSON record."""
    built = case.build()
    op, _, rest = case.name.partition("/")
    rec: dict[str, Any] = {"name": case.name, "group": case.group, "op": op, "parties": case.parties, "repeats": repeats}
    notes: list[str] = []

    c, calls = trace_cost_and_dealer(built.secure, built.args)
    rec.update(rounds=c.rounds, bytes=c.bytes_per_party, bytes_total=c.bytes_total)

    log("compiling")
    secure, rec["compile_s"] = _compile(built.secure, built.args)
    programs = {"secure": (secure, built.args)}
    if built.plain is not None:
        plain, rec["plain_compile_s"] = _compile(built.plain, built.plain_args)
        programs["plain"] = (plain, built.plain_args)
    if dealer_split and calls:
        try:
            d_args = (_key(12345), dealer_inputs(calls))
            d_fn, o_fn = dealer_program(calls), online_program(built.secure, calls)
            d_prog, rec["dealer_compile_s"] = _compile(d_fn, d_args)
            pre = jax.block_until_ready(d_prog(*d_args))
            o_prog, rec["online_compile_s"] = _compile(o_fn, (pre,) + built.args)
            programs["dealer"] = (d_prog, d_args)
            programs["online"] = (o_prog, (pre,) + built.args)
            words = {
                "full": random_words(built.secure, *built.args),
                "dealer": random_words(d_fn, *d_args),
                "online": random_words(o_fn, pre, *built.args),
            }
            rec["dealer_words"] = words["dealer"]
            if words["dealer"] + words["online"] != words["full"]:
                notes.append(
                    f"dealer split inexact: PRNG words full {words['full']}, dealer {words['dealer']}, "
                    f"online {words['online']}"
                )
        except Exception as e:  # the split is a diagnostic; never lose the main timing
            notes.append(f"dealer split failed: {type(e).__name__}: {e}")
    log(f"timing ({repeats} repeats)")
    samples, cpu = time_interleaved(programs, repeats)

    rec["median_ms"], rec["min_ms"], rec["max_ms"] = _stats(samples["secure"])
    rec["cpu_median_ms"] = statistics.median(cpu["secure"])
    if "plain" in samples:
        rec["plain_median_ms"], rec["plain_min_ms"], rec["plain_max_ms"] = _stats(samples["plain"])
        rec["plain_cpu_median_ms"] = statistics.median(cpu["plain"])
        rec["ratio"] = rec["median_ms"] / rec["plain_median_ms"]
    else:
        rec["plain_median_ms"] = None
    if "dealer" in samples:
        rec["dealer_ms"] = statistics.median(samples["dealer"])
        rec["online_ms"] = statistics.median(samples["online"])
        rec["dealer_fraction"] = rec["dealer_ms"] / (rec["dealer_ms"] + rec["online_ms"])
    elif not calls:
        rec["dealer_ms"], rec["online_ms"], rec["dealer_fraction"] = 0.0, rec["median_ms"], 0.0
    for net in NETWORKS:
        rec[f"{net}_est_ms"] = network_estimate_ms(rec["median_ms"], rec["rounds"], rec["bytes"], net)
    if notes:
        rec["note"] = "; ".join(notes)
    return rec


def _rss_bytes() -> int | None:
    """Current resident set size (Linux ``/proc``), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _device_memory() -> dict[str, int] | None:
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    if not stats:
        return None
    return {k: int(v) for k, v in stats.items() if k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit")}


def run_memory(case: Case, epochs: int, *, log: Callable[[str], None]) -> dict[str, Any]:
    """A short training run (``epochs`` x 10 batches, donated buffers, as
    :func:`jaxmpc.train.train`): RSS after each epoch and the process peak."""
    built = case.build()
    params, state, xs, ys, key = built.args
    c = cost.cost_of(built.secure, *built.args)
    n = case.parties
    # ten distinct batches: the one batch with fresh shares (same secret)
    def reshare(t, i):
        noise = tensor.split(jax.random.fold_in(_key(77), i), jnp.zeros(t.shape, jnp.uint64), n)
        return tensor.SharedTensor(t.shares + noise, t.frac_bits)

    bx = tensor.stack([reshare(xs, i) for i in range(MEMORY_BATCHES)])
    by = tensor.stack([reshare(ys, 100 + i) for i in range(MEMORY_BATCHES)])
    log("compiling")
    step, compile_s = _compile(built.secure, (params, state, bx[0], by[0], key), donate_argnums=(0, 1))
    rss, times = [], []
    for epoch in range(epochs):
        for i in range(MEMORY_BATCHES):
            k = jax.random.fold_in(key, epoch * MEMORY_BATCHES + i)
            t0 = time.perf_counter()
            params, state, _loss = step(params, state, bx[i], by[i], k)
            jax.block_until_ready(params)
            times.append((time.perf_counter() - t0) * 1e3)
        gc.collect()
        rss.append(_rss_bytes())
        log(f"epoch {epoch + 1}/{epochs}: rss {rss[-1] / MIB if rss[-1] else float('nan'):.1f} MiB")
    rec: dict[str, Any] = {
        "name": case.name, "group": "memory", "op": "memory", "parties": n, "repeats": len(times),
        "epochs": epochs, "batches_per_epoch": MEMORY_BATCHES, "compile_s": compile_s,
        "median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
        "plain_median_ms": None, "rounds": c.rounds, "bytes": c.bytes_per_party, "bytes_total": c.bytes_total,
        "peak_rss_mib": _peak_rss_bytes() / MIB,
    }
    if all(r is not None for r in rss):
        rec["rss_mib_per_epoch"] = [r / MIB for r in rss]
        growth = (max(rss[1:]) - rss[0]) if len(rss) > 1 else 0
        rec["rss_growth_mib"] = growth / MIB
        rec["flat"] = growth <= max(16 * MIB, 0.02 * rss[0])
    dev = _device_memory()
    if dev:
        rec["device_memory"] = dev
    for net in NETWORKS:
        rec[f"{net}_est_ms"] = network_estimate_ms(rec["median_ms"], rec["rounds"], rec["bytes"], net)
    return rec


# --------------------------------------------------------------- reports


#: The secure ops of one training step / inference batch of the reference MLP
#: (batch 64), by activation: (per-op benchmark, how many times).
def step_composition(kind: str, activation: str) -> list[tuple[str, int]]:
    fwd = [("matmul/64x784x128", 1), ("matmul/64x128x64", 1), ("matmul/64x64x10", 1)]
    act_fwd = (
        [("relu/64x128", 1), ("relu/64x64", 1)] if activation == "relu" else [("square/64x128", 1), ("square/64x64", 1)]
    )
    if kind == "inference":
        return fwd + act_fwd
    bwd = [("matmul/64x64x128", 1), ("matmul/64x10x64", 1), ("matmul/784x64x128", 1),
           ("matmul/128x64x64", 1), ("matmul/64x64x10", 1)]
    act_bwd = (
        [("mul_bit/64x128", 1), ("mul_bit/64x64", 1)] if activation == "relu" else [("mul/64x128", 1), ("mul/64x64", 1)]
    )
    loss = [("square/64x10", 1), ("mul/64x10", 1)]
    return fwd + act_fwd + loss + bwd + act_bwd + [("sgd_update/mlp", 1)]


def breakdowns(results: Sequence[dict]) -> dict[str, dict]:
    """For each measured train step / inference whose secure ops all have a
    per-op benchmark in ``results``: those ops' timings, largest first.

    Uses the median CPU time per call where every record has one (it is not
    inflated by other processes' load, so parts and whole stay comparable on
    a busy machine), else the median wall time."""
    by_name = {r["name"]: r for r in results}
    metric = "cpu_median_ms" if all(r.get("cpu_median_ms") for r in results if r["group"] != "memory") else "median_ms"
    out = {}
    for r in results:
        if r["group"] != "e2e" or r["op"] not in ("train_step", "inference"):
            continue
        _, act, p = r["name"].split("/")
        comps, total, missing = [], 0.0, []
        for op, count in step_composition(r["op"], act):
            m = by_name.get(f"{op}/{p}")
            if m is None:
                missing.append(op)
                continue
            # several entries may share an op (matmul/64x64x10 twice): merge
            ms = count * m[metric]
            for cmp in comps:
                if cmp["name"] == m["name"]:
                    cmp["count"] += count
                    cmp["ms"] += ms
                    if cmp["dealer_ms"] is not None:
                        cmp["dealer_ms"] += count * m["dealer_ms"]
                    break
            else:
                d = m.get("dealer_ms")
                comps.append({"name": m["name"], "count": count, "ms": ms, "dealer_ms": None if d is None else count * d})
            total += ms
        if not comps or missing:
            continue
        comps.sort(key=lambda c: -c["ms"])
        out[r["name"]] = {
            "metric": metric, "measured_ms": r[metric], "sum_of_ops_ms": total,
            "other_ms": r[metric] - total, "ops": comps,
        }
    return out


def relu_vs_square(results: Sequence[dict], metric: str = "median_ms") -> dict[str, float]:
    """``{"train_step/2p": relu time / square time, ...}`` by ``metric``."""
    by_name = {r["name"]: r for r in results}
    out = {}
    for r in results:
        parts = r["name"].split("/")
        if r["group"] == "e2e" and len(parts) == 3 and parts[1] == "relu":
            sq = by_name.get(f"{parts[0]}/square/{parts[2]}")
            if sq and r.get(metric) and sq.get(metric):
                out[f"{parts[0]}/{parts[2]}"] = r[metric] / sq[metric]
    return out


def target_report(results: Sequence[dict]) -> list[dict]:
    by_name = {r["name"]: r for r in results}
    out = []
    for name, goals in TARGETS.items():
        r = by_name.get(name)
        if r is None:
            continue
        for metric, limit in goals.items():
            value = r.get(metric)
            if value is None:
                continue
            out.append({"name": name, "metric": metric, "value": value, "target": limit, "met": value <= limit})
    return out


def _fmt(v: Any, spec: str = ".3g", none: str = "-") -> str:
    if v is None:
        return none
    if isinstance(v, float):
        if spec == "ms":
            return f"{v:.3f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:.0f}"
        return format(v, spec)
    return str(v)


def format_table(results: Sequence[dict]) -> str:
    cols = [
        ("benchmark", lambda r: r["name"], "<"),
        ("median", lambda r: _fmt(r["median_ms"], "ms"), ">"),
        ("min", lambda r: _fmt(r["min_ms"], "ms"), ">"),
        ("max", lambda r: _fmt(r["max_ms"], "ms"), ">"),
        ("cpu", lambda r: _fmt(r.get("cpu_median_ms"), "ms"), ">"),
        ("plain", lambda r: _fmt(r.get("plain_median_ms"), "ms"), ">"),
        ("ratio", lambda r: _fmt(r.get("ratio"), ".0f") if r.get("ratio") is not None else "-", ">"),
        ("dealer", lambda r: _fmt(r.get("dealer_ms"), "ms"), ">"),
        ("online", lambda r: _fmt(r.get("online_ms"), "ms"), ">"),
        ("compile s", lambda r: _fmt(r.get("compile_s"), ".1f"), ">"),
        ("rounds", lambda r: str(r["rounds"]), ">"),
        ("MiB/party", lambda r: f"{r['bytes'] / MIB:.3f}", ">"),
        ("LAN est", lambda r: _fmt(r.get("lan_est_ms"), "ms"), ">"),
        ("WAN est", lambda r: _fmt(r.get("wan_est_ms"), "ms"), ">"),
    ]
    rows = [[f(r) for _, f, _ in cols] for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, (h, _, _) in enumerate(cols)]

    def line(cells):
        return "  ".join(c.ljust(w) if a == "<" else c.rjust(w) for c, w, (_, _, a) in zip(cells, widths, cols))

    head = line([h for h, _, _ in cols])
    return "\n".join([head, "-" * len(head)] + [line(row) for row in rows])


def format_report(report: dict) -> str:
    res = report["results"]
    lines = [
        f"jaxmpc bench on {report['device']} (jax {report['jax']}, {report['backend']}); "
        f"times in ms, median/min/max of {report['repeats']} runs after compilation",
        "",
        format_table(res),
        "",
        "cpu: median process CPU time per call (all threads; robust to other load). "
        "plain: the same computation in plain JAX float32; ratio = secure / plain median. dealer: the "
        "correlated randomness alone; online: the computation with it precomputed. LAN/WAN est: "
        "median + rounds * RTT + bytes/party / bandwidth (LAN 10 Gbit/s, 0.2 ms; WAN 100 Mbit/s, "
        "40 ms), an estimate.",
    ]
    for r in res:
        if "rss_mib_per_epoch" in r:
            per = ", ".join(f"{v:.0f}" for v in r["rss_mib_per_epoch"])
            lines += ["", f"memory ({r['name']}, {r['epochs']} epochs x {r['batches_per_epoch']} batches): "
                      f"RSS after each epoch {per} MiB; growth {r['rss_growth_mib']:+.1f} MiB "
                      f"({'flat' if r['flat'] else 'NOT flat'}); process peak {r['peak_rss_mib']:.0f} MiB"]
            if r.get("device_memory"):
                lines.append(f"  device memory: {r['device_memory']}")
    for name, b in report["breakdown"].items():
        what = "CPU time" if b["metric"] == "cpu_median_ms" else "wall time"
        lines += ["", f"where the time goes in {name}: {b['measured_ms']:.2f} ms {what} (median), split by the "
                      f"per-op benchmarks of its secure ops (each a separate jit call; dealer = wall time alone):"]
        for c in b["ops"]:
            share = 100 * c["ms"] / b["measured_ms"]
            dealer_part = "" if c["dealer_ms"] is None else f"  (dealer alone {c['dealer_ms']:.3f} ms)"
            lines.append(f"  {c['name']:<28} x{c['count']}  {c['ms']:8.3f} ms  {share:5.1f}%{dealer_part}")
        lines.append(f"  {'rest (measured - sum)':<28}     {b['other_ms']:8.3f} ms  {100 * b['other_ms'] / b['measured_ms']:5.1f}%"
                     "  (carrier conversions, bias adds, key splits; minus what fusion saves)")
    if report["relu_vs_square"]:
        lines += ["", "relu / square time: " + ", ".join(f"{k} {v:.2f}x" for k, v in report["relu_vs_square"].items())]
        if report.get("relu_vs_square_cpu"):
            lines.append("  by CPU time: " + ", ".join(f"{k} {v:.2f}x" for k, v in report["relu_vs_square_cpu"].items()))
    for t in report["targets"]:
        lines.append(
            f"target {t['name']} {t['metric']} <= {t['target']:g}: {t['value']:.2f} "
            f"({'met' if t['met'] else 'NOT met'})"
        )
    for n in report["notes"]:
        lines.append(f"note: {n}")
    for r in res:
        if r.get("note"):
            lines.append(f"note: {r['name']}: {r['note']}")
    return "\n".join(lines)


def device_description() -> str:
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        model = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        model = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        return f"cpu: {model}, {os.cpu_count()} cores"
    return f"{dev.platform}: {dev.device_kind} (x{jax.device_count()})"


def source_revision() -> str | None:
    """``git`` commit of the source tree being measured (``+dirty`` with local
    changes), or None outside a git checkout."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = [r for r in report["results"] if r["group"] != "memory"]
    names = [r["name"] for r in res]
    y = np.arange(len(res))
    fig, ax = plt.subplots(figsize=(11, 0.28 * len(res) + 1.6))
    med = np.array([r["median_ms"] for r in res])
    err = np.array([[m - r["min_ms"], r["max_ms"] - m] for m, r in zip(med, res)]).T
    ax.barh(y + 0.2, med, 0.4, xerr=err, label="secure (median, min-max)", color="tab:blue")
    online = np.array([r.get("online_ms") or 0.0 for r in res])
    ax.barh(y + 0.2, online, 0.4, color="none", edgecolor="black", hatch="//", label="online part")
    plain = np.array([r.get("plain_median_ms") or 0.0 for r in res])
    ax.barh(y - 0.2, plain, 0.4, label="plain JAX float32", color="tab:orange")
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ms (log scale)")
    ax.set_title(f"jaxmpc bench: {report['device']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------ CLI


def run(
    *,
    parties: Sequence[int] = (2, 3),
    repeats: int | None = None,
    quick: bool = False,
    only: Sequence[str] | None = None,
    dealer_split: bool = True,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> dict:
    """Run the selected benchmarks and return the report (what ``--json`` prints)."""
    repeats = repeats or (QUICK_REPEATS if quick else DEFAULT_REPEATS)
    cases = select(all_cases(parties), only, quick)
    notes = []
    results = []
    t_start = time.perf_counter()
    for i, case in enumerate(cases, 1):
        tag = f"[{i}/{len(cases)}] {case.name}"
        if case.skip:
            log(f"{tag}: {case.skip}")
            notes.append(f"{case.name}: {case.skip}")
            continue
        say = lambda m, tag=tag: log(f"{tag}: {m}")  # noqa: E731
        t0 = time.perf_counter()
        if case.group == "memory":
            rec = run_memory(case, MEMORY_EPOCHS_QUICK if quick else MEMORY_EPOCHS, log=say)
        else:
            rec = run_case(case, repeats, dealer_split=dealer_split, log=say)
        results.append(rec)
        extra = f", plain {rec['plain_median_ms']:.3f} ms" if rec.get("plain_median_ms") else ""
        log(f"{tag}: {rec['median_ms']:.3f} ms median{extra} (compile {rec['compile_s']:.1f} s, "
            f"total {time.perf_counter() - t0:.1f} s)")
        if rec.get("note"):
            log(f"{tag}: note: {rec['note']}")
    return {
        "device": device_description(),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "revision": source_revision(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "repeats": repeats,
        "quick": quick,
        "dealer_split": dealer_split,
        "parties": list(parties),
        "network_model": NETWORKS,
        "results": results,
        "breakdown": breakdowns(results),
        "relu_vs_square": relu_vs_square(results),
        "relu_vs_square_cpu": relu_vs_square(results, "cpu_median_ms"),
        "targets": target_report(results),
        "notes": notes,
        "seconds": time.perf_counter() - t_start,
    }


def _parties(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        try:
            n = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected party counts like 2,3, got {text!r}") from None
        if not 2 <= n <= 16:
            raise argparse.ArgumentTypeError(f"party counts must be between 2 and 16, got {n}")
        if n not in out:
            out.append(n)
    return out


def _repeats(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"--repeats must be at least 1, got {v}")
    return v


def _patterns(text: str) -> list[str]:
    pats = [p.strip() for p in text.split(",") if p.strip()]
    if not pats:
        raise argparse.ArgumentTypeError("--only needs at least one name pattern")
    return pats


EPILOG = """\
examples:
  jaxmpc bench                           # everything, 2 and 3 parties (tens of minutes on 2 cores)
  jaxmpc bench --quick                   # a small subset, 3 repeats (CI smoke run)
  jaxmpc bench --only eval_step          # encrypted evaluation: not run unless named
  jaxmpc bench --only 'matmul/*' --parties 2
  jaxmpc bench --only train_step,inference --json --plot bench.png
  jaxmpc bench --list

--only takes comma-separated patterns matched against names such as
matmul/64x784x128/2p, relu/64x128/3p, train_step/relu/2p: globs (*, ?, [..]),
or, without a glob character, whole /-separated parts of a name: "relu" selects
relu/64x128/2p and train_step/relu/2p but not mul_bit/..., "mul/64x10" selects
mul/64x10/2p but not matmul/....
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="time the protocols and secure training/inference against plain JAX",
        description="Benchmarks on the default JAX backend (CPU, or GPU when present): run time after "
        "compilation (median, min, max), compile time, plain JAX float32 twin, the dealer's share, "
        "rounds and bytes with a LAN/WAN estimate, and memory over a short training run. "
        "Progress goes to stderr.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repeats", type=_repeats, default=None,
                   help=f"timed runs per benchmark (default {DEFAULT_REPEATS}; {QUICK_REPEATS} with --quick)")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_REPEATS} repeats, a small subset (unless --only), 2 parties (unless --parties), "
                   "no dealer split (unless --dealer-split): for CI")
    p.add_argument("--only", type=_patterns, default=None, metavar="PATTERN[,PATTERN...]",
                   help="run only the benchmarks whose names match (see below)")
    p.add_argument("--parties", type=_parties, default=None, metavar="N[,N...]",
                   help="party counts (default 2,3; 2 with --quick)")
    p.add_argument("--dealer-split", action=argparse.BooleanOptionalAction, default=None,
                   help="time the dealer alone and the online phase with precomputed randomness "
                   "(two more compilations per benchmark; default: on, off with --quick)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on the last line of stdout")
    p.add_argument("--output", metavar="PATH", default=None, help="also write the JSON report to PATH")
    p.add_argument("--plot", metavar="PATH", default=None, help="bar chart of the timings (needs matplotlib)")
    p.add_argument("--list", action="store_true", help="list the benchmark names and exit")
    p.set_defaults(func=main)


def _check_writable(path: str, what: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"{what} {path!r}: directory {directory!r} does not exist")


def main(args: argparse.Namespace) -> int:
    parties = args.parties or ([2] if args.quick else [2, 3])
    if args.list:
        for c in select(all_cases(parties), args.only, args.quick):
            print(c.name + (f"  ({c.skip})" if c.skip else ""))
        return 0
    if args.plot:
        _check_writable(args.plot, "--plot")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise RuntimeError("--plot needs matplotlib: pip install 'jaxmpc[bench]'") from None
    if args.output:
        _check_writable(args.output, "--output")
    split = (not args.quick) if args.dealer_split is None else args.dealer_split
    report = run(parties=parties, repeats=args.repeats, quick=args.quick, only=args.only, dealer_split=split)
    print(format_report(report), flush=True)
    text = json.dumps(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(json.dumps(report, indent=1) + "\n")
        print(f"report written to {args.output}", file=sys.stderr)
    if args.plot:
        plot(report, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    if args.json:
        print(text, flush=True)
    return 0
