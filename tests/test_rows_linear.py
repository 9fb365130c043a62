"""The logistic-regression shortcut for noise copies gives what the general
run loop gives: the same probabilities, rows near the training range's
bounds through the loop, and no shortcut where it would not be exact."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from ttakit.policy import Policy
from ttakit.sklearn import TTAClassifier
from ttakit.tasks.classification import ClassificationTask
from ttakit.tasks.linear_rows import linear_noise_applies, linear_noise_proba
from ttakit.tasks.rows import run_rows
from ttakit.merge import Mean
from ttakit.views.rows import FeatureStats, copies


def _general(model, rows, views, weights):
    task = ClassificationTask(Mean(), output="probs", spread=False)
    p = run_rows(task, model.predict_proba, rows, views, weights).probs.astype(np.float64)
    return p / p.sum(1, keepdims=True)


def _naive(model, rows, views, weights):
    """One predict_proba per copy, written out: the reference."""
    import torch

    w = np.asarray(weights, float)
    out = sum(wk * model.predict_proba(v.apply(torch.from_numpy(rows)).numpy()) for v, wk in zip(views, w))
    return out / w.sum()


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 4), st.integers(1, 6), st.floats(0.01, 1.0), st.integers(0, 10_000))
def test_shortcut_equals_the_copies_written_out(n_classes, n_copies, strength, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, 5)) * rng.uniform(0.1, 10, 5) + rng.normal(0, 5, 5)
    y = rng.integers(0, n_classes, 400)
    y[:n_classes] = np.arange(n_classes)
    model = LogisticRegression(max_iter=200).fit(x[:200], y[:200])
    stats = FeatureStats().fit(x[:200])
    views = copies("noise", stats, strength, n_copies, first_seed=seed % 7)
    weights = rng.uniform(0.5, 2, n_copies)
    rows = x[200:]
    assert linear_noise_applies(model, rows, views)
    p, done = linear_noise_proba(model, rows, views, weights)
    ref = _naive(model, rows, views, weights)
    np.testing.assert_allclose(p[done], ref[done], rtol=0, atol=1e-10)
    # rows outside (or near the edge of) the training range are left to the loop, which clips them
    far = (rows < stats.low) | (rows > stats.high)
    assert not done[far.any(1)].any()


def test_classifier_mixes_shortcut_and_loop_rows_to_the_loop_result():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 6))
    y = (x[:, 0] - x[:, 1] + rng.normal(0, 0.5, 3000) > 0).astype(int)
    clf = TTAClassifier(LogisticRegression(), views="none", random_state=0).fit(x[:1000], y[:1000])
    views = copies("noise", clf.stats_, 0.3, 8)
    clf.policy_ = Policy(views).unique()
    rows = x[1000:].copy()
    rows[:50] *= 4  # many beyond the training range
    _, done = linear_noise_proba(clf.estimator_, rows, clf.policy_.views, clf.policy_.weights)
    assert 0 < (~done).sum() < len(rows)
    got = clf.predict_proba(rows)
    np.testing.assert_allclose(got, _general(clf.estimator_, rows, clf.policy_.views, clf.policy_.weights),
                               atol=2e-7)
    np.testing.assert_allclose(got.sum(1), 1)
    # a row's answer does not depend on the rows beside it
    np.testing.assert_allclose(clf.predict_proba(rows[::7]), got[::7], atol=1e-12)


def test_no_shortcut_where_it_would_not_be_exact():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=300), rng.integers(0, 9, 300)]).astype(float)
    y = (x[:, 0] > 0).astype(int)
    model = LogisticRegression().fit(x, y)
    with_integer = FeatureStats().fit(x)
    assert not linear_noise_applies(model, x, copies("noise", with_integer, 0.1, 2))  # rounding
    numeric = FeatureStats(roles={1: "numeric"}).fit(x)
    assert linear_noise_applies(model, x, copies("noise", numeric, 0.1, 2))
    assert not linear_noise_applies(model, x, copies("jitter", numeric, 0.1, 2))
    assert not linear_noise_applies(model, x.astype(np.float32), copies("noise", numeric, 0.1, 2))

    # a model whose probabilities are not softmax/expit of its decision values (one-vs-rest, as older
    # scikit-learn versions give for some settings): no shortcut
    y3 = np.arange(300) % 3
    ovr = LogisticRegression().fit(x, y3)
    assert linear_noise_applies(ovr, x, copies("noise", numeric, 0.1, 2))

    def one_vs_rest(a):
        p = 1 / (1 + np.exp(-ovr.decision_function(a)))
        return p / p.sum(1, keepdims=True)

    ovr.predict_proba = one_vs_rest
    assert not linear_noise_applies(ovr, x, copies("noise", numeric, 0.1, 2))

    class Tweaked(LogisticRegression):
        pass

    assert not linear_noise_applies(Tweaked().fit(x, y), x, copies("noise", numeric, 0.1, 2))
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    assert not linear_noise_applies(make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y), x,
                                    copies("noise", numeric, 0.1, 2))


def test_rows_with_nan_take_the_loop_and_are_imputed_as_before():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 4))
    y = (x[:, 0] > 0).astype(int)
    clf = TTAClassifier(LogisticRegression(), views="none", nan="impute", random_state=0).fit(x[:300], y[:300])
    clf.policy_ = Policy(copies("noise", clf.stats_, 0.1, 4)).unique()
    bad = x[300:].copy()
    bad[17, 2] = np.nan
    got = clf.predict_proba(bad)
    filled = bad.copy()
    filled[17, 2] = clf.stats_.centre[2]
    np.testing.assert_allclose(got, clf.predict_proba(filled), atol=2e-7)
    np.testing.assert_allclose(got[17], _naive(clf.estimator_, filled[17:18], clf.policy_.views,
                                                clf.policy_.weights)[0], atol=2e-7)


def test_predict_rows_takes_the_shortcut_with_the_same_result():
    from ttakit.tasks.rows import predict_rows

    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 5))
    y = rng.integers(0, 3, 2000)
    model = LogisticRegression().fit(x[:500], y[:500])
    stats = FeatureStats().fit(x[:500])
    pol = Policy(copies("noise", stats, 0.2, 6)).unique()
    rows = x[500:]
    got = predict_rows(model, rows, pol)
    ref = _general(model, rows, pol.views, pol.weights)
    np.testing.assert_allclose(got.probs, ref, atol=2e-7)
    assert got.forward_passes == 6 * len(rows) and (got.pred == model.classes_[ref.argmax(1)]).all()
