"""Tabular scores and paired comparisons (ttakit.evaluation.rows)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from ttakit.errors import InputError
from ttakit.evaluation.rows import auc, classification_scores, paired_rows, regression_scores


def test_classification_scores_match_scikit_learn():
    rng = np.random.default_rng(0)
    p1 = np.round(rng.random(300), 2)  # ties
    y = (rng.random(300) < p1).astype(int)
    probs = np.c_[1 - p1, p1]
    s = classification_scores(probs, y)
    assert s["auc"] == pytest.approx(roc_auc_score(y, p1))
    assert s["log_loss"] == pytest.approx(log_loss(y, np.clip(probs, 1e-12, 1)), rel=1e-9)
    assert s["brier"] == pytest.approx(brier_score_loss(y, p1), rel=1e-12)  # issue 21: not twice it
    p3 = rng.dirichlet(np.ones(3), 200)
    y3 = rng.integers(0, 3, 200)
    assert auc(p3, y3) == pytest.approx(roc_auc_score(y3, p3, multi_class="ovr", average="macro"))
    # more classes: the mean over rows of the summed squared errors (scikit-learn >= 1.7 gives the same)
    naive = np.mean([sum((p3[i, c] - (y3[i] == c)) ** 2 for c in range(3)) for i in range(200)])
    assert classification_scores(p3, y3)["brier"] == pytest.approx(naive, rel=1e-12)
    try:
        assert classification_scores(p3, y3)["brier"] == pytest.approx(brier_score_loss(y3, p3, labels=[0, 1, 2]))
    except ValueError:  # an older scikit-learn: binary only
        pass


def test_paired_brier_difference_is_the_difference_of_the_scores():
    rng = np.random.default_rng(1)
    for c in (2, 4):
        a, b = rng.dirichlet(np.ones(c), 100), rng.dirichlet(np.ones(c), 100)
        y = rng.integers(0, c, 100)
        d = paired_rows(a, b, y, n_boot=10)["brier"]["difference"]
        assert d == pytest.approx(classification_scores(b, y)["brier"] - classification_scores(a, y)["brier"])


def test_regression_scores_and_coverage():
    y = np.arange(10.0)
    s = regression_scores(y + 1, y, std=np.full(10, 1.0), level=0.9)
    assert s["rmse"] == pytest.approx(1) and s["mae"] == pytest.approx(1) and s["coverage"] == 1.0
    assert regression_scores(y + 2, y, std=np.ones(10))["coverage"] == 0.0
    with pytest.raises(InputError):
        regression_scores(y[:3], y)


def test_paired_rows_counts_and_intervals():
    y = np.array([0, 1, 1, 0, 1])
    a = np.array([[.9, .1], [.6, .4], [.3, .7], [.4, .6], [.2, .8]])
    b = np.array([[.8, .2], [.4, .6], [.3, .7], [.6, .4], [.6, .4]])
    r = paired_rows(a, b, y)
    assert (r["fixed"], r["broken"]) == (2, 1)
    assert r["accuracy"]["difference"] == pytest.approx(0.2)
    assert r["accuracy"]["ci_low"] <= 0.2 <= r["accuracy"]["ci_high"]
    reg = paired_rows(np.zeros(4), np.array([0.5, 0.5, 2.0, 0.0]), np.ones(4), task="regression")
    assert (reg["improved"], reg["worsened"]) == (2, 0)
    assert reg["squared_error"]["difference"] == pytest.approx((-0.75 - 0.75 + 0) / 4)
