"""The opening audit (jaxmpc.audit): what a whole training step opens, and
that the audit catches broken protocols by their VALUES, not their labels.

One small MLP training step (forward, encrypted backward, SGD update), the
logged loss revealed, then the encrypted evaluation (argmax on shares) with
only the count of correct predictions revealed, all in one jit traced inside
``audit.capture()``. Checked:

* the set of ``(what, masked)`` labels: Beaver-masked differences, masked
  values inside truncation and comparison (x + r, AND, B2A) protocols, and the two
  values the user revealed;
* the opened values: every masked opening passes ``audit.verify`` (uniform,
  no known secret among them, no reused mask), and the revealed values are
  exactly the loss and the count;
* a deliberately broken multiplication that opens ``x`` itself, labelled as
  a masked Beaver opening, FAILS the audit — through its values (known
  secret found, bits not uniform) while its labels look right; so does a
  correct multiplication run twice with the same key (a reused mask).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmpc import audit, cost, dealer, nn, optim, ring, spmd, tensor, train
from jaxmpc.protocols import arithmetic, binary, comparison, conversion
from jaxmpc.tensor import SharedTensor

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
SIZES = (6, 5, 2)
BATCH = 4
EXPECTED_LABELS = {
    ("beaver", True),  # x - a, y - b of every product (and the cotangent's in the backward pass)
    ("trunc", True),  # x + r of every truncation (fused with the products)
    ("square", True),  # x - a of the squared error
    ("ltz", True),  # x + r of every comparison (relu, argmax), r the dealer's edaBit
    ("and", True),  # masked words of the AND gates inside the comparisons (relu, argmax)
    ("b2a_packed", True),  # masked sign bits (64 per word) turned into arithmetic shares
    ("b2a", True),  # the same, one per word: comparisons of fewer than 19 elements (argmax of 4 rows)
    ("reveal", False),  # the logged loss, revealed on purpose
    ("correct_count", False),  # the number of correct test predictions, revealed on purpose
}


@pytest.fixture(scope="module")
def training_run():
    key = jax.random.key(8)
    kp, kx, ky, ko, ks, ke = jax.random.split(key, 6)
    rng = np.random.default_rng(8)
    n = 2
    params = nn.share_params(nn.init_mlp(kp, SIZES), kp, n)
    x_plain = rng.normal(size=(BATCH, SIZES[0]))
    y_plain = np.eye(SIZES[-1])[rng.integers(0, SIZES[-1], BATCH)]
    x = tensor.share(x_plain, kx, n)
    y = tensor.share(y_plain, ky, n)
    config = train.TrainConfig(parties=n, activation="relu", loss="mse")
    opt = optim.sgd(0.05, ko)
    step = train.make_train_step(config, opt)
    evaluate = train.make_eval_step(config)

    def whole(params, opt_state, x, y, ks, ke):
        new_params, _, loss = step(params, opt_state, x, y, ks)
        logged = tensor.reveal(loss)  # the one value revealed per logged batch
        count = tensor.reveal(evaluate(new_params, x, y, ke), what="correct_count")
        return logged, count, new_params

    with audit.capture() as log:
        fn = jax.jit(lambda *a: whole(*a), compiler_options=FAST_COMPILE)
        loss, count, new_params = jax.block_until_ready(fn(params, opt.init(params), x, y, ks, ke))
    secrets = [x, y] + [leaf for layer in params for leaf in layer.values()]
    secrets += [leaf for layer in new_params for leaf in layer.values()]
    return dict(log=log, loss=float(loss), count=float(count), secrets=secrets, x=x, n=n)


def test_training_step_opens_only_masked_values_and_explicit_reveals(training_run):
    log = training_run["log"]
    assert log.labels() == EXPECTED_LABELS, log.summary()
    # what ran, ran at every party; almost every traced opening ran (under jit an
    # opening whose result is never used is pruned with its callback, e.g.
    # argmax's value product in the last tournament layer: it is not sent either)
    ran = {m.index for m in log.messages}
    assert ran <= set(range(len(log.openings))) and len(ran) >= len(log.openings) - 1
    assert len(log.messages) == training_run["n"] * len(ran)
    unmasked = log.opened(masked=False)
    assert sorted(m.what for m in unmasked) == ["correct_count", "reveal"]


def test_training_step_masked_openings_pass_the_value_audit(training_run):
    report = audit.verify(
        training_run["log"], secrets=training_run["secrets"], reveals={"reveal", "correct_count"}
    )
    assert report.ok, str(report)
    assert report.checked_openings > 40 and report.n_tests > 100  # it did look


def test_revealed_values_are_exactly_what_the_user_asked_for(training_run):
    log = training_run["log"]
    (loss_msg,) = log.opened("reveal")
    (count_msg,) = log.opened("correct_count")
    assert ring.decode(jnp.asarray(loss_msg.received[0]), ring.DEFAULT_FRAC_BITS) == training_run["loss"]
    count = ring.decode(jnp.asarray(count_msg.received[0]), ring.DEFAULT_FRAC_BITS)
    assert count == training_run["count"] == round(training_run["count"])  # (one-hot * labels).sum(): exact
    assert 0 <= count <= BATCH


def test_sent_shares_add_up_to_the_opened_value(training_run):
    """What each party sent is its share: summed (XORed) over the parties it is
    the opened value."""
    log = training_run["log"]
    by_index: dict[int, list] = {}
    for m in log.messages:
        by_index.setdefault(m.index, []).append(m)
    for msgs in by_index.values():
        assert sorted(m.party for m in msgs) == list(range(training_run["n"]))
        for leaf in range(len(msgs[0].sent)):
            parts = [m.sent[leaf] for m in msgs]
            total = parts[0]
            for p in parts[1:]:
                total = (total ^ p) if msgs[0].domain == "xor" else (total + p)
            np.testing.assert_array_equal(total, msgs[0].received[leaf])


# ------------------------------------------------------------ broken protocols


def broken_mul(x: SharedTensor, y: SharedTensor, key) -> SharedTensor:
    """Beaver multiplication with a bug: x is opened unmasked, labelled "beaver", masked."""
    t = dealer.beaver_triple(key, x.n_parties, x.shape, y.shape, ring.mul)

    def local(xs, ys, a, b, c):
        e, f = spmd.open_sum((xs, ys - b), what="beaver", masked=True)  # BUG: should be xs - a
        lead = jnp.where(spmd.is_party(0), e * f, jnp.zeros_like(e))
        return c + e * b + a * f + lead  # (also wrong, but the leak is the point)

    return SharedTensor(spmd.party_map(local)(x.shares, y.shares, t.a, t.b, t.c), x.frac_bits + y.frac_bits)


def small_inputs(shape=(64,), seed=0, n=2):
    rng = np.random.default_rng(seed)
    k1, k2 = jax.random.split(jax.random.key(seed))
    return tensor.share(rng.uniform(-10, 10, shape), k1, n), tensor.share(rng.uniform(-10, 10, shape), k2, n)


def test_broken_mul_is_caught_by_its_values_not_its_labels():
    x, y = small_inputs()
    with audit.capture() as good:
        arithmetic.mul(x, y, jax.random.key(1))
    with audit.capture() as bad:
        broken_mul(x, y, jax.random.key(1))
    # the labels look fine: a masked "beaver" opening, as in a correct mul
    assert bad.labels() <= good.labels()
    assert audit.verify(good, secrets=[x, y]).ok
    report = audit.verify(bad, secrets=[x, y])
    assert not report.ok
    assert "secret_opened" in report.kinds()  # x's encodings are among the "masked" words
    with pytest.raises(audit.AuditError, match="secret_opened"):
        report.raise_if_failed()


def test_broken_mul_is_caught_without_knowing_the_secret():
    """No secrets passed: the statistics alone reject the opened x (its high
    bits are all sign bits, nothing like fair coins)."""
    x, y = small_inputs(shape=(256,))
    with audit.capture() as bad:
        broken_mul(x, y, jax.random.key(1))
    report = audit.verify(bad)
    assert "not_uniform" in report.kinds(), str(report)


def test_reused_dealer_randomness_is_caught():
    """Two correct multiplications with the SAME key reuse the Beaver masks: the
    difference of the two openings is x1 - x2, not uniform."""
    x1, y1 = small_inputs(seed=1)
    x2, y2 = small_inputs(seed=2)
    key = jax.random.key(3)
    with audit.capture() as fresh:
        arithmetic.mul(x1, y1, jax.random.fold_in(key, 0))
        arithmetic.mul(x2, y2, jax.random.fold_in(key, 1))
    with audit.capture() as reused:
        arithmetic.mul(x1, y1, key)
        arithmetic.mul(x2, y2, key)
    assert audit.verify(fresh, secrets=[x1, y1, x2, y2]).ok
    report = audit.verify(reused, secrets=[x1, y1, x2, y2])
    assert "mask_reuse" in report.kinds(), str(report)


def test_unexpected_reveal_is_reported():
    x, _ = small_inputs(shape=(3,), n=3)
    with audit.capture() as log:
        tensor.reveal(x, what="debug_print")
        tensor.reveal_to(x, 2, what="to_party_2")  # only party 2 learns it
    report = audit.verify(log, reveals={"reveal"})
    assert report.kinds() == {"unexpected_reveal"}
    assert {f.what for f in report.failures} == {"debug_print", "to_party_2"}
    assert audit.verify(log).ok  # reveals=None allows any


def test_b2a_opening_must_stay_one_bit():
    """b2a opens a masked bit; a word with higher bits set is out of support."""
    bits = binary.share_bits(np.arange(40, dtype=np.uint64), jax.random.key(0), 2)
    with audit.capture() as good:
        conversion.b2a(bits, jax.random.key(1))
    assert audit.verify(good).ok

    def leaky_b2a(x):  # forgets to mask b to bit 0 and to mask it at all
        return spmd.party_map(lambda s: spmd.open_xor(s, what="b2a"))(x.shares)

    with audit.capture() as bad:
        leaky_b2a(bits)
    assert "outside_support" in audit.verify(bad).kinds()


# ------------------------------------------------------------ mechanics


def test_no_capture_adds_nothing_to_the_program():
    x, y = small_inputs(shape=(3,))
    plain = str(jax.make_jaxpr(lambda a, b: arithmetic.mul(a, b, jax.random.key(0)))(x, y))
    assert "callback" not in plain
    with audit.capture():
        tapped = str(jax.make_jaxpr(lambda a, b: arithmetic.mul(a, b, jax.random.key(0)))(x, y))
    assert "callback" in tapped


def test_capture_works_eagerly_and_under_jit_and_records_the_same():
    x, y = small_inputs(shape=(5,))
    key = jax.random.key(4)
    with audit.capture() as eager:
        arithmetic.mul(x, y, key)
    with audit.capture() as jitted:
        jax.block_until_ready(jax.jit(lambda a, b, k: arithmetic.mul(a, b, k))(x, y, key))
    assert [m.what for m in eager.opened()] == [m.what for m in jitted.opened()]
    for a, b in zip(eager.opened(), jitted.opened()):
        for u, v in zip(a.received, b.received):
            np.testing.assert_array_equal(u, v)


def test_a_cached_jit_is_not_observed_and_late_callbacks_are_dropped():
    x, y = small_inputs(shape=(5,))
    f = jax.jit(lambda a, b, k: arithmetic.mul(a, b, k))
    f(x, y, jax.random.key(0))  # traced without a capture
    with audit.capture() as log:
        f(x, y, jax.random.key(0))  # cache hit: not re-traced, nothing recorded
    assert log.messages == [] and log.openings == []
    with audit.capture() as log2:
        g = jax.jit(lambda a, b, k: arithmetic.mul(a, b, k))
        g(x, y, jax.random.key(0))
    count = len(log2.messages)
    g(x, y, jax.random.key(1))  # after the block: the callback still fires, but is dropped
    assert len(log2.messages) == count > 0


def test_send_to_only_the_owner_receives():
    x, _ = small_inputs(shape=(4,), n=3)
    with audit.capture() as log:
        tensor.reveal_to(x, 2)
    got = {m.party: m.received for m in log.messages}
    assert got[0] is None and got[1] is None and got[2] is not None


def test_statistics_helpers():
    # chi-square survival function against known quantiles
    assert audit.chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)
    assert audit.chi2_sf(124.342, 100) == pytest.approx(0.05, rel=1e-3)
    assert audit.chi2_sf(0.0, 5) == 1.0
    assert 0 < audit.chi2_sf(5000.0, 64) < 1e-300 or audit.chi2_sf(5000.0, 64) == 0.0
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 2**64, size=4096, dtype=np.uint64)
    assert audit.bit_uniformity_pvalue(uniform) > 1e-3
    assert audit.byte_uniformity_pvalue(uniform) > 1e-3
    biased = uniform & ~np.uint64(1 << 40)  # one bit always 0
    assert audit.bit_uniformity_pvalue(biased) < 1e-12
    small = rng.integers(0, 2**20, size=4096).astype(np.uint64)
    assert audit.byte_uniformity_pvalue(small) < 1e-12
    assert audit.homogeneity_pvalue(np.zeros(100, np.int64), np.zeros(100, np.int64)) == 1.0
    assert audit.homogeneity_pvalue(np.zeros(100, np.int64), np.ones(100, np.int64)) < 1e-12


def test_cost_recording_is_unchanged_by_a_capture():
    x, y = small_inputs(shape=(3,))
    plain = cost.cost_of(arithmetic.mul, x, y, jax.random.key(0))
    with audit.capture():
        tapped = cost.cost_of(arithmetic.mul, x, y, jax.random.key(0))
    assert plain == tapped


# ------------------------------------------------ docs/fixed_point.md cost table

DOC_FIXED_POINT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "fixed_point.md")
TABLE_START, TABLE_END = "<!-- cost-table:start -->", "<!-- cost-table:end -->"


def _abstract(shape, n, f=ring.DEFAULT_FRAC_BITS):
    return SharedTensor(jax.ShapeDtypeStruct((n,) + tuple(shape), jnp.uint64), f)


def cost_table() -> str:
    """Markdown: rounds and bytes per party per element of each op, for 2 and 3 parties."""
    key = jax.random.key(0)
    ops = [
        ("mul (dealer truncation, fused)", lambda n: cost.cost_of(arithmetic.mul, _abstract((1,), n), _abstract((1,), n), key)),
        ("mul (local truncation, 2 parties)", lambda n: cost.cost_of(
            lambda a, b, k: arithmetic.mul(a, b, k, trunc="local"), _abstract((1,), n), _abstract((1,), n), key)
         if n == 2 else None),
        ("square", lambda n: cost.cost_of(arithmetic.square, _abstract((1,), n), key)),
        ("mul_public / truncate", lambda n: cost.cost_of(lambda a, k: arithmetic.mul_public(a, 0.5, k), _abstract((1,), n), key)),
        ("mul_bit (bit * value, exact)", lambda n: cost.cost_of(comparison.mul_bit, _abstract((1,), n, 0), _abstract((1,), n), key)),
        ("ltz / lt / gt", lambda n: cost.cost_of(comparison.ltz, _abstract((1,), n), key)),
        ("eqz / eq", lambda n: cost.cost_of(comparison.eqz, _abstract((1,), n), key)),
        ("relu (value and bit)", lambda n: cost.cost_of(comparison.relu, _abstract((1,), n), key)),
        ("a2b", lambda n: cost.cost_of(conversion.a2b, _abstract((1,), n), key)),
        ("b2a", lambda n: cost.cost_of(conversion.b2a, binary.SharedBits(jax.ShapeDtypeStruct((n, 1), jnp.uint64)), key)),
        ("argmax over 10 (one-hot)", lambda n: cost.cost_of(comparison.argmax, _abstract((1, 10), n), key)),
    ]
    lines = ["| operation | parties | rounds | bytes per party | by step: rounds / bytes |",
             "|---|---|---|---|---|"]
    for name, fn in ops:
        for n in (2, 3):
            c = fn(n)
            if c is None:
                continue
            steps = ", ".join(f"{what} {r} / {b}" for what, (r, b) in sorted(c.by_step().items()))
            lines.append(f"| {name} | {n} | {c.rounds} | {c.bytes_per_party} | {steps} |")
    return "\n".join(lines)


def _doc_with_table(text: str, table: str) -> str:
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}"


def test_fixed_point_cost_table_is_in_sync():
    with open(DOC_FIXED_POINT) as f:
        text = f.read()
    assert text == _doc_with_table(text, cost_table()), (
        "docs/fixed_point.md's cost table is stale: run `python tests/test_audit.py --write`"
    )


if __name__ == "__main__":
    import sys

    jax.config.update("jax_numpy_dtype_promotion", "strict")  # as in tests/conftest.py
    table = cost_table()
    if sys.argv[1:] == ["--write"]:
        with open(DOC_FIXED_POINT) as f:
            text = f.read()
        with open(DOC_FIXED_POINT, "w") as f:
            f.write(_doc_with_table(text, table))
        print(f"wrote the cost table into {DOC_FIXED_POINT}")
    else:
        print(table)
