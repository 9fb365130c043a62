"""The cross-fitted guard of dense tuning (:func:`ttakit.tuning.dense.greedy_dense`)
on synthetic per-image scores: a view that truly helps is kept, views that
do nothing or hurt are refused, and the cross-fitted evidence equals a
naive loop over folds (search on the other folds, score each prefix on the
fold's images)."""

from __future__ import annotations

import numpy as np
import pytest

from ttakit.errors import InputError
from ttakit.policy import Policy
from ttakit.tuning.candidates import candidate_views
from ttakit.tuning.dense import crossfit, greedy_dense
from ttakit.tuning.guard import crossfit_folds

N = 60
MERGES = (("mean", {}), ("max", {}))
CANDIDATES = "hflip, vflip, rot90"


def synthetic(effects: dict, seed: int = 0, noise: float = 0.05):
    """Each image's score under a (views, merge): a base score plus each added
    view's per-image effect (mean ``effects[name]``, image-to-image noise),
    the max merge a little worse than the mean. Also counts the calls."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.4, 0.8, N)
    per_view = {name: mean + noise * rng.standard_normal(N) for name, mean in effects.items()}
    calls = []

    def run(policy, name, options):
        calls.append((policy.spec, name))
        added = [per_view[repr(v)] for v in policy.views[1:]]
        if not added:
            return base.copy()
        return base + np.mean(added, 0) - (0.01 if name == "max" else 0.0)

    def score(res, idx):  # a corpus metric: not a plain mean of the per-image scores
        return float(np.median(res[idx]))

    def per_image(res, idx):
        return res[idx]

    return run, score, per_image, calls


def test_a_view_that_truly_helps_is_kept():
    run, score, per_image, _ = synthetic({"hflip": 0.03, "vflip": -0.05, "rot90": -0.05})
    res = greedy_dense(run, score, N, CANDIDATES, MERGES, ("mean", {}), budget=2, per_image=per_image)
    assert not res.fell_back and res.policy.spec == "identity + hflip" and res.merge == ("mean", {})
    assert res.guard_score > res.guard_baseline and res.length == 2 and "passed" in res.reason
    assert res.fit_score > res.fit_baseline


@pytest.mark.parametrize("effects", [{"hflip": 0.0, "vflip": 0.0, "rot90": 0.0},
                                     {"hflip": -0.02, "vflip": -0.05, "rot90": -0.03}])
def test_views_that_do_nothing_or_hurt_fall_back(effects):
    run, score, per_image, _ = synthetic(effects, seed=1, noise=0.1)
    res = greedy_dense(run, score, N, CANDIDATES, MERGES, ("mean", {}), budget=2, per_image=per_image)
    assert res.fell_back and res.policy.is_identity and res.merge == ("mean", {}) and res.length == 1
    assert res.guard_score == res.guard_baseline


def test_the_crossfitted_evidence_equals_a_naive_loop_over_folds():
    run, score, per_image, _ = synthetic({"hflip": 0.01, "vflip": 0.0, "rot90": -0.01}, seed=2, noise=0.1)
    views = candidate_views(CANDIDATES)
    fold = crossfit_folds(N, 5, 0)
    paths, got = crossfit(lambda vs, m: run(Policy(list(vs)), m[0], m[1]), score, per_image, views, MERGES,
                          ("mean", {}), 2, fold)

    for f in range(5):
        fit, held = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        # the greedy search written out: at each step the (view, merge) with the best median on the fit images
        chosen, merge = [views[0]], ("mean", {})
        best = score(run(Policy(chosen), "mean", {}), fit)
        prefixes = [(list(chosen), merge)]
        for _ in range(2):
            trials = [(score(run(Policy(chosen + [v]), m, o), fit), v, (m, o)) for v in views if v not in chosen
                      for m, o in MERGES]
            s, v, m = max(trials, key=lambda t: t[0])
            if s <= best + 1e-12:
                break
            best, chosen, merge = s, chosen + [v], m
            prefixes.append((list(chosen), merge))
        assert [(p["views"], p["merge"]) for p in paths[f]] == prefixes
        for length in range(1, 4):
            vs, m = prefixes[min(length, len(prefixes)) - 1]
            np.testing.assert_array_equal(got[length - 1, held], run(Policy(vs), m[0], m[1])[held])


def test_each_trial_runs_once_and_too_few_images_fall_back():
    run, score, per_image, calls = synthetic({"hflip": 0.03, "vflip": 0.0, "rot90": 0.0})
    greedy_dense(run, score, N, CANDIDATES, MERGES, ("mean", {}), budget=2, per_image=per_image)
    assert len(calls) == len(set(calls))  # memoised over folds and the final search
    res = greedy_dense(run, score, 8, CANDIDATES, MERGES, ("mean", {}), budget=2, per_image=per_image)
    assert res.fell_back and "too few for 5-fold" in res.reason
    with pytest.raises(InputError, match="guard_fraction is gone"):
        greedy_dense(run, score, N, CANDIDATES, MERGES, guard_fraction=0.3)
    with pytest.raises(InputError, match="guard_alpha"):
        greedy_dense(run, score, N, CANDIDATES, MERGES, guard_alpha=0)
