"""Every benchmark, in the order they run (:func:`all_cases`), and the choice
among them by name (:func:`select`, behind ``--only`` and ``--quick``)."""

from __future__ import annotations

import fnmatch
from typing import Sequence

import jax
import jax.numpy as jnp

from jaxmpc import nn
from jaxmpc.bench.cases import (
    BATCH,
    CLASSES,
    MATMUL_SHAPES,
    Case,
    _approx,
    _binary_op,
    _matmul_case,
    _mul_bit_case,
    _onehot_argmax,
    _ltz_plain,
    _relu_plain,
    _shape_name,
    _share_reveal_case,
    _trunc_after_product,
    _trunc_local_after_product,
    _unary_op,
)
from jaxmpc.bench.e2e import _eval_step_case, _inference_case, _sgd_case, _train_step_case
from jaxmpc.protocols import arithmetic, comparison


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
