"""The fast paths of row views keep their meaning: writing a view into a
slice of a batch (``apply_into``) gives what ``apply`` gives, the hash of a
chunk is reused across views but never for changed rows, and a
classification run without spread statistics merges the same probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttakit import engine
from ttakit.inputs.rows import RowInputs
from ttakit.merge import Mean
from ttakit.models import CallableModel
from ttakit.tasks.classification import ClassificationTask
from ttakit.views.rows import FAMILIES, FeatureStats, copies, row_patterns


def _mixed(n=500, seed=0):
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(size=n), rng.integers(0, 9, n), rng.integers(0, 2, n), rng.normal(5, 2, n),
                         rng.integers(0, 4, n)]).astype(float)
    return x, FeatureStats(roles={4: "ignore"}).fit(x[: n // 2])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_apply_into_a_batch_slice_equals_apply(name, dtype):
    x, stats = _mixed()
    t = torch.from_numpy(x).to(dtype)
    views = copies(name, stats, 0.3, 3, first_seed=4)
    batch = torch.full((3 * len(t), t.shape[1]), 7.0, dtype=dtype)
    for j, v in enumerate(views):
        v.apply_into(t, batch[j * len(t):(j + 1) * len(t)])
    for j, v in enumerate(views):
        expected = v.apply(t.clone())  # a fresh tensor: no cached hash
        assert torch.equal(batch[j * len(t):(j + 1) * len(t)], expected)
        assert torch.equal(v.apply(t), expected)
    ignore = torch.from_numpy(x[:, 4]).to(dtype)
    assert all(torch.equal(v.apply(t)[:, 4], ignore) for v in views)  # "ignore" columns never change


def test_the_cached_hash_follows_changes_to_the_rows():
    x, stats = _mixed()
    t = torch.from_numpy(x.copy())
    view = copies("noise", stats, 0.5, 1)[0]
    before = view.apply(t)
    t[:, 0] += 1.0  # in place: same tensor object, new values
    after = view.apply(t)
    assert torch.equal(after, view.apply(t.clone()))
    assert not torch.equal(row_patterns(t), row_patterns(torch.from_numpy(x)))
    assert not torch.equal(before[:, 0] + 1.0, after[:, 0])  # new rows, new noise draws


def test_classification_without_spread_statistics_merges_the_same_probabilities():
    x, stats = _mixed(300, seed=1)
    w = np.random.default_rng(2).normal(size=(x.shape[1], 3))

    def model(a):
        z = a @ w
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    views = copies("jitter", stats, 0.2, 5) + copies("dropout", stats, 0.2, 3, first_seed=100)
    weights = [1 / 5] * 5 + [1 / 3] * 3
    results = {}
    for spread in (True, False):
        for batch in (64, 4096):  # one view per forward pass, and all views in one
            task = ClassificationTask(Mean(), output="probs", spread=spread)
            results[spread, batch] = engine.run(task, CallableModel(model), x, views, weights,
                                                inputs=RowInputs(x.shape[1], chunk_rows=64), batch_size=batch)
    ref = results[True, 64]
    for key, res in results.items():
        np.testing.assert_allclose(res.probs, ref.probs, atol=1e-6, err_msg=str(key))
    assert np.isnan(results[False, 4096].spread).all() and np.isfinite(ref.spread).all()
    np.testing.assert_allclose(results[True, 4096].spread, ref.spread, atol=1e-6)
