"""Merges of class probabilities (or per-pixel class maps): soft and hard
voting, geometric means, extremes, sharpening, extra per-view weights.

For every merge but ``sum`` the scores are probabilities; ``sum`` returns
the weighted sum of probabilities, as the Keras tutorial does, whose rows
sum to the total weight. Each is an accumulator over views (see
:mod:`ttakit.merge.base`), exactly equal to the stacked formula.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import PolicyError
from .base import Accumulator, Merge, TINY, normalise, to_log_probs, to_probs


class _WeightedSum(Accumulator):
    """sum_v w_v f(out_v) and sum_v w_v, for a transform ``f``."""

    def __init__(self, merge, weights, kind, dim, transform, divide: bool):
        super().__init__(merge, weights, kind, dim)
        self.transform = transform
        self.divide = divide
        self.total = None
        self.wsum = 0.0

    def add(self, i, out, mask=None):
        w = self._weight(i, out, mask)
        term = self.transform(out) * w
        self.total = term if self.total is None else self.total.add_(term)
        self.wsum = self.wsum + w

    def _require(self):
        if self.total is None:
            raise PolicyError("a merge needs at least one view's output")

    def result(self):
        self._require()
        if not self.divide:
            return self.total
        return self.total / (self.wsum.clamp_min(TINY) if torch.is_tensor(self.wsum) else self.wsum)


class Mean(Merge):
    """Soft voting: the weighted mean of the views' probabilities."""

    name = "mean"

    def accumulator(self, views, weights, kind, dim):
        return _WeightedSum(self, weights, kind, dim, lambda o: to_probs(o, kind, dim), divide=True)


class Sum(Merge):
    """The weighted sum of probabilities (the tutorial's merge). Same labels
    as ``mean``; rows sum to the total weight."""

    name = "sum"
    normalised = False

    def accumulator(self, views, weights, kind, dim):
        return _WeightedSum(self, weights, kind, dim, lambda o: to_probs(o, kind, dim), divide=False)


class _Softmaxed(_WeightedSum):
    def result(self):
        return torch.softmax(super().result(), dim=self.dim)


class GeometricMean(Merge):
    """The weighted geometric mean of probabilities, renormalised (computed
    in log space)."""

    name = "gmean"

    def accumulator(self, views, weights, kind, dim):
        return _Softmaxed(self, weights, kind, dim, lambda o: to_log_probs(o, kind, dim), divide=True)


class MeanLogits(Merge):
    """Softmax of the weighted mean of logits. For probability outputs the
    logits are ``log p`` (defined up to a constant per row), which makes this
    equal to ``gmean``."""

    name = "logits"

    def accumulator(self, views, weights, kind, dim):
        f = (lambda o: o.clone()) if kind == "logits" else (lambda o: to_log_probs(o, kind, dim))
        return _Softmaxed(self, weights, kind, dim, f, divide=True)


class _Extreme(Accumulator):
    """Per class, the largest (or smallest) probability over views of
    positive weight (and, with a mask, over the views that cover a position)."""

    def __init__(self, merge, weights, kind, dim, largest: bool):
        super().__init__(merge, weights, kind, dim)
        self.largest = largest
        self.value = None

    def add(self, i, out, mask=None):
        if self.weights[i] <= 0:
            return
        p = to_probs(out, self.kind, self.dim)
        if mask is not None:
            fill = -1.0 if self.largest else 2.0
            p = torch.where(mask.to(torch.bool), p, torch.full_like(p, fill))
        if self.value is None:
            self.value = p.clone()
        elif self.largest:
            torch.maximum(self.value, p, out=self.value)
        else:
            torch.minimum(self.value, p, out=self.value)

    def result(self):
        if self.value is None:
            raise PolicyError("max/min merges need at least one view of positive weight")
        v = self.value.clamp(0.0, 1.0)  # positions no view covered come back 0 (max) or 1 (min)
        if self.largest:
            return normalise(v, self.dim)
        # a row of zeros (every class vetoed by some view) falls back to uniform
        return normalise(v + (v.sum(self.dim, keepdim=True) <= TINY) * 1.0, self.dim)


class Max(Merge):
    """Per class, the largest probability over views, renormalised. Views of
    weight 0 are left out; other weights do not matter."""

    name = "max"

    def accumulator(self, views, weights, kind, dim):
        return _Extreme(self, weights, kind, dim, largest=True)


class Min(Merge):
    """Per class, the smallest probability over views, renormalised."""

    name = "min"

    def accumulator(self, views, weights, kind, dim):
        return _Extreme(self, weights, kind, dim, largest=False)


class _Votes(Accumulator):
    def __init__(self, merge, weights, kind, dim):
        super().__init__(merge, weights, kind, dim)
        self.votes = _WeightedSum(merge, weights, kind, dim, self._one_hot, divide=True)
        self.mean = _WeightedSum(merge, weights, kind, dim, lambda o: to_probs(o, kind, dim), divide=True)

    def _one_hot(self, out):
        top = out.argmax(self.dim, keepdim=True)
        return torch.zeros_like(out).scatter_(self.dim, top, 1.0)

    def add(self, i, out, mask=None):
        self.votes.add(i, out, mask)
        self.mean.add(i, out, mask)

    def result(self):
        return self.votes.result()

    def labels(self, scores):
        mean = self.mean.result()
        best = scores.max(self.dim, keepdim=True).values
        tied = scores >= best - 1e-9
        return torch.where(tied, mean, torch.full_like(mean, -1.0)).argmax(self.dim)


class Vote(Merge):
    """Hard voting: each view votes for its top class with its weight; the
    scores are vote shares. Ties go to the class with the higher mean
    probability."""

    name = "vote"

    def accumulator(self, views, weights, kind, dim):
        return _Votes(self, weights, kind, dim)


class Sharpen(Merge):
    """Temperature sharpening: each view's distribution raised to ``1/T``
    (softmax of ``logits / T``), renormalised, then the weighted mean.
    ``T < 1`` sharpens, ``T = 1`` is ``mean``."""

    name = "sharpen"

    def __init__(self, temperature: float = 0.5):
        try:
            t = float(temperature)
        except (TypeError, ValueError):
            raise PolicyError(f"sharpen temperature must be a number, got {temperature!r}") from None
        if not t > 0 or t == float("inf"):
            raise PolicyError(f"sharpen temperature must be a finite number > 0, got {temperature}")
        self.temperature = t

    def params(self):
        return {"temperature": self.temperature}

    def accumulator(self, views, weights, kind, dim):
        t = self.temperature
        return _WeightedSum(self, weights, kind, dim,
                            lambda o: torch.softmax(to_log_probs(o, kind, dim) / t, dim=dim), divide=True)


class WeightedMean(Merge):
    """The mean with extra per-view weights that multiply the policy's own.
    Give them in the order of the policy's distinct views
    (``policy.unique().views``), or as a mapping from view to weight."""

    name = "weighted"
    per_view = True

    def __init__(self, weights):
        if isinstance(weights, dict):
            self.keys = tuple(weights)
            values = [weights[k] for k in self.keys]
        else:
            self.keys = None
            values = weights
        try:
            t = torch.as_tensor(values, dtype=torch.float64).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise PolicyError(f"weighted merge: weights must be numbers, got {weights!r}") from None
        if t.numel() == 0 or (t < 0).any() or not torch.isfinite(t).all():
            raise PolicyError("weighted merge: weights must be finite and >= 0")
        if t.sum() <= 0:
            raise PolicyError("weighted merge: at least one weight must be positive")
        self.view_weights = t

    def params(self):
        if self.keys is None:
            return {"weights": self.view_weights.tolist()}
        return {"weights": [{"view": repr(k), "weight": w} for k, w in zip(self.keys, self.view_weights.tolist())]}

    def __repr__(self):
        return f"weighted({self.view_weights.tolist()})"

    def extra(self, views: Sequence) -> list[float]:
        if self.keys is not None:
            missing = [v for v in views if v not in self.keys]
            if missing:
                raise PolicyError(f"weighted merge has no weight for view {missing[0]!r}")
            return [float(self.view_weights[self.keys.index(v)]) for v in views]
        if self.view_weights.numel() != len(views):
            raise PolicyError(f"weighted merge has {self.view_weights.numel()} weights but the policy "
                              f"has {len(views)} distinct views")
        return self.view_weights.tolist()

    def accumulator(self, views, weights, kind, dim):
        w = [a * b for a, b in zip(weights, self.extra(views))]
        return _WeightedSum(self, w, kind, dim, lambda o: to_probs(o, kind, dim), divide=True)


BUILT_IN = (Mean, Sum, GeometricMean, MeanLogits, Max, Min, Vote, Sharpen, WeightedMean)
