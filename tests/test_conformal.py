"""Split-conformal prediction sets: the finite-sample quantile, coverage
over random splits, LAC/APS against MAPIE on the same probabilities, RAPS
against a naive loop, class-conditional coverage, the report helpers."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttakit.conformal import (SplitConformal, conformal_quantile, coverage_by_size, label_scores,
                              repeated_splits, score_matrix, set_metrics)
from ttakit.errors import InputError, NotCalibratedError


def _model_probs(n, c=10, seed=0, sharp=2.0):
    """Probabilities and labels drawn from them (a perfectly calibrated model)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)) * sharp
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (p.cumsum(1) > rng.random(n)[:, None]).argmax(1)
    return p, y


@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=60), st.floats(0.01, 0.99))
@settings(max_examples=200, deadline=None)
def test_quantile_is_the_finite_sample_order_statistic(scores, alpha):
    q = conformal_quantile(scores, alpha)
    n = len(scores)
    k = math.ceil((n + 1) * (1 - alpha))
    if k > n:
        assert q == float("inf")
    else:
        assert q == sorted(scores)[k - 1]
        # at least ceil((n+1)(1-alpha)) of the scores are <= q: the guarantee's counting step
        assert sum(s <= q for s in scores) >= k


def _naive_scores(p, method, lam=0.01, k_reg=1):
    """Per-label scores by a plain loop (an independent reference)."""
    n, c = p.shape
    out = np.zeros((n, c))
    for i in range(n):
        for y in range(c):
            if method == "lac":
                out[i, y] = 1 - p[i, y]
                continue
            ranked = sorted(range(c), key=lambda j: (-p[i, j], j))
            r = ranked.index(y)
            out[i, y] = sum(p[i, j] for j in ranked[:r + 1])
            if method == "raps":
                out[i, y] += lam * max(0, (r + 1) - k_reg)
    return out


@pytest.mark.parametrize("method", ["lac", "aps", "raps"])
def test_scores_match_a_naive_loop(method):
    p, _ = _model_probs(40, c=6, seed=3)
    np.testing.assert_allclose(score_matrix(p, method, lam=0.05, k_reg=2), _naive_scores(p, method, 0.05, 2),
                               atol=1e-12)


@pytest.mark.parametrize("method", ["lac", "aps", "raps"])
@pytest.mark.parametrize("class_conditional", [False, True])
def test_coverage_holds_over_random_splits(method, class_conditional):
    p, y = _model_probs(4000, seed=1)
    res = repeated_splits({"m": p}, y, method=method, alpha=0.1, splits=20, class_conditional=class_conditional,
                          randomized=method != "lac")
    cov = res["results"]["m"]["coverage"]
    # 2000 test inputs per split: the coverage of one split is ~0.9 +- 0.007 (sd); the mean over 20 much tighter
    assert 0.885 <= cov["mean"] <= 0.92
    assert cov["min"] >= 0.87 and cov["max"] <= 0.935
    assert res["n_calibration"] == 2000 and len(res["results"]["m"]["per_split"]["coverage"]) == 20


def test_class_conditional_covers_every_class_where_marginal_does_not():
    # class 0 is hard (its probability is spread), the rest easy
    p, y = _model_probs(6000, c=5, seed=4)
    hard = y == 0
    p[hard] = 0.7 * p[hard] + 0.3 / 5
    marg = repeated_splits({"m": p}, y, method="lac", splits=10)["results"]["m"]
    cond = repeated_splits({"m": p}, y, method="lac", splits=10, class_conditional=True)["results"]["m"]
    assert cond["worst_class_coverage"]["mean"] >= 0.88
    assert cond["worst_class_coverage"]["mean"] > marg["worst_class_coverage"]["mean"]


def _mapie_sets(p, y, n_cal, method, seed=0):
    from sklearn.base import BaseEstimator, ClassifierMixin
    from mapie.classification import SplitConformalClassifier

    class Fixed(ClassifierMixin, BaseEstimator):
        """A prefit classifier returning stored probabilities for the row indices it is given,
        so MAPIE sees exactly our probabilities."""

        def __init__(self, probs=None):
            self.probs = probs

        def fit(self, x, y):
            self.classes_ = np.arange(self.probs.shape[1])
            return self

        def predict_proba(self, x):
            return self.probs[np.asarray(x)[:, 0].astype(int)]

        def predict(self, x):
            return self.predict_proba(x).argmax(1)

    x = np.arange(len(p))[:, None]
    est = Fixed(p).fit(x, y)
    cp = SplitConformalClassifier(est, confidence_level=0.9, conformity_score=method, prefit=True,
                                  random_state=seed).conformalize(x[:n_cal], y[:n_cal])
    return cp.predict_set(x[n_cal:])[1][:, :, 0]


def test_lac_sets_equal_mapie_on_the_same_probabilities():
    pytest.importorskip("mapie", reason="MAPIE is a dev extra (pip install -e '.[dev]')")
    p, y = _model_probs(3000, seed=5)
    theirs = _mapie_sets(p, y, 1500, "lac")
    ours = SplitConformal("lac", 0.1, allow_empty=True).calibrate(p[:1500], y[:1500]).predict_set(p[1500:])
    assert (theirs == ours).all()


def test_aps_scores_and_quantile_equal_mapie_and_sizes_agree():
    pytest.importorskip("mapie", reason="MAPIE is a dev extra (pip install -e '.[dev]')")
    from sklearn.utils import check_random_state

    p, y = _model_probs(3000, seed=6)
    theirs = _mapie_sets(p, y, 1500, "aps", seed=0)
    # MAPIE calibrates the randomised APS score (u from its random_state) and, at prediction, keeps every
    # label whose mass ranked strictly above it is below the threshold ("include_last_label")
    u = check_random_state(0).uniform(size=1500)
    q = conformal_quantile(label_scores(p[:1500], y[:1500], "aps", u=1 - u), 0.1)
    above = score_matrix(p[1500:], "aps", u=np.zeros(1500))
    agree = ((above < q) == theirs).all(1).mean()
    assert agree >= 0.995
    # our own randomised APS: same coverage and set size as MAPIE's within sampling noise
    ours = SplitConformal("aps", 0.1, randomized=True, allow_empty=False).calibrate(p[:1500], y[:1500]).predict_set(
        p[1500:])
    m_ours, m_theirs = set_metrics(ours, y[1500:]), set_metrics(theirs, y[1500:])
    assert abs(m_ours["coverage"] - m_theirs["coverage"]) < 0.03
    assert m_ours["mean_size"] <= m_theirs["mean_size"] + 0.05  # MAPIE's last label only adds


def test_sets_metrics_and_errors():
    p, y = _model_probs(500, seed=7)
    cp = SplitConformal("raps", 0.2, allow_empty=False)
    with pytest.raises(NotCalibratedError, match="calibrate"):
        cp.predict_set(p)
    sets = cp.calibrate(p[:250], y[:250]).predict_set(p[250:])
    assert sets[np.arange(250), p[250:].argmax(1)].all()  # never empty: the top label is always in
    m = set_metrics(sets, y[250:])
    assert m["coverage"] == pytest.approx(sets[np.arange(250), y[250:]].mean())
    assert sum(b["n"] for b in m["by_size"]) == 250 and m["by_size"][0]["n"] == 0  # no empty sets
    assert coverage_by_size([True, False, True], [1, 1, 7], 10)[1] == {"size": "1", "n": 2, "coverage": 0.5}
    with pytest.raises(InputError, match="alpha"):
        SplitConformal("lac", 1.5)
    with pytest.raises(InputError, match="method"):
        SplitConformal("naive")
    with pytest.raises(InputError, match="logits"):
        SplitConformal("lac").calibrate(-p, y)
    with pytest.raises(InputError, match="at least 20"):
        SplitConformal("lac").calibrate(p[:5], y[:5])
    # too few calibration inputs for this alpha: every label is in every set
    tiny = SplitConformal("lac", 0.01).calibrate(p[:30], y[:30])
    assert tiny.predict_set(p[:4]).all()


def test_conformal_experiment_tables_and_report_from_probabilities():
    from ttakit.experiments.conformal import ConformalConfig, render, tables_for

    p, y = _model_probs(1200, seed=8)
    probs = {"no TTA": p, "no TTA + temperature": p, "tuned": np.sqrt(p) / np.sqrt(p).sum(1, keepdims=True)}
    cfg = ConformalConfig(models=("m",), splits=3)
    tables = tables_for(probs, y, cfg)
    assert set(tables) == {"lac", "aps", "raps", "aps, top label always in", "aps, class-conditional"}
    info = {"policy": "identity", "reason": "r", "views": 1, "accuracy": {k: 0.5 for k in probs},
            "forwards_tune": 1, "forwards_holdout": 1}
    md = render({"config": vars(cfg), "models": {"m": {"info": info, "tables": tables}}, "seconds": 1.0})
    assert md.count("| lac |") == 3 and "size 0" in md and "--splits 3" in md


def _confident_probs(n, c=10, accuracy=0.94, seed=0):
    """A confident model: float32 softmax of sharp logits, so the top
    probability rounds to exactly 1.0 for most inputs (as a CIFAR ResNet-56's
    does), and the true label is the top one for about ``accuracy`` of them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    top = np.where(rng.random(n) < accuracy, y, (y + rng.integers(1, c, n)) % c)
    logits = rng.normal(size=(n, c)) + rng.uniform(14, 40, n)[:, None] * np.eye(c)[top]
    z = (logits - logits.max(1, keepdims=True)).astype(np.float32)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return p.astype(np.float64), y


@pytest.mark.parametrize("method", ["lac", "aps", "raps"])
def test_default_arguments_give_nominal_coverage_on_a_confident_model(method):
    p, y = _confident_probs(4000)
    assert (p[np.arange(len(y)), y] == 1.0).mean() > 0.5     # the case the deterministic APS score fails on
    res = repeated_splits({"m": p}, y, method=method, alpha=0.1, splits=20)   # default arguments
    cov = res["results"]["m"]["coverage"]
    assert 0.89 <= cov["mean"] <= 0.91
    if method != "lac":
        # the old default (deterministic, top label always in) over-covers badly here
        old = repeated_splits({"m": p}, y, method=method, alpha=0.1, splits=5, randomized=False,
                              allow_empty=False)["results"]["m"]["coverage"]["mean"]
        assert old > 0.93
