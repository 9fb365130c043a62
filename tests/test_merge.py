"""Merges: dedupe invariance, normalisation, probs vs logits, and hand-written
NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import ttakit
from ttakit.merge import MERGES, Sharpen, WeightedMean, get_merge

FAST = settings(max_examples=40, deadline=None)



NAMES = ["mean", "sum", "gmean", "logits", "max", "min", "vote", "sharpen", "sharpen(0.25)", "sharpen(2)"]


@st.composite
def logits_st(draw, min_v=1, max_v=5):
    v = draw(st.integers(min_v, max_v))
    n = draw(st.integers(1, 4))
    c = draw(st.integers(2, 5))
    # multiples of 1/8: no near-ties that probabilities and logits could order differently
    z = draw(arrays(np.int64, (v, n, c), elements=st.integers(-40, 40))) / 8.0
    return z


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def run(merge, outputs, weights, kind):
    m = get_merge(merge) if isinstance(merge, str) else merge
    return m(torch.as_tensor(outputs, dtype=torch.float64), torch.as_tensor(weights, dtype=torch.float64),
             kind).numpy()


def label(merge, outputs, weights, kind):
    m = get_merge(merge)
    o, w = torch.as_tensor(outputs, dtype=torch.float64), torch.as_tensor(weights, dtype=torch.float64)
    return m.labels(m(o, w, kind), o, w, kind).numpy()


def clear_rows(name, outputs, weights, kind):
    """Rows whose label is not a tie within rounding (a tie may go either way
    under another, equally exact, order of operations)."""
    top2 = np.sort(run(name, outputs, weights, kind), -1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-9
    if name == "vote":  # vote ties are broken by the mean probability: that must be clear too
        mean = np.sort(run("mean", outputs, weights, kind), -1)[:, -2:]
        clear |= mean[:, 1] - mean[:, 0] > 1e-9
    return clear


@FAST
@given(z=logits_st(), data=st.data())
def test_dedupe_gives_the_expanded_result(z, data):
    v = z.shape[0]
    mult = np.array(data.draw(st.lists(st.integers(1, 4), min_size=v, max_size=v)), dtype=np.float64)
    expanded = np.repeat(z, mult.astype(int), axis=0)
    ones = np.ones(len(expanded))
    extra = np.array(data.draw(st.lists(st.floats(0.1, 3), min_size=v, max_size=v)))
    for kind, out_d, out_e in (("logits", z, expanded), ("probs", softmax(z), softmax(expanded))):
        for name in NAMES:
            np.testing.assert_allclose(run(name, out_d, mult, kind), run(name, out_e, ones, kind), atol=1e-6,
                                       err_msg=f"{name} {kind}")
            same = label(name, out_d, mult, kind) == label(name, out_e, ones, kind)
            assert same[clear_rows(name, out_d, mult, kind)].all(), name
        np.testing.assert_allclose(run(WeightedMean(extra), out_d, mult, kind),
                                   run(WeightedMean(np.repeat(extra, mult.astype(int))), out_e, ones, kind),
                                   atol=1e-6)


@FAST
@given(z=logits_st(), data=st.data())
def test_normalised_merges_sum_to_one(z, data):
    w = np.array(data.draw(st.lists(st.floats(0.05, 5), min_size=z.shape[0], max_size=z.shape[0])))
    for kind, out in (("logits", z), ("probs", softmax(z))):
        for name in NAMES:
            s = run(name, out, w, kind)
            assert s.shape == z.shape[1:] and (s >= -1e-12).all()
            total = 1.0 if get_merge(name).normalised else w.sum()
            np.testing.assert_allclose(s.sum(-1), total, rtol=1e-9, err_msg=name)
        s = run(WeightedMean(np.linspace(0.5, 2, z.shape[0])), out, w, kind)
        np.testing.assert_allclose(s.sum(-1), 1.0, rtol=1e-9)


@FAST
@given(z=logits_st(), data=st.data())
def test_probs_and_logits_inputs_agree(z, data):
    w = np.array(data.draw(st.lists(st.floats(0.05, 5), min_size=z.shape[0], max_size=z.shape[0])))
    for name in NAMES:
        np.testing.assert_allclose(run(name, softmax(z), w, "probs"), run(name, z, w, "logits"),
                                   atol=1e-6, err_msg=name)
        same = label(name, softmax(z), w, "probs") == label(name, z, w, "logits")
        assert same[clear_rows(name, z, w, "logits")].all(), name


@FAST
@given(z=logits_st(), data=st.data())
def test_against_numpy(z, data):
    v = z.shape[0]
    w = np.array(data.draw(st.lists(st.floats(0.05, 5), min_size=v, max_size=v)))
    p = softmax(z)
    wn = (w / w.sum())[:, None, None]
    # mean with equal weights is the plain mean
    np.testing.assert_allclose(run("mean", p, np.ones(v), "probs"), p.mean(0), atol=1e-12)
    np.testing.assert_allclose(run("mean", z, w, "logits"), (p * wn).sum(0), atol=1e-12)
    np.testing.assert_allclose(run("sum", z, w, "logits"), (p * w[:, None, None]).sum(0), atol=1e-12)
    # weighted geometric mean, renormalised
    g = np.prod(p ** wn, axis=0)
    g = g / g.sum(-1, keepdims=True)
    np.testing.assert_allclose(run("gmean", p, w, "probs"), g, atol=1e-9)
    np.testing.assert_allclose(run("gmean", z, w, "logits"), g, atol=1e-9)
    # the logits merge: softmax of the mean logit; on probs it is gmean
    np.testing.assert_allclose(run("logits", z, w, "logits"), softmax((z * wn).sum(0)), atol=1e-9)
    np.testing.assert_allclose(run("logits", p, w, "probs"), run("gmean", p, w, "probs"), atol=1e-9)
    # max and min, renormalised
    mx = p.max(0)
    np.testing.assert_allclose(run("max", p, w, "probs"), mx / mx.sum(-1, keepdims=True), atol=1e-12)
    mn = p.min(0)
    np.testing.assert_allclose(run("min", p, w, "probs"), mn / mn.sum(-1, keepdims=True), atol=1e-12)
    # sharpen: p^(1/T) renormalised per view, then the weighted mean; T = 1 is mean
    for t in (0.25, 0.5, 2.0):
        s = p ** (1 / t)
        s = s / s.sum(-1, keepdims=True)
        np.testing.assert_allclose(run(Sharpen(t), p, w, "probs"), (s * wn).sum(0), atol=1e-9)
    np.testing.assert_allclose(run("sharpen(1)", z, w, "logits"), run("mean", z, w, "logits"), atol=1e-12)
    np.testing.assert_allclose(run("sharpen(T=1)", p, w, "probs"), run("mean", p, w, "probs"), atol=1e-12)
    assert get_merge("sharpen").temperature == 0.5
    # vote: weighted shares of each view's top class
    votes = np.zeros(z.shape[1:])
    for k in range(v):
        votes[np.arange(z.shape[1]), z[k].argmax(-1)] += w[k]
    np.testing.assert_allclose(run("vote", z, w, "logits"), votes / w.sum(), atol=1e-12)
    # weighted: the policy weights times the extra ones
    extra = np.linspace(0.5, 2.0, v)
    ww = (w * extra / (w * extra).sum())[:, None, None]
    np.testing.assert_allclose(run(WeightedMean(extra), z, w, "logits"), (p * ww).sum(0), atol=1e-9)


def test_vote_ties_go_to_the_higher_mean_probability():
    w = np.ones(2)
    # view 0 votes class 0 weakly, view 1 votes class 1 strongly: 1:1, mean favours 1
    p = np.array([[[0.6, 0.4]], [[0.1, 0.9]]])
    np.testing.assert_allclose(run("vote", p, w, "probs"), [[0.5, 0.5]])
    assert label("vote", p, w, "probs").tolist() == [1]
    # the mirror case goes to class 0: not the first or last index by accident
    q = np.array([[[0.9, 0.1]], [[0.45, 0.55]]])
    assert label("vote", q, w, "probs").tolist() == [0]
    # a three-way tie goes to the highest mean
    r = np.array([[[0.34, 0.33, 0.33]], [[0.33, 0.34, 0.33]], [[0.0, 0.49, 0.51]]])
    np.testing.assert_allclose(run("vote", r, np.ones(3), "probs"), [[1 / 3, 1 / 3, 1 / 3]])
    assert label("vote", r, np.ones(3), "probs").tolist() == [2]
    # a class with no votes never wins the tie-break, even with the highest mean
    s = np.array([[[0.41, 0.20, 0.39]], [[0.20, 0.41, 0.39]]])
    assert label("vote", s, np.ones(2), "probs").tolist() == [0]
    # weights count: 2 votes for class 1 beat 1.5 for class 0 whatever the probabilities
    t = np.array([[[0.99, 0.01]], [[0.4, 0.6]]])
    assert label("vote", t, np.array([1.5, 2.0]), "probs").tolist() == [1]


@pytest.mark.parametrize("name", ["mean", "gmean", "max", "min", "logits", "sharpen(1)", "vote"])
def test_single_view_is_a_fixed_point(name):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1, 6, 4))
    p = softmax(z)
    expected = np.eye(4)[p[0].argmax(-1)] if name == "vote" else p[0]
    for w in (1.0, 3.5):
        np.testing.assert_allclose(run(name, p, [w], "probs"), expected, atol=1e-9)
        np.testing.assert_allclose(run(name, z, [w], "logits"), expected, atol=1e-9)
        assert (label(name, z, [w], "logits") == p[0].argmax(-1)).all()


def test_zero_weight_views_are_left_out():
    rng = np.random.default_rng(1)
    p = softmax(rng.normal(size=(3, 5, 4)))
    w = np.array([1.0, 0.0, 2.0])
    for name in ["mean", "gmean", "max", "min", "vote", "sharpen", "logits"]:
        np.testing.assert_allclose(run(name, p, w, "probs"), run(name, p[[0, 2]], w[[0, 2]], "probs"),
                                   atol=1e-9, err_msg=name)


def test_min_falls_back_to_uniform_when_every_class_is_vetoed():
    p = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    np.testing.assert_allclose(run("min", p, [1, 1], "probs"), [[0.5, 0.5]])


def test_get_merge():
    assert get_merge("soft") == get_merge("mean") == get_merge(" Mean ")
    assert get_merge("hard").name == "vote" and get_merge("geometric_mean").name == "gmean"
    assert get_merge("temperature(0.3)").temperature == 0.3
    assert get_merge("weighted(1, 0.5, 2)").view_weights.tolist() == [1.0, 0.5, 2.0]
    m = get_merge("max")
    assert get_merge(m) is m
    assert set(MERGES) == {"mean", "sum", "gmean", "logits", "max", "min", "vote", "sharpen", "weighted"}


@pytest.mark.parametrize("spec, words", [
    ("meen", ["unknown merge", "'meen'", "Did you mean 'mean'", "gmean", "vote", "sharpen"]),
    ("median", ["unknown merge", "Valid", "mean", "max"]),
    ("sharpen(0)", ["temperature", "> 0"]),
    ("sharpen(hot)", ["bad parameters", "sharpen(hot)"]),
    ("weighted", ["needs weights"]),
    ("weighted(1, -1)", [">= 0"]),
    ("mean(", ["cannot read merge", "mean"]),
])
def test_get_merge_errors(spec, words):
    with pytest.raises(ttakit.PolicyError) as e:
        get_merge(spec)
    for word in words:
        assert word in str(e.value), (word, str(e.value))
    with pytest.raises(ttakit.PolicyError, match="name or a Merge"):
        get_merge(3)


def test_weighted_merge_needs_one_weight_per_view():
    with pytest.raises(ttakit.PolicyError, match="2 weights but the policy has 3 distinct views"):
        run(WeightedMean([1, 2]), np.zeros((3, 1, 2)), np.ones(3), "logits")
