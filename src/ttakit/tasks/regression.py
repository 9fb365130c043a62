"""Regression with test-time augmentation: a task on the one run loop.

Each view's output is ``(n,)`` (one target) or ``(n, T)`` (T targets). The
views are merged by their weighted **mean** (running weighted Welford
sums: nothing per view is kept) or weighted **median**. A median needs all
the views' values of an input at once, so with ``merge="median"`` each
chunk keeps a buffer of its V outputs, ``V x chunk rows x T`` numbers,
released when the chunk ends: bounded by the chunk, never by the data.
Either way the weighted standard deviation across the copies is reported
as the prediction's uncertainty (``std``).

Outputs are kept in float64 (a scikit-learn regressor's own precision).
Rows or outputs that cannot be used fail as ``on_error`` says, as for
classification: ``"raise"`` names the first, ``"mark"`` gives NaN on their
row and lists them in ``result.failed`` / ``result.errors``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError, ModelOutputError
from ..models.base import as_tensor
from .base import check_on_error, ResultBuffer, Task, TaskRun

REGRESSION_MERGES = ("mean", "median")


@dataclass
class RegressionResult:
    """What a regression run returns; arrays are NumPy, one row per input."""

    pred: np.ndarray             #: (N,) or (N, T) merged predictions
    std: np.ndarray              #: same shape: weighted std across the views (the copies' spread)
    views: tuple                 #: the distinct views that were run
    weights: np.ndarray          #: their weights
    forward_passes: int          #: model inputs evaluated
    seconds: float
    merge: str = "mean"
    view_preds: np.ndarray | None = None  #: (V, N[, T]) per-view predictions, on request
    failed: np.ndarray | None = None      #: (N,) inputs that failed (on_error="mark")
    errors: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pred)

    def interval(self, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """``pred ± z * std``: a normal interval from the copies' spread alone
        (it knows only what the augmentation moves, not the model's error)."""
        from statistics import NormalDist

        if not 0 < level < 1:
            raise InputError(f"level must be in (0, 1), got {level}")
        z = NormalDist().inv_cdf(0.5 + level / 2)
        return self.pred - z * self.std, self.pred + z * self.std


class RegressionTask(Task):
    """Real-valued outputs merged by weighted mean or median."""

    def __init__(self, merge: str = "mean", keep_views: bool = False, on_error: str = "raise"):
        if merge not in REGRESSION_MERGES:
            raise InputError(f"a regression merge is one of {', '.join(REGRESSION_MERGES)}, got {merge!r}")
        check_on_error(on_error)
        self.merge = merge
        self.keep_views = keep_views
        self.on_error = on_error

    def start(self, views, weights, n):
        return RegressionRun(self, views, weights, n)

    def convert_output(self, raw, n, device):
        if isinstance(raw, np.ndarray) and raw.dtype.kind in "biuf":
            y = torch.from_numpy(np.asarray(raw, dtype=np.float64)).to(device)
        elif isinstance(raw, torch.Tensor) and raw.is_floating_point() and not raw.is_complex():
            y = raw.detach().to(device=device, dtype=torch.float64)
        else:
            y = as_tensor(raw, device).to(torch.float64)
        if y.ndim == 0 or y.shape[0] != n:
            raise ModelOutputError(f"the model returned shape {tuple(y.shape)} for a batch of {n} inputs; "
                                   f"expected ({n},) or ({n}, T)")
        if y.ndim > 2:
            raise ModelOutputError(f"a regressor returns (n,) or (n, T) per batch, got {tuple(y.shape)}")
        return y


class RegressionRun(TaskRun):
    task: RegressionTask

    def __init__(self, task, views, weights, n):
        super().__init__(task, views, weights, n)
        self.bufs: dict[str, ResultBuffer] | None = None
        self.t0 = time.perf_counter()
        self.item_shape: tuple | None = None

    def begin(self, x, start):
        self.start_index, self.n = start, x.shape[0]
        self.begin_failures(x.shape[0], start, x.device)
        self.w = 0.0
        self.mean = self.m2 = None
        self.held: list[torch.Tensor | None] = [None] * len(self.views) \
            if self.task.merge == "median" or self.task.keep_views else []

    def add(self, i, out):
        if self.item_shape is None:
            self.item_shape = tuple(out.shape[1:])
        elif tuple(out.shape[1:]) != self.item_shape:
            raise ModelOutputError(f"the model returned per-input shape {tuple(out.shape[1:])} for view "
                                   f"{self.views[i]!r}, {self.item_shape} before")
        bad = ~torch.isfinite(out.reshape(out.shape[0], -1)).all(1)
        if bad.any():
            self.fail(bad, f"the model returned NaN or infinite values (view {self.views[i]!r})", ModelOutputError)
            out = out.masked_fill(bad.view(-1, *([1] * (out.ndim - 1))), 0.0)
        if self.held:
            self.held[i] = out
        w = self.weights[i]
        if self.mean is None:
            self.mean, self.m2 = torch.zeros_like(out), torch.zeros_like(out)
        if w <= 0:
            return
        self.w += w
        delta = out - self.mean
        self.mean.add_(delta, alpha=w / self.w)
        self.m2.add_(delta * (out - self.mean), alpha=w)

    def end(self):
        std = (self.m2 / max(self.w, 1e-300)).clamp_min(0).sqrt()
        pred = self.mean if self.task.merge == "mean" else weighted_median(
            torch.stack(self.held), torch.tensor(self.weights, dtype=self.mean.dtype, device=self.mean.device))
        flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
        overflow = ~torch.isfinite(flat(pred)).all(1) | ~torch.isfinite(flat(std)).all(1)
        if self.chunk_failed is not None:
            overflow &= ~self.chunk_failed
        if overflow.any():
            self.fail(overflow, "merging the views overflowed (model outputs too large)", ModelOutputError)
        failed = self.chunk_failed if self.chunk_failed is not None else torch.zeros(self.n, dtype=torch.bool)
        if failed.any():
            m = failed.view(-1, *([1] * (pred.ndim - 1)))
            pred, std = pred.masked_fill(m, float("nan")), std.masked_fill(m, float("nan"))
        if self.bufs is None:
            n = self.n_expected
            self.bufs = {"pred": ResultBuffer(n, self.item_shape, np.float64),
                         "std": ResultBuffer(n, self.item_shape, np.float64),
                         "failed": ResultBuffer(n, (), np.bool_)}
            if self.task.keep_views:
                self.bufs["views"] = ResultBuffer(n, self.item_shape, np.float64, lead=(len(self.views),))
        s = self.start_index
        self.bufs["pred"].write(s, pred.cpu())
        self.bufs["std"].write(s, std.cpu())
        self.bufs["failed"].write(s, failed.cpu())
        if self.task.keep_views:
            self.bufs["views"].write(s, torch.stack(self.held).cpu())
        self.n_seen += self.n
        self.mean = self.m2 = None
        self.held = []

    def finish(self) -> RegressionResult:
        shape = self.item_shape or ()

        def get(k, dt=np.float64):
            if self.bufs is None:
                lead = (len(self.views),) if k == "views" else ()
                return np.zeros((*lead, 0, *(() if k == "failed" else shape)), dt)
            return self.bufs[k].result()

        return RegressionResult(
            pred=get("pred"), std=get("std"), views=tuple(self.views),
            weights=np.asarray(self.weights, dtype=np.float64), forward_passes=self.n_seen * len(self.views),
            seconds=time.perf_counter() - self.t0, merge=self.task.merge,
            view_preds=get("views") if self.task.keep_views else None,
            failed=get("failed", np.bool_).astype(bool, copy=False), errors=dict(sorted(self.errors.items())))


def weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted median over axis 0 of ``values`` ``(V, ...)``. With equal
    weights and an even count it is the mean of the two middle values (the
    ordinary median)."""
    order = values.argsort(0)
    v = values.gather(0, order)
    w = weights.view(-1, *([1] * (values.ndim - 1))).expand_as(values).gather(0, order)
    cum = w.cumsum(0)
    half = cum[-1:] / 2
    tol = 1e-9 * cum[-1:].abs().clamp_min(1)
    lo = (cum < half - tol).sum(0, keepdim=True).clamp_max(len(v) - 1)
    hi = (cum <= half + tol).sum(0, keepdim=True).clamp_max(len(v) - 1)
    return (v.gather(0, lo) + v.gather(0, hi)).squeeze(0) / 2
