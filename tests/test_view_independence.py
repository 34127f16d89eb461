"""View independence: what one party sees does not depend on the secrets.

For each protocol (mul, matmul, square, truncate, ltz, eqz, relu, a2b, b2a,
argmax) and each single party, the party's *view* — its input shares, every
word it sent and every value it learned (captured with :mod:`jaxmpc.audit`),
and its output shares — must have the same distribution whatever the secret
inputs. We compare two very different secrets:

* ``A``: all zeros (the most structured input there is),
* ``B``: uniform raw encodings in ``[-2**61, 2**61)`` (for bits: all ones),

Vectorised: one call runs ``2 T`` independent trials along a batch axis (the
dealer's randomness and the input shares are independent per element); the
first ``T`` have secret ``A``, the last ``T`` secret ``B``. The view of a
party is a ``(2T, W)`` matrix of 64-bit words (``audit.party_view``; the
bit-sliced words of ``ltz``, 64 trials each, are unsliced into each trial's bits).

Statistics: for every view word, and for the difference and XOR of every pair
of a subset of words (functions of identically distributed views are
identically distributed), a two-sample chi-square test on each of the 8 byte
histograms (``audit.compare_samples``). One family per (protocol, parties,
party) at significance ``ALPHA = 1e-3``, Bonferroni-corrected over its tests.
Seeds are fixed, so the outcome is deterministic. Power is checked too: the
same harness rejects a broken multiplication that opens ``x`` and one that
reuses a Beaver mask.

Finally the truncation-leakage claim of docs/fixed_point.md is tested: the
error of SecureML's local truncation depends on a party's share, the error of
the dealer method does not.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmpc import audit, bitslice, dealer, ring, spmd, tensor
from jaxmpc.protocols import arithmetic, binary, comparison, conversion
from jaxmpc.tensor import SharedTensor

ALPHA = 1e-3
T = 1024  # trials per secret; the batch axis has 2T = 2048 (no other axis has that size)
B2 = 2 * T
MAX_PAIR_COLUMNS = 20
#: each program runs once: compile it cheaply
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def secret_raw(shape, seed: int) -> np.ndarray:
    """Raw int64 encodings: the first T trials 0, the last T uniform in [-2**61, 2**61)."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(-(2**61), 2**61, size=shape, dtype=np.int64)
    raw[:T] = 0
    return raw


def shared(raw: np.ndarray, key, n: int, frac_bits: int = ring.DEFAULT_FRAC_BITS) -> SharedTensor:
    return SharedTensor(tensor.split(key, ring.from_signed(raw), n), frac_bits)


@dataclasses.dataclass(frozen=True)
class Proto:
    name: str
    make: Callable  # (n, key) -> (inputs: tuple of shared objects, run: inputs, key -> outputs)


def _bits_input(n, key):
    bits = np.ones(B2, np.uint64)
    bits[:T] = 0
    return binary.share_bits(bits, key, n)


def make_inputs(name: str, n: int, key):
    k1, k2 = jax.random.split(key)
    if name == "matmul":
        return (shared(secret_raw((B2, 2, 3), 1), k1, n), shared(secret_raw((B2, 3, 2), 2), k2, n))
    if name == "mul":
        return (shared(secret_raw((B2,), 1), k1, n), shared(secret_raw((B2,), 2), k2, n))
    if name == "argmax":
        return (shared(secret_raw((B2, 3), 3), k1, n),)
    if name == "truncate":
        return (shared(secret_raw((B2,), 4), k1, n, 2 * ring.DEFAULT_FRAC_BITS),)
    if name == "b2a":
        return (_bits_input(n, k1),)
    return (shared(secret_raw((B2,), 5), k1, n),)


PROTOCOLS: dict[str, Callable] = {
    "mul": lambda x, y, k: arithmetic.mul(x, y, k),
    "matmul": lambda x, y, k: arithmetic.matmul(x, y, k),
    "square": lambda x, k: arithmetic.square(x, k),
    "truncate": lambda x, k: arithmetic.truncate(x, k),
    "ltz": lambda x, k: comparison.ltz(x, k),
    "eqz": lambda x, k: comparison.eqz(x, k),
    "relu": lambda x, k: comparison.relu(x, k),
    "a2b": lambda x, k: conversion.a2b(x, k),
    "b2a": lambda x, k: conversion.b2a(x, k),
    "argmax": lambda x, k: comparison.argmax(x, k),
}

CASES = [(name, 2) for name in PROTOCOLS] + [(name, 3) for name in ("mul", "truncate", "ltz", "a2b")]


def shares_of(obj) -> list[jax.Array]:
    return [leaf.shares for leaf in jax.tree.leaves(obj, is_leaf=lambda v: isinstance(v, (SharedTensor, binary.SharedBits)))]


def trial_columns(arr: np.ndarray) -> np.ndarray:
    """``audit.batch_columns`` of a leaf with a trial axis; for a bit-sliced leaf
    (``ltz``'s ``(rows, W)`` AND words, its ``(W,)`` packed B2A words: 64
    elements per word, no trial axis), each trial's own bits, unsliced."""
    arr = np.asarray(arr)
    if B2 in arr.shape or arr.ndim > 2 or (64 * arr.shape[-1]) % B2:
        return audit.batch_columns(arr, B2)
    rows = arr.reshape((-1, arr.shape[-1]))
    assert rows.shape[0] <= 64, rows.shape
    sliced = np.zeros((64, rows.shape[1]), np.uint64)
    sliced[: rows.shape[0]] = rows
    per_element = bitslice.unslice_bits(jnp.asarray(sliced), (64 * rows.shape[1],))  # trial-major
    return np.asarray(per_element).reshape(B2, -1)


def party_view(log: audit.AuditLog, party: int) -> np.ndarray:
    """``audit.party_view`` with bit-sliced leaves split by trial (:func:`trial_columns`)."""
    cols = [trial_columns(a) for m in log.view(party) for a in m.sent + (m.received or ())]
    return np.concatenate(cols, axis=1) if cols else np.zeros((B2, 0), np.uint64)


def capture_views(fn: Callable, inputs: tuple, key, n: int) -> dict[int, np.ndarray]:
    """Run ``fn(*inputs, key)`` once (jit, cheap compilation) with an audit
    capture; return each party's view: input shares, sent/received words,
    output shares."""
    with audit.capture() as log:
        out = jax.jit(lambda xs, k: fn(*xs, k), compiler_options=FAST_COMPILE)(inputs, key)
        jax.block_until_ready(out)
    assert log.messages, "nothing was opened"
    views = {}
    for party in range(n):
        cols = [audit.batch_columns(np.asarray(s[party]), B2) for s in shares_of(inputs)]
        cols.append(party_view(log, party))
        cols += [audit.batch_columns(np.asarray(s[party]), B2) for s in shares_of(out)]
        views[party] = np.concatenate(cols, axis=1)
    return views


def pair_columns(width: int) -> list[int]:
    if width <= MAX_PAIR_COLUMNS:
        return list(range(width))
    return sorted(set(np.linspace(0, width - 1, MAX_PAIR_COLUMNS).round().astype(int).tolist()))


def independence_failures(view: np.ndarray) -> tuple[list[tuple[str, float]], int]:
    """The tests of one family that reject at ALPHA (Bonferroni), and the number of tests."""
    results = audit.compare_samples(view[:T], view[T:], pairs=pair_columns(view.shape[1]))
    threshold = ALPHA / len(results)
    return [(name, p) for name, p in results if p < threshold], len(results)


@pytest.mark.parametrize("name,n", CASES, ids=[f"{a}-{b}p" for a, b in CASES])
def test_single_party_view_is_independent_of_the_secret(name, n):
    key = jax.random.key(1000 + 17 * n + len(name))
    inputs = make_inputs(name, n, jax.random.fold_in(key, 0))
    views = capture_views(PROTOCOLS[name], inputs, jax.random.fold_in(key, 1), n)
    for party, view in views.items():
        assert view.shape[0] == B2
        bad, n_tests = independence_failures(view)
        assert not bad, (
            f"{name}, {n} parties, party {party}: the view differs between secrets A and B in "
            f"{len(bad)} of {n_tests} tests, e.g. {bad[:3]}"
        )


# ------------------------------------------------------------- power checks


def broken_mul_opens_x(x: SharedTensor, y: SharedTensor, key) -> SharedTensor:
    """Opens x itself, labelled as a masked Beaver opening."""
    t = dealer.beaver_triple(key, x.n_parties, x.shape, y.shape, ring.mul)

    def local(xs, ys, a, b, c):
        e, f = spmd.open_sum((xs, ys - b), what="beaver")  # BUG: x is not masked
        return c + e * b + a * f + jnp.where(spmd.is_party(0), e * f, jnp.zeros_like(e))

    return SharedTensor(spmd.party_map(local)(x.shares, y.shares, t.a, t.b, t.c), x.frac_bits)


def broken_mul_reuses_mask(x: SharedTensor, y: SharedTensor, key) -> SharedTensor:
    """Masks x and y with the same dealer word a (a 'two-time pad')."""
    t = dealer.beaver_triple(key, x.n_parties, x.shape, y.shape, ring.mul)

    def local(xs, ys, a, b, c):
        e, f = spmd.open_sum((xs - a, ys - a), what="beaver")  # BUG: a used twice
        return c + e * b + a * f

    return SharedTensor(spmd.party_map(local)(x.shares, y.shares, t.a, t.b, t.c), x.frac_bits)


@pytest.mark.parametrize("broken", [broken_mul_opens_x, broken_mul_reuses_mask])
def test_harness_rejects_broken_protocols(broken):
    key = jax.random.key(7)
    inputs = make_inputs("mul", 2, jax.random.fold_in(key, 0))
    views = capture_views(broken, inputs, jax.random.fold_in(key, 1), 2)
    for party, view in views.items():
        bad, _ = independence_failures(view)
        assert bad, f"party {party}: the view test did not notice {broken.__name__}"


# ------------------------------------------------ truncation leakage (docs)


@pytest.mark.parametrize("method", ["dealer", "local"])
def test_truncation_error_vs_share(method):
    """The error of the truncated result, against party 0's input share.

    x has raw value 2**15 (half a unit after dropping 16 bits), so the error
    is 0 or -1/+1 with probability 1/2. Local (SecureML) truncation: whether it
    rounds up is decided by party 0's share's low 16 bits (share < 2**15 or
    not), so once the result is revealed, it tells about the share, i.e. the
    output is not simulatable from the output alone. Dealer truncation: the
    error comes from the dealer's r, independent of the shares (chi-square
    2x2 test of independence, alpha = 1e-3).
    """
    n_el = 4000
    raw = np.full(n_el, 2**15 + 2**20, np.int64)
    x = shared(raw, jax.random.key(11), 2, 32)
    out = arithmetic.truncate(x, jax.random.key(12), 16, method=method)
    total = np.asarray(ring.to_signed(jnp.sum(out.shares, axis=0, dtype=jnp.uint64)))
    err = total - (raw >> 16)
    assert set(np.unique(err).tolist()) <= {-1, 0, 1}
    low = (np.asarray(x.shares[0]) & np.uint64(0xFFFF)) >= np.uint64(2**15)
    table = np.array([[np.sum((err != 0) & low), np.sum((err != 0) & ~low)],
                      [np.sum((err == 0) & low), np.sum((err == 0) & ~low)]], dtype=np.float64)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    p = audit.chi2_sf(float(np.sum((table - expected) ** 2 / expected)), 1)
    if method == "local":
        assert p < ALPHA, f"expected the local-truncation error to depend on the share: {table}"
    else:
        assert p >= ALPHA, f"the dealer-truncation error depends on the share (p={p:.3g}): {table}"
