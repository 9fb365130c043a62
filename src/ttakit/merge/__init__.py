"""Merges: reduce per-view predictions ``(V, N, C)`` to one ``(N, C)``.

Every merge takes the per-view model outputs, the view weights (a policy's
multiplicities, so a deduplicated policy merges exactly like the full one)
and whether the outputs are ``"probs"`` or ``"logits"``, and returns scores
``(N, C)``. For every merge but ``sum`` the scores are probabilities (rows
sum to 1); ``sum`` returns the weighted sum of probabilities, as the Keras
tutorial does, whose rows sum to the total weight.
"""

from __future__ import annotations

import abc

import re
from typing import ClassVar

import torch

from ..errors import PolicyError, did_you_mean

KINDS = ("probs", "logits")
_TINY = 1e-12


def to_probs(outputs: torch.Tensor, kind: str) -> torch.Tensor:
    return torch.softmax(outputs, dim=-1) if kind == "logits" else outputs


def to_log_probs(outputs: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "logits":
        return torch.log_softmax(outputs, dim=-1)
    return torch.log(outputs.clamp_min(_TINY))


def _w(weights: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Weights shaped to broadcast over (V, N, C)."""
    w = weights.to(device=outputs.device, dtype=outputs.dtype)
    return w.reshape(-1, *([1] * (outputs.dim() - 1)))


def _normalise(scores: torch.Tensor) -> torch.Tensor:
    return scores / scores.sum(dim=-1, keepdim=True).clamp_min(_TINY)


class Merge(abc.ABC):
    """Base class. Subclasses implement :meth:`merge`."""

    name: ClassVar[str] = "merge"
    #: True when the scores are probabilities (rows sum to 1)
    normalised: ClassVar[bool] = True

    def __call__(self, outputs: torch.Tensor, weights: torch.Tensor, kind: str) -> torch.Tensor:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if outputs.shape[0] != weights.shape[0]:
            raise ValueError(f"{outputs.shape[0]} views of outputs but {weights.shape[0]} weights")
        return self.merge(outputs, weights, kind)

    @abc.abstractmethod
    def merge(self, outputs, weights, kind):
        """Scores ``(N, C)`` from outputs ``(V, N, C)``, weights ``(V,)`` and the output kind."""

    def labels(self, scores: torch.Tensor, outputs: torch.Tensor, weights: torch.Tensor, kind: str) -> torch.Tensor:
        return scores.argmax(dim=-1)

    def __repr__(self) -> str:
        return self.name

    def __eq__(self, other):
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self):
        return hash(repr(self))


class Mean(Merge):
    """Soft voting: the weighted mean of the views' probabilities."""

    name = "mean"

    def merge(self, outputs, weights, kind):
        w = _w(weights, outputs)
        return (to_probs(outputs, kind) * w).sum(0) / w.sum()


class Sum(Merge):
    """The weighted sum of probabilities (the tutorial's merge). Same labels
    as ``mean``; rows sum to the total weight."""

    name = "sum"
    normalised = False

    def merge(self, outputs, weights, kind):
        return (to_probs(outputs, kind) * _w(weights, outputs)).sum(0)


class GeometricMean(Merge):
    """The weighted geometric mean of probabilities, renormalised (computed
    in log space)."""

    name = "gmean"

    def merge(self, outputs, weights, kind):
        w = _w(weights, outputs)
        return torch.softmax((to_log_probs(outputs, kind) * w).sum(0) / w.sum(), dim=-1)


class MeanLogits(Merge):
    """Softmax of the weighted mean of logits. For probability outputs the
    logits are ``log p`` (defined up to a constant per row), which makes this
    equal to ``gmean``."""

    name = "logits"

    def merge(self, outputs, weights, kind):
        w = _w(weights, outputs)
        z = outputs if kind == "logits" else to_log_probs(outputs, kind)
        return torch.softmax((z * w).sum(0) / w.sum(), dim=-1)


class Max(Merge):
    """Per class, the largest probability over views, renormalised. Views of
    weight 0 are left out; other weights do not matter."""

    name = "max"

    def merge(self, outputs, weights, kind):
        p = to_probs(outputs, kind)[weights.to(outputs.device) > 0]
        return _normalise(p.max(0).values)


class Min(Merge):
    """Per class, the smallest probability over views, renormalised."""

    name = "min"

    def merge(self, outputs, weights, kind):
        p = to_probs(outputs, kind)[weights.to(outputs.device) > 0]
        scores = p.min(0).values
        # a row of zeros (every class vetoed by some view) falls back to uniform
        return _normalise(scores + (scores.sum(-1, keepdim=True) <= _TINY) * 1.0)


class Vote(Merge):
    """Hard voting: each view votes for its top class with its weight; the
    scores are vote shares. Ties go to the class with the higher mean
    probability."""

    name = "vote"

    def merge(self, outputs, weights, kind):
        w = _w(weights, outputs)
        top = outputs.argmax(-1)
        onehot = torch.nn.functional.one_hot(top, outputs.shape[-1]).to(outputs.dtype)
        return (onehot * w).sum(0) / w.sum()

    def labels(self, scores, outputs, weights, kind):
        mean = Mean().merge(outputs, weights, kind)
        best = scores.max(-1, keepdim=True).values
        tied = scores >= best - 1e-9
        return torch.where(tied, mean, torch.full_like(mean, -1.0)).argmax(-1)


class Sharpen(Merge):
    """Temperature sharpening: each view's distribution raised to ``1/T``
    (softmax of ``logits / T``), renormalised, then the weighted mean.
    ``T < 1`` sharpens, ``T = 1`` is ``mean``."""

    name = "sharpen"

    def __init__(self, temperature: float = 0.5):
        if not temperature > 0:
            raise PolicyError(f"sharpen temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def __repr__(self):
        return f"sharpen({self.temperature!r})"

    def merge(self, outputs, weights, kind):
        w = _w(weights, outputs)
        p = torch.softmax(to_log_probs(outputs, kind) / self.temperature, dim=-1)
        return (p * w).sum(0) / w.sum()


class WeightedMean(Merge):
    """The mean with extra per-view weights, aligned with the distinct views
    of the policy (``policy.unique().views``); they multiply the policy's own
    weights."""

    name = "weighted"

    def __init__(self, weights):
        self.view_weights = torch.as_tensor(weights, dtype=torch.float64).flatten()
        if (self.view_weights < 0).any() or not torch.isfinite(self.view_weights).all():
            raise PolicyError("weighted merge: weights must be finite and >= 0")
        if self.view_weights.sum() <= 0:
            raise PolicyError("weighted merge: at least one weight must be positive")

    def __repr__(self):
        return f"weighted({self.view_weights.tolist()})"

    def merge(self, outputs, weights, kind):
        if self.view_weights.numel() != outputs.shape[0]:
            raise PolicyError(f"weighted merge has {self.view_weights.numel()} weights but the policy "
                              f"has {outputs.shape[0]} distinct views")
        return Mean().merge(outputs, weights.to(torch.float64) * self.view_weights, kind)


MERGES: dict[str, type[Merge]] = {
    cls.name: cls for cls in (Mean, Sum, GeometricMean, MeanLogits, Max, Min, Vote, Sharpen, WeightedMean)
}
ALIASES = {"soft": "mean", "average": "mean", "geometric_mean": "gmean", "mean_logits": "logits",
           "hard": "vote", "temperature": "sharpen"}


def get_merge(merge: "str | Merge") -> Merge:
    """A merge from its name (``"mean"``, ``"sharpen(0.3)"``...) or itself."""
    if isinstance(merge, Merge):
        return merge
    if not isinstance(merge, str):
        raise PolicyError(f"merge must be a name or a Merge, got {type(merge).__name__}")
    m = re.fullmatch(r"\s*([A-Za-z_]+)\s*(?:\((.*)\))?\s*", merge)
    if not m:
        raise PolicyError(f"cannot read merge {merge!r}; valid: {', '.join(MERGES)}")
    name, arg = m.group(1).lower(), m.group(2)
    name = ALIASES.get(name, name)
    if name not in MERGES:
        raise PolicyError(f"unknown merge {m.group(1)!r}.{did_you_mean(name, MERGES)} Valid: {', '.join(MERGES)}")
    cls = MERGES[name]
    try:
        if cls is WeightedMean:
            if not arg:
                raise PolicyError("the weighted merge needs weights: weighted(1, 0.5, ...) or WeightedMean([...])")
            return cls([float(v) for v in arg.strip("[] ").split(",")])
        if arg:
            value = arg.split("=")[-1]
            return cls(float(value))
        return cls()
    except (TypeError, ValueError) as e:
        raise PolicyError(f"bad parameters for merge {merge!r}: {e}") from None


__all__ = ["Merge", "Mean", "Sum", "GeometricMean", "MeanLogits", "Max", "Min", "Vote", "Sharpen",
           "WeightedMean", "MERGES", "get_merge", "to_probs", "to_log_probs"]
