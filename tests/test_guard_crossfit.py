"""The cross-fitted guard (:mod:`ttakit.tuning.guard`): folds, evidence equal
to a naive loop, the fixed-sequence rule, and its error rate under the null."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ttakit.tuning.greedy import greedy_search, merge_prefix
from ttakit.tuning.guard import crossfit_folds, decide, mcnemar_one_sided
from ttakit.tuning.temperature import fit_temperature, per_input_nll
from ttakit.tuning.tune import crossfit


@settings(max_examples=60, deadline=None)
@given(n=st.integers(20, 400), k=st.integers(2, 8), classes=st.integers(1, 6), seed=st.integers(0, 10**6))
def test_folds_cover_every_input_once_and_are_stratified(n, k, classes, seed):
    y = np.random.default_rng(seed).integers(0, classes, n)
    fold = crossfit_folds(n, k, seed, strata=y)
    assert fold.shape == (n,) and set(np.unique(fold)) <= set(range(k))
    sizes = np.bincount(fold, minlength=k)
    assert sizes.max() - sizes.min() <= 1           # balanced
    for c in np.unique(y):
        per = np.bincount(fold[y == c], minlength=k)
        assert per.max() - per.min() <= 1           # every class spread over the folds


def _probs(n=240, k=5, c=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    base = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    logits = base[None] + 0.8 * rng.normal(size=(k, n, c))
    p = np.exp(logits)
    return p / p.sum(2, keepdims=True), y


def test_crossfit_equals_a_naive_loop_over_folds():
    probs, y = _probs()
    fold = crossfit_folds(len(y), 4, 3, strata=y)
    paths, losses, correct = crossfit(probs, y, fold, 3, "nll", "mean")
    for f in range(4):
        held, fit = fold == f, fold != f
        steps = greedy_search(probs[:, fit], y[fit], budget=2, start=[0], stop_early=True)
        path = [0] + [s.index for s in steps]
        assert paths[f] == path
        for length in range(1, 4):
            prefix = path[:min(length, len(path))]
            t = fit_temperature(merge_prefix(probs[:, fit], prefix), y[fit])
            m = merge_prefix(probs[:, held], prefix)
            np.testing.assert_allclose(losses[length - 1, held], per_input_nll(np.log(m), y[held], t), atol=1e-12)
            np.testing.assert_array_equal(correct[length - 1, held], m.argmax(1) == y[held])


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10**6), L=st.integers(2, 6), shift=st.lists(st.floats(-0.3, 0.6), min_size=6, max_size=6))
def test_the_sequence_runs_from_the_longest_prefix_and_stops_at_the_first_failure(seed, L, shift):
    rng = np.random.default_rng(seed)
    n = 200
    base = rng.exponential(size=n)
    losses = np.stack([base] + [base - shift[i] + rng.normal(size=n) for i in range(L - 1)])
    d = decide(losses, alpha=0.05, min_net_fixed=3)
    tested = sorted((e for e in d.evidence if e.tested), key=lambda e: -e.length)
    # tested in order from the top; every test but the last passed; nothing below a failure is tested
    assert [e.length for e in tested] == list(range(L, L - len(tested), -1))
    assert all(e.passed for e in tested[:-1])
    if not tested[-1].passed:
        assert all(not e.tested for e in d.evidence if e.length < tested[-1].length)
    passed = [e for e in d.evidence if e.passed]
    assert d.fell_back == (not passed)
    if passed:
        assert d.length == max(e.length for e in passed)


def test_keeping_useless_views_is_rarer_than_alpha():
    """Under the null (no prefix truly better than no TTA), the guard keeps
    TTA in at most about alpha of the cases, whatever the number of prefixes."""
    rng = np.random.default_rng(0)
    kept = 0
    sims = 800
    for _ in range(sims):
        n = 300
        base = rng.exponential(size=n)
        common = rng.normal(size=n)
        # prefixes share noise (as nested policies do) and have no real gain
        losses = np.stack([base] + [base + 0.3 * (0.8 * common + 0.6 * rng.normal(size=n)) for _ in range(5)])
        kept += not decide(losses, alpha=0.05, min_net_fixed=0).fell_back
    assert kept / sims <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / sims)


def test_one_input_cannot_carry_the_guard():
    n = 400
    base = np.ones(n)
    better = base.copy()
    better[:2] = 0.0  # two inputs gain a lot, the rest nothing
    ok = np.zeros((2, n), bool)
    ok[1, :2] = True
    d = decide(np.stack([base, better]), correct=ok, alpha=0.05, min_net_fixed=3)
    assert d.fell_back and "net < 3" in d.reason
    assert mcnemar_one_sided(5, 0) == 1 / 32 and mcnemar_one_sided(0, 0) == 1.0


def _plain_t_p(v):
    from scipy import stats

    v = np.asarray(v, float)
    return float(stats.t.sf(v.mean() / (v.std(ddof=1) / np.sqrt(len(v))), len(v) - 1))


def test_the_loss_test_keeps_its_level_when_a_view_breaks_a_few_inputs_badly():
    """Null (mean gain 0): most inputs gain a little, 2% lose a lot. The plain
    one-sided t-test rejects far above its level there; the guard's test
    (which needs the skewness-corrected one to reject too) stays below it."""
    from ttakit.tuning.guard import one_sided_t_p

    rng = np.random.default_rng(0)

    def null(n):
        return np.where(rng.random(n) < 0.02, -20.0, 0.0) + rng.normal(0.4, 0.05, n)

    draws = [null(455) for _ in range(1500)]
    plain = np.mean([_plain_t_p(d) < 0.05 for d in draws])
    guard = np.mean([one_sided_t_p(d) < 0.05 for d in draws])
    assert plain > 0.08          # the failure the correction is for
    assert guard < 0.05


def test_the_loss_test_is_the_t_test_on_symmetric_differences_and_never_bolder():
    from ttakit.tuning.guard import one_sided_t_p

    rng = np.random.default_rng(1)
    sym = rng.normal(0.1, 1.0, 800)
    assert abs(one_sided_t_p(sym) - _plain_t_p(sym)) < 0.01
    for _ in range(50):   # rare large gains or losses: never below the plain t-test's p
        d = np.where(rng.random(300) < 0.02, rng.choice([-20.0, 20.0]), 0.0) + rng.normal(0.05, 0.1, 300)
        assert one_sided_t_p(d) >= _plain_t_p(d) - 1e-12
    assert one_sided_t_p(np.full(10, 0.5)) == 0.0 and one_sided_t_p(np.full(10, -0.5)) == 1.0
    assert one_sided_t_p([1.0, 2.0]) == 1.0
