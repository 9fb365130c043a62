"""A merge with learned weights (Shanmugam et al., "Better Aggregation in
Test-Time Augmentation", ICCV 2021), fitted by :mod:`ttakit.tuning`.

The views' log-probabilities are combined with weights per view (``(V,)``)
or per view and class (``(V, C)``), divided by a temperature, and turned
into probabilities with a softmax::

    p = softmax( sum_v W[v] * log p_v / T )

With per-view weights summing to 1 and ``T = 1`` this is the weighted
geometric mean. The weights replace the policy's multiplicities; they are
aligned with the policy's distinct views (``policy.unique().views``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import PolicyError
from . import Merge, to_log_probs


class LearnedMerge(Merge):
    name = "learned"

    def __init__(self, weights, temperature: float = 1.0):
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim not in (1, 2) or w.size == 0 or not np.isfinite(w).all():
            raise PolicyError(f"learned weights must be a finite (V,) or (V, C) array, got shape {w.shape}")
        if not temperature > 0:
            raise PolicyError(f"temperature must be > 0, got {temperature}")
        self.weights = w
        self.temperature = float(temperature)

    @property
    def per_class(self) -> bool:
        return self.weights.ndim == 2

    def __repr__(self) -> str:
        kind = "per view and class" if self.per_class else "per view"
        return f"learned({kind}, {self.weights.shape[0]} views, T={self.temperature:.4g})"

    def merge(self, outputs, weights, kind):
        if self.weights.shape[0] != outputs.shape[0]:
            raise PolicyError(f"learned aggregation has weights for {self.weights.shape[0]} views, "
                              f"the policy runs {outputs.shape[0]} distinct views")
        if self.per_class and self.weights.shape[1] != outputs.shape[-1]:
            raise PolicyError(f"learned aggregation has weights for {self.weights.shape[1]} classes, "
                              f"the model returns {outputs.shape[-1]}")
        w = torch.as_tensor(self.weights, dtype=outputs.dtype, device=outputs.device)
        if not self.per_class:
            w = w[:, None]
        z = (to_log_probs(outputs, kind) * w[:, None, :]).sum(0)
        return torch.softmax(z / self.temperature, dim=-1)

    def to_dict(self) -> dict:
        return {"merge": "learned", "weights": self.weights.tolist(), "temperature": self.temperature}

    @classmethod
    def from_dict(cls, d: dict) -> "LearnedMerge":
        try:
            return cls(d["weights"], d.get("temperature", 1.0))
        except KeyError:
            raise PolicyError("a learned aggregation needs 'weights'") from None


class TemperatureScaled(Merge):
    """Any merge followed by temperature scaling: ``softmax(log p / T)``."""

    name = "temperature_scaled"

    def __init__(self, base: Merge, temperature: float):
        if not temperature > 0:
            raise PolicyError(f"temperature must be > 0, got {temperature}")
        self.base = base
        self.temperature = float(temperature)

    def __repr__(self) -> str:
        return f"{self.base!r} (T={self.temperature:.4g})"

    def merge(self, outputs, weights, kind):
        scores = self.base.merge(outputs, weights, kind)
        if not self.base.normalised:
            scores = scores / scores.sum(-1, keepdim=True)
        return torch.softmax(torch.log(scores.clamp_min(1e-12)) / self.temperature, dim=-1)

    def labels(self, scores, outputs, weights, kind):
        return self.base.labels(scores, outputs, weights, kind)

    def to_dict(self) -> dict:
        return {"merge": self.base.name, "temperature": self.temperature}


def merge_from_aggregation(aggregation: dict | None) -> Merge:
    """The merge a policy file's ``aggregation`` entry describes (mean when none)."""
    from . import get_merge

    if not aggregation:
        return get_merge("mean")
    if not isinstance(aggregation, dict):
        raise PolicyError(f"a policy's aggregation must be a mapping, got {aggregation!r}")
    name = aggregation.get("merge", "mean")
    if name == "learned":
        return LearnedMerge.from_dict(aggregation)
    base = get_merge(name)
    t = aggregation.get("temperature")
    return TemperatureScaled(base, float(t)) if t not in (None, 1, 1.0) else base
