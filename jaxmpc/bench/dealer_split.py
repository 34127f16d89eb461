"""The dealer's share of a computation: record the public :mod:`jaxmpc.dealer`
calls made while tracing it (:func:`trace_cost_and_dealer`), then build a
*dealer* program that makes exactly those correlations and an *online*
program that takes them precomputed; :func:`random_words` counts the PRNG
words each draws, to check that the split accounts for all of them."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmpc import cost, dealer


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
