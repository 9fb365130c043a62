"""Prediction cache: each distinct view's predictions over a dataset are
computed once and reused by every policy and merge evaluated on it (what
evaluation and tuning run on)."""

from __future__ import annotations

import threading

import numpy as np
import torch

from ..adapt import Memo
from ..errors import InputError, PolicyError
from ..merge import Mean, Merge, get_merge, normalise
from ..policy import Policy
from ..views import View
from .classification import Classifier


class PredictionCache:
    """Per-view class probabilities of one model on one dataset.

    ``PredictionCache(model, data, data_layout="NHWC")`` keeps the data and the
    model; :meth:`ensure` runs only the views not seen yet (all of them in
    one streamed pass); :meth:`predict` merges cached views for any policy.
    Comparing 50 policies costs one forward pass per distinct view.
    """

    def __init__(self, model, data, **classifier_kwargs):
        self.data = data
        if classifier_kwargs.get("adapt") == "memo" or isinstance(classifier_kwargs.get("adapt"), Memo):
            raise InputError("adapt='memo' adapts each input over the policy's own views, so its predictions "
                             "cannot be cached view by view (tune, evaluate): run Classifier(model, policy, "
                             "adapt='memo') on the data instead")
        self._clf = Classifier(model, "identity", **classifier_kwargs)
        #: how the model's outputs were read ("probs"/"logits"), once a view has run
        self.output_kind: str | None = None
        self._lock = threading.Lock()
        self._probs: dict[View, np.ndarray] = {}
        self.forward_passes = 0
        self.seconds = 0.0

    @property
    def classifier_params(self) -> dict:
        """The options the cached predictions were made with."""
        return self._clf.get_params()

    @property
    def views(self) -> list[View]:
        return list(self._probs)

    def __contains__(self, view: View) -> bool:
        return view in self._probs

    def ensure(self, views) -> None:
        """Compute the views (or the views of a policy) that are not cached."""
        if isinstance(views, (Policy, str)):
            views = Policy.coerce(views).unique().views
        with self._lock:
            missing = [v for v in dict.fromkeys(views) if v not in self._probs]
            if not missing:
                return
            res = self._clf.set_params(policy=Policy(missing)).run(self.data, return_views=True)
            for v, p in zip(missing, res.view_probs):
                self._probs[v] = p
            self.forward_passes += res.forward_passes
            self.output_kind = res.output_kind
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
        full = Policy.coerce(policy)
        pol = full.unique()
        m = (full.merge or Mean()) if merge is None else get_merge(merge)
        outs = torch.from_numpy(self.stack(pol.views))
        if weights is None:
            return _as_probs(m(outs, pol.weights, "probs", pol.views), m)
        w = torch.as_tensor(weights, dtype=torch.float32)
        if w.ndim == 1:
            return _as_probs(m(outs, w, "probs", pol.views), m)
        if w.shape != outs.shape[:2]:
            raise PolicyError(f"per-input weights must have shape (views, inputs) = {tuple(outs.shape[:2])}, "
                              f"got {tuple(w.shape)}")
        # per-input weights: each view's output counts with its own weight per input
        acc = m.start(list(pol.views), [1.0] * len(pol.views), "probs")
        for i in range(len(pol.views)):
            acc.add(i, outs[i], w[i][:, None])
        return _as_probs(acc.result(), m)


def _as_probs(scores: torch.Tensor, m: Merge) -> np.ndarray:
    return (scores if m.normalised else normalise(scores)).numpy()
