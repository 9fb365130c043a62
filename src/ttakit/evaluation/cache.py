"""Prediction cache: each distinct view's predictions over a dataset are
computed once and reused by every policy and merge evaluated on it."""

from __future__ import annotations

import numpy as np
import torch

from ..merge import Merge, get_merge
from ..policy import Policy
from ..tasks.classification import Classifier
from ..views import View


class PredictionCache:
    """Per-view class probabilities of one model on one dataset.

    ``PredictionCache(model, data, data_layout="NHWC")`` keeps the data and the
    model; :meth:`ensure` runs only the views not seen yet (all of them in
    one streamed pass); :meth:`predict` merges cached views for any policy.
    Comparing 50 policies costs one forward pass per distinct view.
    """

    def __init__(self, model, data, **classifier_kwargs):
        self.data = data
        self._clf = Classifier(model, "identity", **classifier_kwargs)
        self._probs: dict[View, np.ndarray] = {}
        self.forward_passes = 0
        self.seconds = 0.0

    @property
    def views(self) -> list[View]:
        return list(self._probs)

    def __contains__(self, view: View) -> bool:
        return view in self._probs

    def ensure(self, views) -> None:
        """Compute the views (or the views of a policy) that are not cached."""
        if isinstance(views, (Policy, str)):
            views = Policy.coerce(views).unique().views
        missing = [v for v in dict.fromkeys(views) if v not in self._probs]
        if not missing:
            return
        self._clf.policy = Policy(missing)
        res = self._clf.run(self.data, return_views=True)
        for v, p in zip(missing, res.view_probs):
            self._probs[v] = p
        self.forward_passes += res.forward_passes
        self.seconds += res.seconds

    def view_probs(self, view: View) -> np.ndarray:
        self.ensure([view])
        return self._probs[view]

    def stack(self, views) -> np.ndarray:
        self.ensure(views)
        return np.stack([self._probs[v] for v in views])

    def predict(self, policy, merge: str | Merge | None = None, weights=None) -> np.ndarray:
        """Merged probabilities ``(N, C)`` of ``policy`` from cached views.
        ``merge=None`` uses the policy's own aggregation (learned weights,
        temperature) when it has one, else the mean. ``weights`` (optional,
        ``(V,)`` or ``(V, N)``) replace the policy's weights of its distinct views."""
        from ..merge.learned import merge_from_aggregation

        full = Policy.coerce(policy)
        pol = full.unique()
        m = merge_from_aggregation(full.aggregation) if merge is None else get_merge(merge)
        outs = torch.from_numpy(self.stack(pol.views))
        w = torch.as_tensor(pol.weights if weights is None else weights, dtype=torch.float32)
        if w.ndim == 2:
            return _per_input_mean(outs, w, m)
        scores = m(outs, w, "probs")
        return (scores if m.normalised else scores / scores.sum(-1, keepdim=True)).numpy()


def _per_input_mean(outs: torch.Tensor, w: torch.Tensor, m: Merge) -> np.ndarray:
    if m.name not in ("mean", "sum"):
        raise ValueError("per-input weights are supported for the mean and sum merges")
    w = w.to(outs.dtype)[..., None]
    return ((outs * w).sum(0) / w.sum(0)).numpy()
