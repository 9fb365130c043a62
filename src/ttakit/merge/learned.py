"""Calibrated merges: learned weights (Shanmugam et al., "Better
Aggregation in Test-Time Augmentation", ICCV 2021), fitted by
:mod:`ttakit.tuning`, and temperature scaling of any merge.

:class:`LearnedMerge` combines the views' log-probabilities with weights per
view (``(V,)``) or per view and class (``(V, C)``), divides by a temperature
and takes a softmax::

    p = softmax( sum_v W[v] * log p_v / T )

With per-view weights summing to 1 and ``T = 1`` this is the weighted
geometric mean. The weights replace the policy's multiplicities and are
keyed by view: the merge knows which view each row of weights belongs to,
saves them that way, and refuses a policy that runs a view it has no
weights for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import PolicyError
from .base import Accumulator, Merge, TINY, normalise, to_log_probs


def _temperature(t) -> float:
    try:
        t = float(t)
    except (TypeError, ValueError):
        raise PolicyError(f"temperature must be a number, got {t!r}") from None
    if not t > 0 or not np.isfinite(t):
        raise PolicyError(f"temperature must be a finite number > 0, got {t}")
    return t


class _Learned(Accumulator):
    def __init__(self, merge: "LearnedMerge", rows: list[np.ndarray], kind, dim):
        super().__init__(merge, [1.0] * len(rows), kind, dim)
        self.rows = rows
        self.z = None
        self.cover = None
        self.total = float(sum(np.mean(r) for r in rows))

    def _shaped(self, row: np.ndarray, out: torch.Tensor) -> torch.Tensor | float:
        if row.ndim == 0:
            return float(row)
        w = torch.as_tensor(row, dtype=out.dtype, device=out.device)
        if w.numel() != out.shape[self.dim]:
            raise PolicyError(f"learned aggregation has weights for {w.numel()} classes, "
                              f"the model returns {out.shape[self.dim]}")
        shape = [1] * out.dim()
        shape[self.dim] = -1
        return w.reshape(shape)

    def add(self, i, out, mask=None):
        w = self._shaped(self.rows[i], out)
        term = to_log_probs(out, self.kind, self.dim) * w
        if mask is not None:
            m = mask.to(out.dtype)
            term = term * m
            c = m * float(np.mean(self.rows[i]))
            self.cover = c if self.cover is None else self.cover + c
        self.z = term if self.z is None else self.z.add_(term)

    def result(self):
        if self.z is None:
            raise PolicyError("a merge needs at least one view's output")
        z = self.z
        if self.cover is not None:  # positions some views did not see: rescale to the full weight
            z = z * (self.total / self.cover.clamp_min(TINY))
        return torch.softmax(z / self.merge.temperature, dim=self.dim)


class LearnedMerge(Merge):
    """Learned per-view (``(V,)``) or per-view-per-class (``(V, C)``) weights
    on log-probabilities, and a temperature. ``views`` names the view each
    row of ``weights`` belongs to; without it the rows are matched to the
    run's views by position."""

    name = "learned"
    per_view = True

    def __init__(self, weights, temperature: float = 1.0, views: Sequence | None = None):
        try:
            w = np.asarray(weights, dtype=np.float64)
        except (TypeError, ValueError):
            raise PolicyError("learned weights must be numbers") from None
        if w.ndim not in (1, 2) or w.size == 0 or not np.isfinite(w).all():
            raise PolicyError(f"learned weights must be a finite (V,) or (V, C) array, got shape {w.shape}")
        if views is not None:
            views = tuple(views)
            if len(views) != w.shape[0]:
                raise PolicyError(f"learned aggregation: {w.shape[0]} rows of weights for {len(views)} views")
            if len(set(views)) != len(views):
                raise PolicyError("learned aggregation: a view appears twice")
        self.weights = w
        self.temperature = _temperature(temperature)
        self.views = views

    @property
    def per_class(self) -> bool:
        return self.weights.ndim == 2

    def __repr__(self) -> str:
        kind = "per view and class" if self.per_class else "per view"
        return f"learned({kind}, {self.weights.shape[0]} views, T={self.temperature:.4g})"

    def weights_for(self, views: Sequence) -> list[np.ndarray]:
        """The rows of weights for ``views``, in that order."""
        if self.views is None:
            if len(views) != self.weights.shape[0]:
                raise PolicyError(f"learned aggregation has weights for {self.weights.shape[0]} views, "
                                  f"the policy runs {len(views)} distinct views")
            return [self.weights[i] for i in range(len(views))]
        index = {v: i for i, v in enumerate(self.views)}
        missing = [v for v in views if v not in index]
        if missing:
            raise PolicyError(f"learned aggregation has no weights for view {missing[0]!r} "
                              f"(it has: {', '.join(map(repr, self.views))})")
        return [self.weights[index[v]] for v in views]

    def accumulator(self, views, weights, kind, dim):
        return _Learned(self, self.weights_for(views), kind, dim)

    def params(self):
        return {"temperature": self.temperature, "weights": self._weights_entries()}

    def _weights_entries(self):
        if self.views is None:
            return self.weights.tolist()
        return [{"view": v.to_dict() if hasattr(v, "to_dict") else repr(v), "weight": row.tolist()}
                for v, row in zip(self.views, self.weights)]

    @classmethod
    def from_dict(cls, d: dict, view_from_dict=None) -> "LearnedMerge":
        if "weights" not in d:
            raise PolicyError("a learned aggregation needs 'weights'")
        entries = d["weights"]
        t = d.get("temperature", 1.0)
        if isinstance(entries, list) and entries and isinstance(entries[0], dict):
            if view_from_dict is None:
                raise PolicyError("learned weights keyed by view need a view reader")
            try:
                views = [view_from_dict(e["view"]) for e in entries]
                rows = [e["weight"] for e in entries]
            except (KeyError, TypeError):
                raise PolicyError("learned weights must be entries {view: ..., weight: ...}") from None
            return cls(rows, t, views)
        return cls(entries, t)


class _Scaled(Accumulator):
    def __init__(self, merge: "TemperatureScaled", base: Accumulator):
        super().__init__(merge, base.weights, base.kind, base.dim)
        self.base = base

    def add(self, i, out, mask=None):
        self.base.add(i, out, mask)

    def result(self):
        scores = self.base.result()
        if not self.base.merge.normalised:
            scores = normalise(scores, self.dim)
        return torch.softmax(torch.log(scores.clamp_min(TINY)) / self.merge.temperature, dim=self.dim)

    def labels(self, scores):
        return self.base.labels(scores)


class TemperatureScaled(Merge):
    """Any merge followed by temperature scaling: ``softmax(log p / T)``."""

    name = "temperature_scaled"

    def __init__(self, base: Merge, temperature: float):
        if not isinstance(base, Merge):
            raise PolicyError(f"temperature scaling needs a merge, got {type(base).__name__}")
        self.base = base
        self.temperature = _temperature(temperature)

    @property
    def per_view(self) -> bool:  # type: ignore[override]
        return self.base.per_view

    def __repr__(self) -> str:
        return f"{self.base!r} (T={self.temperature:.4g})"

    def params(self):
        return {"base": self.base.to_dict(), "temperature": self.temperature}

    def accumulator(self, views, weights, kind, dim):
        return _Scaled(self, self.base.accumulator(views, weights, kind, dim))
