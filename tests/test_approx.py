"""Tests of jaxmpc.protocols.approx: accuracy over each documented range, rounds,
saturation, softmax, jit and vmap.

Error metric everywhere: ``|y - f(x)| / max(1, |f(x)|)`` against NumPy at the
*encoded* input, i.e. absolute error where ``|f| <= 1`` and relative error
above. Bounds are in units of ``2**-16`` (frac_bits=16) and sit a little above
what was measured (``benchmarks/approx_errors.py``, 2,000 points; and these
grids at 2, 3 and 5 parties), so that a regression fails.

Compile time dominates (the comparison circuit and the dealer's PRNG), so the
functions run eagerly on grids of one common size, which lets the compiled
primitives be shared between functions; the full party matrix of the
expensive cases is marked ``slow``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmpc import cost, tensor
from jaxmpc.protocols import approx
from jaxmpc.tensor import SharedTensor

F = 16
ULP = 2.0**-F
POINTS = 96  # one grid size for every function (shared compilations)


def _grid(lo: float, hi: float, geometric: bool, points: int = POINTS) -> np.ndarray:
    g = np.geomspace(lo, hi, points) if geometric else np.linspace(lo, hi, points)
    return np.round(g * 2.0**F) / 2.0**F  # exactly representable: the encoded input


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


# name: (call, reference, (lo, hi), geometric grid, bound in units of 2**-16 of the metric)
CASES = {
    "exp": (lambda x, k: approx.exp(x, k), np.exp, (-16.0, 8.0), False, 2.5),
    "exp_squaring": (lambda x, k: approx.exp(x, k, 8, method="squaring"), np.exp, (-16.0, 6.0), False, 38.0),
    "sigmoid": (lambda x, k: approx.sigmoid(x, k), _sigmoid, (-16.0, 16.0), False, 2.5),
    "reciprocal": (lambda x, k: approx.reciprocal(x, k), lambda v: 1.0 / v, (2.0**-8, 2.0**8), True, 2.5),
    "inv_sqrt": (lambda x, k: approx.inv_sqrt(x, k), lambda v: v**-0.5, (2.0**-8, 2.0**8), True, 2.5),
    "log": (lambda x, k: approx.log(x, k), np.log, (2.0**-16, 2.0**8), True, 2.5),
}
# log on reciprocal's range: the same thresholds, so it shares reciprocal's compiled
# comparison circuit at 3 and 5 parties (the full range runs at 2 parties, and in -m slow)
LOG_SHORT = (lambda x, k: approx.log(x, k, lo=2.0**-8, hi=2.0**8), np.log, (2.0**-8, 2.0**8), True, 2.5)

LTZ_ROUNDS = {2: 8, 3: 9, 5: 11}  # jaxmpc.protocols.comparison: 8 + carry-save layers
ROUNDS = {  # ltz + stages (dealer truncation)
    "exp": lambda n: LTZ_ROUNDS[n] + 4,
    "exp_squaring": lambda n: 18,
    "sigmoid": lambda n: LTZ_ROUNDS[n] + 4,
    "reciprocal": lambda n: LTZ_ROUNDS[n] + 6,
    "inv_sqrt": lambda n: LTZ_ROUNDS[n] + 6,
    "log": lambda n: LTZ_ROUNDS[n] + 6,
}


def _run(call, x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    xs = tensor.share(jnp.asarray(x), jax.random.key(seed), n, F)
    return np.asarray(tensor.reveal(jax.jit(call)(xs, jax.random.key(seed + 1))))


def _metric(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(y - ref) / np.maximum(1.0, np.abs(ref))


def _check_accuracy(case, n: int) -> None:
    call, ref, (lo, hi), geometric, bound = case
    x = _grid(lo, hi, geometric)
    err = _metric(_run(call, x, n), ref(x))
    worst = int(np.argmax(err))
    assert err[worst] <= bound * ULP, (
        f"error {err[worst] / ULP:.2f} units at x={x[worst]:.6g} (n={n}) exceeds the bound {bound} units"
    )


@pytest.mark.parametrize("name", list(CASES))
def test_accuracy_two_parties(name):
    _check_accuracy(CASES[name], 2)


@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.parametrize("name", ["sigmoid", "reciprocal", "inv_sqrt", "log", "exp_squaring"])
def test_accuracy_more_parties(name, n):
    _check_accuracy(LOG_SHORT if name == "log" else CASES[name], n)


@pytest.mark.slow
@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.parametrize("name", ["exp", "log"])
def test_accuracy_more_parties_full_range(name, n):
    _check_accuracy(CASES[name], n)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("name", list(CASES))
def test_rounds(name, n):
    call = CASES[name][0]
    x = tensor.share(jnp.ones((4,)), jax.random.key(0), n, F)
    c = cost.cost_of(call, x, jax.random.key(1))
    assert c.rounds <= ROUNDS[name](n)


def test_rounds_local_truncation():
    """2 parties with SecureML local truncation: only Beaver and comparison rounds remain."""
    x = tensor.share(jnp.ones((4,)), jax.random.key(0), 2, F)
    k = jax.random.key(1)
    assert cost.cost_of(lambda a, b: approx.sigmoid(a, b, trunc="local"), x, k).rounds <= 8 + 2
    assert cost.cost_of(lambda a, b: approx.reciprocal(a, b, trunc="local"), x, k).rounds <= 8 + 3
    assert cost.cost_of(lambda a, b: approx.exp(a, b, 8, method="squaring", trunc="local"), x, k).rounds <= 9


def test_local_truncation_accuracy():
    x = _grid(-16.0, 16.0, False)
    y = _run(lambda a, k: approx.sigmoid(a, k, trunc="local"), x, 2)
    assert np.max(_metric(y, _sigmoid(x))) <= 2.5 * ULP


def test_saturation_is_exact():
    """Far outside the fitted range the result is exactly 0 or 1, however large |x|."""
    far = np.array([1e5, 1e3, 50.0, 13.0])
    x = np.resize(np.concatenate([-far, far]), POINTS)  # the grids' size: compiled programs are reused
    assert np.array_equal(_run(lambda a, k: approx.sigmoid(a, k), x, 2), (x > 0).astype(np.float64))
    neg = np.resize(-far, POINTS)
    assert np.array_equal(_run(lambda a, k: approx.exp(a, k), neg, 2), np.zeros_like(neg))


def _softmax_ref(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _check_softmax(n: int, k: int, axis: int = -1) -> None:
    rows = POINTS // k  # exp then runs on POINTS elements, like the accuracy tests
    rng = np.random.default_rng(0)
    # rows from flat to one-hot, including spreads far beyond exp's fitted range
    x = rng.standard_normal((rows, k)) * np.geomspace(0.25, 64.0, rows)[:, None]
    x = np.round(x * 2.0**F) / 2.0**F
    if axis == 0:
        x = x.T.copy()
    y = _run(lambda a, key: approx.softmax(a, key, axis=axis), x, n)
    assert y.shape == x.shape
    assert np.max(np.abs(y - _softmax_ref(x, axis))) <= 4.0 * ULP
    assert np.max(np.abs(y.sum(axis) - 1.0)) <= 4.0 * k * ULP


def test_softmax_two_parties():
    _check_softmax(2, 2)


def test_softmax_axis_zero():
    _check_softmax(2, 2, axis=0)


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3, 5])
def test_softmax_ten_classes(n):
    _check_softmax(n, 10)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_softmax_rounds(n):
    """max tournament (ceil(log2 k) layers of ltz + 1) + exp + reciprocal + product."""
    x = tensor.share(jnp.ones((2, 10)), jax.random.key(0), n, F)
    c = cost.cost_of(lambda a, k: approx.softmax(a, k), x, jax.random.key(1))
    assert c.rounds <= 4 * (LTZ_ROUNDS[n] + 1) + (LTZ_ROUNDS[n] + 4) + (LTZ_ROUNDS[n] + 6) + 2


def test_softmax_single_class():
    x = tensor.share(jnp.asarray([[3.0], [-2.0]]), jax.random.key(0), 2, F)
    assert np.array_equal(np.asarray(tensor.reveal(approx.softmax(x, jax.random.key(1)))), np.ones((2, 1)))


def test_jit_equals_eager():
    """Same key, same dealer randomness: jitted and eager shares are bit-identical."""
    x = tensor.share(jnp.asarray(_grid(2.0**-8, 2.0**8, True)), jax.random.key(0), 2, F)
    key = jax.random.key(1)

    def both(a, k):
        k1, k2 = jax.random.split(k)
        return approx.reciprocal(a, k1).shares, approx.sigmoid(SharedTensor(a.shares, F), k2).shares

    eager = both(x, key)
    jitted = jax.jit(both)(x, key)
    for e, j in zip(eager, jitted):
        assert e.dtype == jnp.uint64 and jnp.array_equal(e, j)


def test_vmap_matches_loop():
    """vmap over a batch axis of the shares (keys batched too, as they must be: one
    dealer correlation per example) equals a loop; under jit."""
    B = 2
    x = np.stack([_grid(-16.0, 16.0, False)] * B) * np.array([[1.0], [0.5]])
    shares = tensor.share(jnp.asarray(x), jax.random.key(0), 2, F).shares  # (2, B, POINTS)
    keys = jax.random.split(jax.random.key(3), B)

    def one(s, k):
        return approx.sigmoid(SharedTensor(s, F), k).shares

    batched = jax.jit(jax.vmap(one, in_axes=(1, 0), out_axes=1))(shares, keys)
    looped = jnp.stack([one(shares[:, b], keys[b]) for b in range(B)], axis=1)
    assert jnp.array_equal(batched, looped)


def test_thresholds_count():
    assert approx.thresholds("reciprocal", F) == 4 * 16 - 1
    assert approx.thresholds("sigmoid", F) == len(approx._sigmoid_pieces(F).thresholds)
    assert approx.thresholds("exp", F, hi=0.0) < approx.thresholds("exp", F)


def test_exp_max_input():
    assert approx.exp_max_input(16) == 8.0
    with pytest.raises(ValueError):
        approx.exp_max_input(30)


def test_errors():
    x3 = tensor.share(jnp.ones((2,)), jax.random.key(0), 3, F)
    k = jax.random.key(1)
    with pytest.raises(ValueError, match="2 parties"):
        approx.sigmoid(x3, k, trunc="local")
    with pytest.raises(ValueError, match="unknown truncation"):
        approx.sigmoid(x3, k, trunc="nope")
    with pytest.raises(ValueError, match="method"):
        approx.exp(x3, k, method="taylor")
    with pytest.raises(ValueError, match="lo < hi"):
        approx.log(x3, k, lo=2.0, hi=1.0)
    with pytest.raises(ValueError, match="per_octave"):
        approx.inv_sqrt(x3, k, per_octave=0)
    with pytest.raises(ValueError, match="hi="):
        approx.exp(x3, k, hi=-20.0)
    with pytest.raises(ValueError, match="truncation would fail"):
        approx.exp(x3, k, hi=12.0)  # e**12 leaves no head-room at f=16
    with pytest.raises(ValueError, match="truncation would fail"):
        approx.reciprocal(x3, k, lo=2.0**-16)  # outputs up to 2**16: too large at f=16
    with pytest.raises(TypeError):
        approx.exp(jnp.ones((2,)), k)
    with pytest.raises(TypeError):
        approx.exp(x3, 0)
    with pytest.raises(ValueError, match="frac_bits"):
        approx.exp(tensor.share(jnp.ones((2,)), jax.random.key(0), 2, 4), k)
