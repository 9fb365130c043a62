"""The guard of the row search: a prefix of views is kept only when its
cross-fitted gain over no TTA passes the fixed-sequence test (one-sided
paired t-tests on per-row loss from the longest prefix down, ties to no TTA). Where row noise hurts, the
held-out loss must never end up worse than no TTA; where it clearly helps,
the views must be kept."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.neighbors import KNeighborsRegressor
from sklearn.tree import DecisionTreeRegressor

from ttakit.errors import InputError
from ttakit.sklearn import TTAClassifier, TTARegressor
from ttakit.tuning.guard import GUARD_ALPHA
from ttakit.tuning.rows import guarded_greedy, split, squared_error


def _johnson_p(d):
    """Johnson's (1978) skewness-corrected one-sided t-test, written out."""
    from scipy import stats

    n, m, sd = len(d), d.mean(), d.std(ddof=1)
    if sd == 0:
        return 0.0 if m > 0 else 1.0
    mu3 = n / ((n - 1) * (n - 2)) * np.sum((d - m) ** 3)
    return stats.t.sf((m + mu3 / (6 * sd ** 2 * n) + mu3 * m ** 2 / (3 * sd ** 4)) / (sd / np.sqrt(n)), n - 1)


def _naive_choice(preds, y, budget, seed, alpha, margin=1e-3, folds=5):
    """The rule written out with scipy: 5 seeded folds; on each, greedy on the
    other folds and each prefix's squared error on the fold; then one-sided
    paired t-tests from the longest prefix down, stopping at the first that
    fails; the passing prefix with the lowest loss, its length applied to the
    search on all rows."""
    from scipy import stats

    from ttakit.tuning.guard import crossfit_folds

    n = preds.shape[1]
    if n < 2 * folds:
        return []

    def path(rows):
        chosen = []
        for _ in range(budget):
            scores = [np.mean((np.mean([preds[j, rows] for j in chosen + [k]], 0) - y[rows]) ** 2)
                      for k in range(len(preds))]
            chosen.append(int(np.argmin(scores)))
        return chosen

    fold = crossfit_folds(n, folds, seed)
    loss = np.empty((budget + 1, n))
    loss[0] = (preds[0] - y) ** 2
    for f in range(folds):
        held = np.flatnonzero(fold == f)
        chosen = path(np.flatnonzero(fold != f))
        for length in range(1, budget + 1):
            loss[length, held] = (np.mean([preds[j, held] for j in chosen[:length]], 0) - y[held]) ** 2
    passed = []
    for length in range(budget, 0, -1):
        d = loss[0] - loss[length]
        if np.all(np.abs(d) <= 1e-12 * (np.abs(loss[0]) + np.abs(loss[length]))):
            continue
        p = max(stats.ttest_rel(loss[0], loss[length], alternative="greater").pvalue, _johnson_p(d))
        if not (p < alpha and d.mean() > margin * abs(loss[0].mean()) and (d > 0).sum() >= 3):
            break
        passed.append(length)
    if not passed:
        return []
    best = max(passed)
    picked = path(np.arange(n))[:best]
    return [] if all(k == 0 for k in picked) else picked


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(12, 120), k=st.integers(2, 5), budget=st.integers(1, 3),
       alpha=st.sampled_from([0.01, 0.05, 0.5, 1.0]), helpful=st.floats(0.0, 1.0))
def test_search_equals_the_rule_written_out_with_scipy(seed, n, k, budget, alpha, helpful):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    noisy = y + rng.normal(size=n)  # no TTA: the truth plus noise
    # candidates pull towards the truth by a varying amount, with their own noise
    preds = np.stack([noisy] + [noisy + helpful * rng.uniform() * (y - noisy) + 0.3 * rng.normal(size=n)
                                for _ in range(k - 1)])
    res = guarded_greedy(preds, y, squared_error, budget=budget, seed=seed, guard_alpha=alpha)
    assert res.chosen == _naive_choice(preds, y, budget, seed, alpha)
    assert res.fell_back == (not res.chosen)
    for step in res.steps:
        if step["significant"]:
            assert step["guard_p"] < alpha and step["guard_loss"] < res.identity_guard * (1 - 1e-3)


def test_ties_and_unmeasurable_gains_go_to_no_tta():
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    same = np.stack([y + 1.0] * 4)  # every candidate equals no TTA: a tie
    res = guarded_greedy(same, y, squared_error, budget=3)
    assert res.fell_back and res.chosen == [] and all(s["guard_p"] is None for s in res.steps)
    lucky = np.stack([y + 1.0, y + 1.0])
    lucky[1, :2] = y[:2]  # on 2 of 200 rows: a lower mean loss, but evidence two rows cannot supply
    res = guarded_greedy(lucky, y, squared_error, budget=1, seed=1)
    assert res.fell_back and res.steps[0]["guard_loss"] < res.identity_guard
    assert "did not show a gain" in res.reason
    with pytest.raises(InputError, match="guard_alpha"):
        guarded_greedy(same, y, squared_error, guard_alpha=0)


def test_guard_alpha_is_a_parameter_of_both_meta_estimators():
    for cls in (TTAClassifier, TTARegressor):
        est = cls()
        assert est.get_params()["guard_alpha"] == GUARD_ALPHA == 0.05
        assert clone(est.set_params(guard_alpha=0.2)).guard_alpha == 0.2
    x = np.random.default_rng(0).normal(size=(100, 3))
    for bad in (0, 1.5, "0.05", True):
        with pytest.raises(InputError, match="guard_alpha"):
            TTARegressor(guard_alpha=bad).fit(x, x[:, 0])


def _step_data(seed, n):
    """A step function of feature 0 plus noise: a tree learns the steps, and
    row noise moves rows across them (it hurts, a little)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return x, np.floor(2 * x[:, 0]) + 0.3 * rng.normal(size=n)


def _smooth_data(seed, n):
    """A smooth function plus noise: a 1-nearest-neighbour model copies the
    noise of its neighbour, and averaging noisy copies of a row smooths it (it helps a lot)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    return x, np.sin(2 * x[:, 0]) + x[:, 1] + 0.5 * rng.normal(size=n)


def _held_out_change(make_data, estimator, seeds, n_train, alpha):
    """Relative change of held-out MSE (TTA / no TTA - 1) for each seeded
    training set, and whether views were kept."""
    change, kept = [], []
    for s in seeds:
        x, y = make_data(s, n_train)
        xt, yt = make_data(10_000 + s, 2000)
        reg = TTARegressor(estimator, views="noise", n_copies=4, guard_alpha=alpha, random_state=s).fit(x, y)
        base = np.mean((reg.estimator_.predict(xt) - yt) ** 2)
        change.append(np.mean((reg.predict(xt) - yt) ** 2) / base - 1)
        kept.append(not reg.fell_back_)
    return np.array(change), np.array(kept)


def test_guard_never_lets_row_noise_hurt_held_out_rows():
    tree = DecisionTreeRegressor(min_samples_leaf=5, random_state=0)
    guarded, _ = _held_out_change(_step_data, tree, range(30), 160, GUARD_ALPHA)
    # a real trap: with the weakest test (alpha 1), noise is adopted and costs over 1% held-out MSE
    old_rule, _ = _held_out_change(_step_data, tree, range(30), 160, 1.0)
    assert (old_rule > 0.01).sum() >= 1, old_rule
    assert guarded.max() <= 0.01, guarded


def test_guard_keeps_row_noise_where_it_clearly_helps():
    # averaging noisy copies lowers 1-NN's held-out MSE by about a third; 375 tuning rows (112 guard) show it
    change, kept = _held_out_change(_smooth_data, KNeighborsRegressor(1), range(6), 1500, GUARD_ALPHA)
    assert kept.sum() >= 5, (change, kept)
    assert change[kept].max() < -0.2, change
