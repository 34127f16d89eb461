"""Statistical checks of what parties see: shares and the values protocols open.

Security claim under test (semi-honest, see DESIGN.md): any n-1 shares of a
tensor are uniform on Z_2^64 and independent of the secret, and the values a
Beaver multiplication opens (e = x - a, f = y - b) and a dealer truncation
opens (x - r) are uniform and independent of the inputs.

Method. One call on a big array of N identical (or random) secrets gives N
independent trials: every element is shared with fresh randomness. On the
resulting words we test, with chi-square and Kolmogorov-Smirnov tests:

* uniformity of each byte position (256 cells) and of each bit (64 cells),
  and KS of the top 53 bits as a real in [0, 1) against U(0, 1);
* independence of the secret: two-sample tests (chi-square homogeneity of the
  byte histograms, two-sample KS) between two very different secrets;
* joint uniformity of pairs of views (two shares, e and f): the 16 x 16
  histogram of their top nibbles, and the byte histograms of sums of n-1
  shares; independence of an opened value from a random input: a chi-square
  contingency test of (input quantile bin, top nibble of the view).

Significance: every test function makes m tests and requires every p-value
>= ALPHA / m (Bonferroni, family-wise ALPHA = 1e-3). Keys and data seeds are
fixed, so the outcome is deterministic; a correct implementation fails a
function with probability <= 1e-3 over the choice of the seed. Negative
controls at the end check that the same tests reject flawed sharings (power).
Caveat: these tests find statistical flaws, not cryptographic ones (threefry
is not a vetted CSPRNG; see the dealer module).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import reference
from jaxmpc import ring, spmd, tensor
from jaxmpc.protocols import arithmetic

ALPHA = 1e-3  # family-wise significance per test function
N = 2**16  # independent trials per sharing: 256 expected counts per byte value
F = ring.DEFAULT_FRAC_BITS


# ------------------------------------------------------------------ the tests


def _u(x) -> np.ndarray:
    return np.asarray(x, dtype=np.uint64).ravel()


def byte_counts(u: np.ndarray, position: int) -> np.ndarray:
    return np.bincount(((u >> np.uint64(8 * position)) & np.uint64(0xFF)).astype(np.int64), minlength=256)


def pvalues_uniform(u: np.ndarray) -> list[float]:
    """8 byte chi-squares, 1 bit-frequency chi-square, 1 KS: 10 p-values."""
    u = _u(u)
    ps = [stats.chisquare(byte_counts(u, b)).pvalue for b in range(8)]
    ones = np.array([np.count_nonzero((u >> np.uint64(b)) & np.uint64(1)) for b in range(64)], dtype=np.float64)
    ps.append(stats.chi2.sf(np.sum((2 * ones - u.size) ** 2) / u.size, df=64))
    ps.append(stats.kstest(_unit(u), "uniform").pvalue)
    return ps


def pvalues_same_distribution(u1: np.ndarray, u2: np.ndarray) -> list[float]:
    """8 byte-histogram homogeneity chi-squares and a two-sample KS: 9 p-values."""
    u1, u2 = _u(u1), _u(u2)
    ps = [stats.chi2_contingency(np.stack([byte_counts(u1, b), byte_counts(u2, b)]))[1] for b in range(8)]
    ps.append(stats.ks_2samp(_unit(u1), _unit(u2)).pvalue)
    return ps


def pvalue_joint(u1: np.ndarray, u2: np.ndarray) -> float:
    """Joint uniformity of two views: chi-square of the 16 x 16 top-nibble histogram."""
    a = (_u(u1) >> np.uint64(60)).astype(np.int64)
    b = (_u(u2) >> np.uint64(60)).astype(np.int64)
    return stats.chisquare(np.bincount(16 * a + b, minlength=256)).pvalue


def pvalue_independent(categories: np.ndarray, u: np.ndarray) -> float:
    """Independence of a view from a (non-uniform) input: chi-square test of the
    contingency table (input category x top nibble of the view)."""
    nib = (_u(u) >> np.uint64(60)).astype(np.int64)
    table = np.zeros((int(categories.max()) + 1, 16), dtype=np.int64)
    np.add.at(table, (categories.ravel(), nib), 1)
    table = table[:, table.sum(0) > 0]  # a view that never takes a nibble
    return stats.chi2_contingency(table)[1] if table.shape[1] > 1 else 0.0


def quantile_bins(x: np.ndarray, k: int = 16) -> np.ndarray:
    """Category 0..k-1 of each element of a real input by its quantile."""
    return np.searchsorted(np.quantile(x, np.linspace(0, 1, k + 1)[1:-1]), x.ravel())


def _unit(u: np.ndarray) -> np.ndarray:
    """Top 53 bits as a float in [0, 1)."""
    return (u >> np.uint64(11)).astype(np.float64) * 2.0**-53


def assert_no_rejection(ps: list[float], what: str) -> None:
    m = len(ps)
    worst = int(np.argmin(ps))
    assert min(ps) >= ALPHA / m, f"{what}: p={ps[worst]:.3g} < {ALPHA}/{m} (test #{worst})"


# ------------------------------------------------------------------ sharings

#: Two very different secrets (shared as fixed point, f=16): 0 and 2**40
#: (encoded 2**56), plus random reals for "random vs constant".
SECRETS = {
    "zero": np.zeros(N),
    "big": np.full(N, 2.0**40),
    "random": np.random.default_rng(0).uniform(-1e3, 1e3, N),
}


def shares_of(name: str, n: int, seed: int) -> np.ndarray:
    return np.asarray(tensor.share(SECRETS[name], jax.random.key(seed), n).shares)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_any_n_minus_1_shares_are_uniform_and_independent_of_the_secret(n):
    views = {name: shares_of(name, n, seed) for seed, name in enumerate(SECRETS)}
    ps: list[float] = []
    for name, sh in views.items():
        np.testing.assert_array_equal(reference.open_shares(sh), reference.encode(SECRETS[name], F))
        for i in range(n):  # every single share (each lies in some set of n-1)
            ps += pvalues_uniform(sh[i])
        for subset in itertools.combinations(range(n), n - 1):
            if n > 2:  # the sum of the n-1 shares of each subset, and each pair in it
                ps += pvalues_uniform(reference.ring_sum(sh[list(subset)], axis=0))
                ps += [pvalue_joint(sh[i], sh[j]) for i, j in itertools.combinations(subset, 2)]
    for i in range(n):  # the same share index, for very different secrets
        ps += pvalues_same_distribution(views["zero"][i], views["big"][i])
        ps += pvalues_same_distribution(views["random"][i], views["big"][i])
    assert_no_rejection(ps, f"shares among {n} parties")


def test_last_share_against_the_secret_is_jointly_uniform():
    """For random secrets, (secret, last share) and (secret, first share) are
    jointly uniform in their top nibbles: a share carries no information about
    the secret's high bits."""
    secret = np.random.default_rng(1).integers(0, 2**64, N, dtype=np.uint64)
    sh = np.asarray(tensor.split(jax.random.key(7), jnp.asarray(secret), 3))
    ps = [pvalue_joint(secret, sh[-1]), pvalue_joint(secret, sh[0]), pvalue_joint(secret, sh[1])]
    assert_no_rejection(ps, "secret vs share")


# ----------------------------------------------------------- Beaver openings


def run_capturing_openings(monkeypatch, fn, *args, **kwargs):
    """Run ``fn`` (a public protocol, unchanged) and capture every value it opens.

    ``spmd.open_sum`` -- the one helper every arithmetic opening goes through --
    is wrapped for the call: the wrapper opens as usual and hands the opened
    words to a ``jax.debug.callback``. Returns ``fn``'s result and a list of
    ``(what, [opened arrays])`` in protocol order (what party 0 receives; all
    parties receive the same).
    """
    log: list[tuple[str, list]] = []
    open_sum = spmd.open_sum

    def spy(values, *, what, masked=True):
        out = open_sum(values, what=what, masked=masked)
        slot: list = []
        log.append((what, slot))
        jax.debug.callback(lambda *leaves: slot.append([np.asarray(v) for v in leaves]), *jax.tree.leaves(out))
        return out

    with monkeypatch.context() as m:
        m.setattr(spmd, "open_sum", spy)
        result = jax.block_until_ready(fn(*args, **kwargs))
        jax.effects_barrier()
    captured = []
    for what, slot in log:
        assert slot, f"opening {what!r} was not captured"
        for seen in slot[1:]:  # one call per party under some vmap rules: all equal
            for u, v in zip(seen, slot[0]):
                np.testing.assert_array_equal(u, v)
        captured.append((what, slot[0]))
    return result, captured


#: x for the products: 0, a large constant and random reals; y random in [-1, 1]
#: (products stay far inside the fixed-point range).
X_SECRETS = {
    "zero": np.zeros(N),
    "big": np.full(N, 2.0**20),
    "random": np.random.default_rng(5).uniform(-1e3, 1e3, N),
}


@pytest.mark.parametrize("n,trunc", [(2, "dealer"), (3, "dealer"), (2, "local")])
def test_beaver_openings_are_uniform_and_independent_of_inputs(monkeypatch, n, trunc):
    """``arithmetic.mul`` as users call it. It opens e = x - a and f = y - b
    ("beaver") and, with dealer truncation, the masked product ("trunc"); all
    must be uniform whatever x is, and e independent of x."""
    y = tensor.share(np.random.default_rng(6).uniform(-1, 1, N), jax.random.key(60 + n), n)
    views = {}
    for i, (name, xv) in enumerate(X_SECRETS.items()):
        x = tensor.share(xv, jax.random.key(10 * n + i), n)
        out, opened = run_capturing_openings(monkeypatch, arithmetic.mul, x, y, jax.random.key(100 * n + i), trunc=trunc)
        assert [w for w, _ in opened] == (["beaver", "trunc"] if trunc == "dealer" else ["beaver"])
        (e, f) = opened[0][1]
        assert e.shape == f.shape == (N,)
        views[name] = [e, f] + [v for _, vs in opened[1:] for v in vs]
        if name == "zero":  # 0 * y: exact up to the truncation unit
            assert np.max(np.abs(np.asarray(tensor.reveal(out)))) <= 2.0**-F
    ps: list[float] = []
    for name, vs in views.items():
        for v in vs:
            ps += pvalues_uniform(v)
        ps.append(pvalue_joint(vs[0], vs[1]))  # e and f jointly uniform
    for k in range(len(views["zero"])):  # each opened value: same law for very different x
        ps += pvalues_same_distribution(views["zero"][k], views["big"][k])
        ps += pvalues_same_distribution(views["random"][k], views["big"][k])
    bins = quantile_bins(X_SECRETS["random"])
    ps += [pvalue_independent(bins, v) for v in views["random"]]  # independent of x
    assert_no_rejection(ps, f"Beaver openings, {n} parties, {trunc} truncation")


def test_dealer_truncation_opening_is_uniform_and_independent_of_input(monkeypatch):
    """``arithmetic.truncate`` (dealer pair) opens x - r: uniform for any x."""
    views = []
    for i, value in enumerate([0.0, 2.0**40]):
        x = tensor.share(np.full(N, value), jax.random.key(i), 3)
        _, opened = run_capturing_openings(monkeypatch, arithmetic.truncate, x, jax.random.key(50 + i), F)
        assert [w for w, _ in opened] == ["trunc"]
        views.append(opened[0][1][0])
    ps = pvalues_uniform(views[0]) + pvalues_uniform(views[1]) + pvalues_same_distribution(views[0], views[1])
    assert_no_rejection(ps, "truncation opening")


# ------------------------------------------------- negative controls (power)


def test_tests_reject_flawed_sharings():
    """The same tests, at the same significance, catch typical flaws."""
    rng = np.random.default_rng(3)
    secret_big = np.full(N, 2**56, np.uint64)
    # 1. masks that are not uniform on the whole ring (63-bit masks): the
    #    correction share of a big secret is visibly shifted
    r = rng.integers(0, 2**63, N, dtype=np.uint64)
    last = reference.ring_sub(secret_big, r)
    assert min(pvalues_uniform(last)) < ALPHA / 100
    # 2. a share that depends on the secret: homogeneity tests see it
    r2 = rng.integers(0, 2**64, N, dtype=np.uint64)
    leaky_zero = r2 & np.uint64(2**64 - 2)  # the lowest bit of a share reveals the secret
    leaky_big = r2 | np.uint64(1)
    assert min(pvalues_same_distribution(leaky_zero, leaky_big)) < ALPHA / 100
    # 3. two parties reusing the same randomness: the joint test sees it
    assert pvalue_joint(r2, r2) < ALPHA / 100
    # 4. a slightly biased top bit (share the secret with masks whose top bit is
    #    1 with probability 0.52) is caught by the bit test
    biased = rng.integers(0, 2**63, N, dtype=np.uint64) | (
        (rng.random(N) < 0.52).astype(np.uint64) << np.uint64(63)
    )
    assert min(pvalues_uniform(biased)) < ALPHA / 100
    # 5. an opened value that depends on the input (x masked by a 40-bit mask
    #    only): the independence test sees it
    x = np.random.default_rng(4).uniform(-1e3, 1e3, N)
    weak = reference.ring_add(reference.encode(x, F), rng.integers(0, 2**40, N, dtype=np.uint64))
    assert pvalue_independent(quantile_bins(x), weak) < ALPHA / 100
