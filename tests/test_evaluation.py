"""Metrics and paired statistics against naive reference formulas."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttakit import InputError
from ttakit.evaluation import (PredictionCache, accuracy, brier, ece, mcnemar_exact, mean_ci, nll,
                               paired_accuracy, top_k_accuracy)


def _random_probs(rng, n, c):
    z = rng.normal(size=(n, c)) * 2
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


def test_metrics_match_naive_loops():
    rng = np.random.default_rng(0)
    p = _random_probs(rng, 200, 7)
    y = rng.integers(0, 7, 200)
    assert accuracy(p, y) == pytest.approx(np.mean([p[i].argmax() == y[i] for i in range(200)]))
    assert nll(p, y) == pytest.approx(np.mean([-math.log(p[i, y[i]]) for i in range(200)]))
    assert brier(p, y) == pytest.approx(np.mean([sum((p[i, k] - (k == y[i])) ** 2 for k in range(7))
                                                 for i in range(200)]))
    top3 = np.mean([y[i] in np.argsort(-p[i])[:3] for i in range(200)])
    assert top_k_accuracy(p, y, 3) == pytest.approx(top3)
    # ECE by hand with 10 equal-width bins
    conf, pred = p.max(1), p.argmax(1)
    total = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs((pred[m] == y[m]).mean() - conf[m].mean())
    assert ece(p, y, bins=10) == pytest.approx(total)


def test_perfectly_calibrated_one_hot_has_zero_ece_and_nll():
    y = np.array([0, 1, 2, 1])
    p = np.eye(3)[y]
    assert ece(p, y) == pytest.approx(0.0)
    assert nll(p, y) == pytest.approx(0.0, abs=1e-9)
    assert accuracy(p, y) == 1.0


def test_labels_that_do_not_match_the_data_are_rejected():
    p = np.full((4, 3), 1 / 3)
    with pytest.raises(InputError, match="4 predictions"):
        accuracy(p, np.zeros(5, dtype=int))
    with pytest.raises(InputError, match="class indices"):
        nll(p, np.array([0, 1, 2, 3]))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40), st.integers(0, 40))
def test_mcnemar_exact_equals_binomial_test(fixed, broken):
    scipy_stats = pytest.importorskip("scipy.stats")
    n = fixed + broken
    expected = 1.0 if n == 0 else scipy_stats.binomtest(min(fixed, broken), n, 0.5).pvalue
    assert mcnemar_exact(fixed, broken) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_paired_accuracy_counts_and_ci():
    rng = np.random.default_rng(1)
    a = rng.random(2000) < 0.7
    b = a.copy()
    flip = rng.random(2000) < 0.1
    b[flip] = ~b[flip]
    r = paired_accuracy(a, b)
    assert r.fixed == int((~a & b).sum()) and r.broken == int((a & ~b).sum())
    assert r.lift == pytest.approx(b.mean() - a.mean())
    assert r.ci_low <= r.lift <= r.ci_high
    # the CI has about the width of the analytic paired interval
    d = b.astype(float) - a.astype(float)
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert (r.ci_high - r.ci_low) / 2 == pytest.approx(half, rel=0.2)


def test_mean_ci_uses_student_t():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0
    assert hi - m == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)


def test_prediction_cache_runs_each_view_once_and_matches_the_classifier():
    import torch

    import ttakit

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5))
    x = np.random.default_rng(0).integers(0, 256, (23, 8, 8, 3), dtype=np.uint8)
    calls = []
    adapter = ttakit.as_model(model)
    orig = adapter.forward_raw
    adapter.forward_raw = lambda b: (calls.append(b.shape[0]), orig(b))[1]
    cache = PredictionCache(adapter, x, data_layout="NHWC", batch_size=16)
    specs = ["identity", "identity + hflip", "hflips * shift(dx=[-1, 1])", "d4", "hflip + vflip"]
    for spec in specs:
        cache.ensure(spec)
    distinct = {v for s in specs for v in ttakit.Policy.parse(s).unique().views}
    assert sum(calls) == len(distinct) * len(x) == cache.forward_passes
    for spec in specs:
        for merge in ("mean", "gmean", "vote", "max"):
            want = ttakit.Classifier(model, spec, merge, data_layout="NHWC").predict_proba(x)
            np.testing.assert_allclose(cache.predict(spec, merge), want, atol=1e-5)
    assert sum(calls) == len(distinct) * len(x)  # predictions came from the cache
