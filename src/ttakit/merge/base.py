"""The merge interface: reduce the views' outputs one view at a time.

A :class:`Merge` is a value (it prints, compares and saves); calling
:meth:`Merge.start` gives an :class:`Accumulator` for one run, which takes
each view's output as it arrives (:meth:`Accumulator.add`) and keeps only
running sums, maxima or counts, so a chunk never holds more than one view's
outputs beside them. The class axis is ``dim`` (``-1`` for class scores
``(n, C)``, ``1`` for dense maps ``(n, K, H, W)``). ``mask`` (optional,
broadcastable to the output with size 1 on ``dim``) says where a view's
output counts: a crop or a shift leaves input pixels a view never saw.

Every merge takes the views' weights (a policy's multiplicities, so a
deduplicated policy merges exactly like the full one) and whether the outputs
are ``"probs"`` or ``"logits"``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from ..errors import PolicyError

KINDS = ("probs", "logits")
TINY = 1e-12


def to_probs(outputs: torch.Tensor, kind: str, dim: int = -1) -> torch.Tensor:
    """Probabilities from model outputs of ``kind``."""
    return torch.softmax(outputs, dim=dim) if kind == "logits" else outputs


def to_log_probs(outputs: torch.Tensor, kind: str, dim: int = -1) -> torch.Tensor:
    """Log-probabilities from model outputs of ``kind``."""
    if kind == "logits":
        return torch.log_softmax(outputs, dim=dim)
    return torch.log(outputs.clamp_min(TINY))


def normalise(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return scores / scores.sum(dim=dim, keepdim=True).clamp_min(TINY)


class Accumulator(abc.ABC):
    """The running state of one merge over the views of one chunk."""

    def __init__(self, merge: "Merge", weights: Sequence[float], kind: str, dim: int):
        self.merge = merge
        self.weights = [float(w) for w in weights]
        self.kind = kind
        self.dim = dim

    @abc.abstractmethod
    def add(self, i: int, out: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Fold in the output of view ``i`` (the index into the run's views)."""

    @abc.abstractmethod
    def result(self) -> torch.Tensor:
        """The merged scores, shaped like one view's output."""

    def labels(self, scores: torch.Tensor) -> torch.Tensor:
        """The predicted class of every position: the top score (the first on
        ties; ``max(...).indices``, as ``argmax`` but several times faster on
        CPU along a middle axis such as the classes of ``(n, K, H, W)``)."""
        return scores.max(dim=self.dim).indices

    def _weight(self, i: int, out: torch.Tensor, mask: torch.Tensor | None):
        """View ``i``'s weight, as a number or (with a mask) a tensor."""
        w = self.weights[i]
        if mask is None:
            return w
        return mask.to(out.dtype) * w


class Merge(abc.ABC):
    """Base class of merges. Subclasses set ``name`` and implement
    :meth:`accumulator`; parameters are returned by :meth:`params`."""

    name: ClassVar[str] = "merge"
    #: True when the scores are probabilities (they sum to 1 along the class axis)
    normalised: ClassVar[bool] = True
    #: True when the merge holds data about particular views (learned weights):
    #: policy algebra must not carry it over to other views
    per_view: ClassVar[bool] = False

    def params(self) -> dict[str, Any]:
        """The parameters that define this merge (JSON-serialisable)."""
        return {}

    @abc.abstractmethod
    def accumulator(self, views: Sequence, weights: Sequence[float], kind: str, dim: int) -> Accumulator:
        """A fresh accumulator for ``views`` with ``weights``."""

    def start(self, views: Sequence, weights: Sequence[float], kind: str, *, dim: int = -1) -> Accumulator:
        """Check the arguments and return a fresh accumulator."""
        if kind not in KINDS:
            raise PolicyError(f"the output kind must be one of {KINDS}, got {kind!r}")
        if len(views) != len(weights):
            raise PolicyError(f"{len(views)} views but {len(weights)} weights")
        return self.accumulator(views, weights, kind, dim)

    def __call__(self, outputs: torch.Tensor, weights, kind: str, views: Sequence | None = None,
                 *, dim: int = -1) -> torch.Tensor:
        """Merge stacked outputs ``(V, ...)`` in one call (the same
        accumulator, view by view). ``views`` defaults to positions."""
        w = [float(v) for v in torch.as_tensor(weights).flatten().tolist()]
        if outputs.shape[0] != len(w):
            raise PolicyError(f"{outputs.shape[0]} views of outputs but {len(w)} weights")
        acc = self.start(list(range(len(w))) if views is None else list(views), w, kind, dim=dim)
        for i in range(len(w)):
            acc.add(i, outputs[i])
        return acc.result()

    def labels(self, scores: torch.Tensor, outputs: torch.Tensor, weights, kind: str,
               views: Sequence | None = None, *, dim: int = -1) -> torch.Tensor:
        """The predicted classes for stacked ``outputs`` whose merged scores
        are ``scores`` (ties in ``vote`` go to the higher mean probability)."""
        w = [float(v) for v in torch.as_tensor(weights).flatten().tolist()]
        acc = self.start(list(range(len(w))) if views is None else list(views), w, kind, dim=dim)
        for i in range(len(w)):
            acc.add(i, outputs[i])
        return acc.labels(scores)

    def to_dict(self) -> dict[str, Any]:
        return {"merge": self.name, **self.params()}

    def __repr__(self) -> str:
        p = self.params()
        if not p:
            return self.name
        return f"{self.name}(" + ", ".join(f"{v!r}" for v in p.values()) + ")"

    def _key(self):
        return repr(sorted(self.to_dict().items(), key=lambda kv: kv[0]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Merge) and type(self) is type(other) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())
