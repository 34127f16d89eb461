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
* joint uniformity of pairs of views (two shares, e and f, e and x): the
  16 x 16 histogram of their top nibbles, and the byte histograms of sums of
  n-1 shares.

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
from jaxmpc import dealer, ring, spmd, tensor
from jaxmpc.protocols import arithmetic
from jaxmpc.tensor import SharedTensor

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


def beaver_opened(x: SharedTensor, y: SharedTensor, key) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the per-party Beaver core exactly as ``arithmetic.bilinear_ss`` does
    (same key split, same dealer call) and capture what it opens.

    ``spmd.open_sum`` is wrapped for the duration of the trace so that the
    opened values come back as outputs of the vmapped party function.
    Returns the product shares and the opened e, f (as seen by party 0).
    """
    k_triple, _ = jax.random.split(key)
    t = dealer.beaver_triple(k_triple, x.n_parties, x.shape, y.shape, ring.mul)
    open_sum = spmd.open_sum

    def party(xs, ys, a, b, c):
        seen = []

        def spy(values, **kw):
            out = open_sum(values, **kw)
            seen.append(out)
            return out

        spmd.open_sum = spy
        try:
            z = arithmetic.beaver_local(xs, ys, a, b, c, ring.mul)
        finally:
            spmd.open_sum = open_sum
        (e, f), = seen
        return z, e, f

    z, e, f = jax.vmap(party, axis_name=spmd.PARTY)(x.shares, y.shares, t.a, t.b, t.c)
    assert np.all(np.asarray(e) == np.asarray(e)[0]) and np.all(np.asarray(f) == np.asarray(f)[0])
    # the opened values are exactly x - a and y - b
    np.testing.assert_array_equal(
        np.asarray(e[0]), reference.ring_sub(reference.open_shares(x.shares), reference.open_shares(t.a))
    )
    return np.asarray(z), np.asarray(e[0]), np.asarray(f[0])


def ring_tensor(u: np.ndarray, key, n: int) -> SharedTensor:
    return SharedTensor(tensor.split(key, jnp.asarray(u, jnp.uint64), n), 0)


@pytest.mark.parametrize("n", [2, 3])
def test_beaver_openings_are_uniform_and_independent_of_inputs(n):
    rng = np.random.default_rng(n)
    inputs = {
        "zero": np.zeros(N, np.uint64),
        "big": np.full(N, 2**56, np.uint64),
        "random": rng.integers(0, 2**64, N, dtype=np.uint64),
    }
    y = ring_tensor(rng.integers(0, 2**64, N, dtype=np.uint64), jax.random.key(100 + n), n)
    opened = {}
    for i, (name, u) in enumerate(inputs.items()):
        x = ring_tensor(u, jax.random.key(10 * n + i), n)
        key = jax.random.key(1000 + 10 * n + i)
        z, e, f = beaver_opened(x, y, key)
        # the capture is the real protocol: frac_bits=0 means no truncation, so
        # arithmetic.mul returns exactly these product shares
        np.testing.assert_array_equal(z, np.asarray(arithmetic.mul(x, y, key).shares))
        np.testing.assert_array_equal(reference.open_shares(z), reference.ring_mul(u, reference.open_shares(y.shares)))
        opened[name] = (e, f)
    ps: list[float] = []
    for name, (e, f) in opened.items():
        ps += pvalues_uniform(e) + pvalues_uniform(f)
        ps.append(pvalue_joint(e, f))  # e and f independent of each other
    ps += pvalues_same_distribution(opened["zero"][0], opened["big"][0])
    ps += pvalues_same_distribution(opened["random"][0], opened["zero"][0])
    ps.append(pvalue_joint(inputs["random"], opened["random"][0]))  # e independent of x
    assert_no_rejection(ps, f"Beaver openings, {n} parties")


def test_dealer_truncation_opening_is_uniform_and_independent_of_input():
    """``truncate_dealer_local`` opens x - r; capture it the same way."""
    opened = {}
    for i, value in enumerate([0.0, 2.0**40]):
        x = tensor.share(np.full(N, value), jax.random.key(i), 3)
        pair = dealer.trunc_pair(jax.random.key(50 + i), 3, x.shape, F)
        open_sum = spmd.open_sum

        def party(s, r, rs):
            seen = []

            def spy(v, **kw):
                seen.append(open_sum(v, **kw))
                return seen[-1]

            spmd.open_sum = spy
            try:
                out = arithmetic.truncate_dealer_local(s, r, rs, F)
            finally:
                spmd.open_sum = open_sum
            return out, seen[0]

        _, z = jax.vmap(party, axis_name=spmd.PARTY)(x.shares, pair.r, pair.r_shifted)
        opened[value] = np.asarray(z[0])
    ps = pvalues_uniform(opened[0.0]) + pvalues_uniform(opened[2.0**40])
    ps += pvalues_same_distribution(opened[0.0], opened[2.0**40])
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
