"""Merges as graph operations: a module taking the views' stacked model
outputs ``(V, N, C)`` to the merged probabilities ``(N, C)`` that
``Classifier.predict_proba`` returns for the same merge, weights and output
kind (``"probs"`` or ``"logits"``, fixed when the graph is built).

Exported: ``mean``, ``sum``, ``gmean``, ``logits``, ``sharpen(T)``,
``weighted(...)``, ``learned`` (per view or per view and class), ``max``,
``min``, and any of these with a temperature. ``vote`` (its ties are broken
by another statistic) and merges a user registered are refused with a
:class:`~ttakit.errors.PolicyError` naming them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import PolicyError
from ..merge import (GeometricMean, LearnedMerge, Max, Mean, MeanLogits, Merge, Min, Sharpen, Sum,
                     TemperatureScaled, WeightedMean)

# 1e-12 below: the floor of ttakit.merge.base.TINY, written out (TorchScript reads no float globals)


def _probs(o: torch.Tensor, logits: bool) -> torch.Tensor:
    return torch.softmax(o, dim=-1) if logits else o


def _log_probs(o: torch.Tensor, logits: bool) -> torch.Tensor:
    return torch.log_softmax(o, dim=-1) if logits else torch.log(torch.clamp(o, min=1e-12))


def _normalise(s: torch.Tensor) -> torch.Tensor:
    return s / torch.clamp(s.sum(-1, keepdim=True), min=1e-12)


def _weights(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float32).reshape(-1, 1, 1)


def _total(weights: Sequence[float]) -> float:
    total = float(sum(weights))
    if not total > 0:
        raise PolicyError("the views' weights in the merge sum to 0: the merged probabilities would be undefined")
    return total


class WeightedProbs(nn.Module):
    """``sum_v w_v f(out_v) / sum_v w_v`` with ``f`` the probabilities
    (``mean``, ``weighted``; ``sum`` renormalised instead) or, with a ``sharpen``
    temperature, ``softmax(log p / T)``."""

    def __init__(self, weights: Sequence[float], logits: bool, sharpen: float = 0.0, renormalise: bool = False):
        super().__init__()
        self.register_buffer("w", _weights(weights))
        self.total = _total(weights)
        self.logits = bool(logits)
        self.sharpen = float(sharpen)
        self.renormalise = bool(renormalise)

    def forward(self, outs: torch.Tensor) -> torch.Tensor:
        if self.sharpen > 0:
            p = torch.softmax(_log_probs(outs, self.logits) / self.sharpen, dim=-1)
        else:
            p = _probs(outs, self.logits)
        s = (p * self.w).sum(0)
        return _normalise(s) if self.renormalise else s / self.total


class LogLinear(nn.Module):
    """``softmax(sum_v W_v g(out_v) / d)``: ``g`` the log-probabilities (or
    the raw logits for ``logits`` on logit outputs); ``W_v`` one weight per
    view or per view and class. ``gmean``/``logits``: ``d`` the total weight;
    ``learned``: ``d`` its temperature."""

    def __init__(self, weights: np.ndarray, divisor: float, logits: bool, raw: bool):
        super().__init__()
        self.register_buffer("w", torch.as_tensor(np.asarray(weights), dtype=torch.float32))
        self.divisor = float(divisor)
        self.logits = bool(logits)
        self.raw = bool(raw)

    def forward(self, outs: torch.Tensor) -> torch.Tensor:
        g = outs if self.raw else _log_probs(outs, self.logits)
        return torch.softmax((g * self.w).sum(0) / self.divisor, dim=-1)


class Extreme(nn.Module):
    """Per class, the largest (``max``) or smallest (``min``) probability
    over the views of positive weight, renormalised (``min``: uniform where
    every class was vetoed)."""

    def __init__(self, keep: Sequence[int], largest: bool, logits: bool):
        super().__init__()
        self.register_buffer("keep", torch.tensor(list(keep), dtype=torch.int64))
        self.largest = bool(largest)
        self.logits = bool(logits)

    def forward(self, outs: torch.Tensor) -> torch.Tensor:
        p = _probs(outs.index_select(0, self.keep), self.logits)
        if self.largest:
            return _normalise(torch.clamp(p.amax(0), 0.0, 1.0))
        v = torch.clamp(p.amin(0), 0.0, 1.0)
        return _normalise(v + (v.sum(-1, keepdim=True) <= 1e-12).to(v.dtype))


class Temperature(nn.Module):
    """``softmax(log p / T)`` of another merge's probabilities."""

    def __init__(self, base: nn.Module, temperature: float):
        super().__init__()
        self.base = base
        self.temperature = float(temperature)

    def forward(self, outs: torch.Tensor) -> torch.Tensor:
        p = self.base(outs)
        return torch.softmax(torch.log(torch.clamp(p, min=1e-12)) / self.temperature, dim=-1)


def merge_module(merge: Merge, views: Sequence, weights: Sequence[float], kind: str) -> nn.Module:
    """The module merging the outputs of ``views`` (with the policy's
    ``weights``) as ``merge`` does, for model outputs of ``kind``; its result
    is already normalised (what ``predict_proba`` returns)."""
    logits = kind == "logits"
    weights = [float(w) for w in weights]
    if isinstance(merge, TemperatureScaled):
        # a base whose scores are not normalised (sum) is renormalised first: merge_module already does
        return Temperature(merge_module(merge.base, views, weights, kind), merge.temperature)
    if type(merge) in (Mean, Sum):
        return WeightedProbs(weights, logits, renormalise=type(merge) is Sum)
    if type(merge) is WeightedMean:
        return WeightedProbs([a * b for a, b in zip(weights, merge.extra(views))], logits)
    if type(merge) is Sharpen:
        return WeightedProbs(weights, logits, sharpen=merge.temperature)
    if type(merge) in (GeometricMean, MeanLogits):
        raw = type(merge) is MeanLogits and logits
        return LogLinear(np.asarray(weights).reshape(-1, 1, 1), _total(weights), logits, raw)
    if type(merge) is LearnedMerge:
        rows = merge.weights_for(views)
        w = np.stack([np.asarray(r, dtype=np.float64) for r in rows])
        return LogLinear(w.reshape(len(rows), 1, -1), merge.temperature, logits, raw=False)
    if type(merge) in (Max, Min):
        keep = [i for i, w in enumerate(weights) if w > 0]
        if not keep:
            raise PolicyError("max/min merges need at least one view of positive weight")
        return Extreme(keep, type(merge) is Max, logits)
    raise PolicyError(f"cannot export merge {merge!r}: exported merges are mean, sum, gmean, logits, sharpen, "
                      "weighted, learned, max and min, with or without a temperature")
