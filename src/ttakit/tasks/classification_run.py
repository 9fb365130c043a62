"""The classification task on the one run loop (:mod:`ttakit.engine`): what
one run of a classifier's views collects and merges into a
:class:`ClassificationResult`. The :class:`~ttakit.tasks.classification.Classifier`
users call, and the adaptive run (:mod:`ttakit.tasks.adaptive`), both sit
above this module."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError, ModelOutputError
from ..merge import Merge, normalise, to_probs
from .base import check_on_error, ResultBuffer, Task, TaskRun
OUTPUT_KINDS = ("auto", "probs", "logits")
PROB_TOLERANCE = 1e-3


@dataclass
class ClassificationResult:
    """What :meth:`Classifier.run` returns. Arrays are NumPy, one row per input."""

    probs: np.ndarray            #: (N, C) merged probabilities (rows sum to 1)
    labels: np.ndarray           #: (N,) predicted class indices
    scores: np.ndarray           #: (N, C) the merge's raw output (= probs except for ``sum``)
    entropy: np.ndarray          #: (N,) predictive entropy of ``probs`` (nats)
    spread: np.ndarray           #: (N,) weighted std over views of the predicted class's probability
    agreement: np.ndarray        #: (N,) weighted share of views whose top class is the label
    views: tuple                 #: the distinct views that were run
    weights: np.ndarray          #: their weights
    forward_passes: int          #: model inputs evaluated (distinct views x inputs)
    seconds: float               #: wall time
    output_kind: str             #: "probs" or "logits": how the model's outputs were read
    view_probs: np.ndarray | None = None  #: (V, N, C) per-view probabilities, on request
    classes: Sequence[str] | None = field(default=None, repr=False)
    #: (N,) True for inputs that failed (on_error="mark"): NaN probabilities, label -1
    failed: np.ndarray | None = None
    #: input index -> why it failed
    errors: dict = field(default_factory=dict)
    #: (N,) forward passes spent on each input (an adaptive policy stops early
    #: on confident inputs); None: every input got every view
    forwards: np.ndarray | None = None

    @property
    def forwards_per_input(self) -> np.ndarray:
        """(N,) forward passes spent on each input."""
        if self.forwards is not None:
            return self.forwards
        return np.full(len(self), len(self.views), dtype=np.int64)

    @property
    def mean_forwards(self) -> float:
        """Mean forward passes per input."""
        return self.forward_passes / len(self) if len(self) else float("nan")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def class_names(self) -> list[str] | None:
        return None if self.classes is None else [self.classes[i] for i in self.labels]

    @property
    def throughput(self) -> float:
        """Inputs per second."""
        return len(self) / self.seconds if self.seconds > 0 else float("nan")


class ClassificationTask(Task):
    """Class scores ``(n, C)`` per view, merged by ``merge``; per-input
    uncertainty from running per-class statistics (weighted Welford).
    ``spread=False`` skips those statistics (``spread`` and ``agreement``
    are then NaN): for callers that want the merged probabilities only,
    such as :mod:`ttakit.sklearn`, with many cheap views."""

    def __init__(self, merge: Merge, output: str = "auto", classes: Sequence[str] | None = None,
                 keep_views: bool = False, on_error: str = "raise", spread: bool = True):
        if output not in OUTPUT_KINDS:
            raise InputError(f"output must be one of {', '.join(OUTPUT_KINDS)}, got {output!r}")
        check_on_error(on_error)
        self.on_error = on_error
        self.merge = merge
        self.output = output
        self.classes = None if classes is None else list(classes)
        self.keep_views = keep_views
        self.spread = bool(spread)

    def start(self, views, weights, n):
        return ClassificationRun(self, views, weights, n)


class ClassificationRun(TaskRun):
    task: ClassificationTask

    def __init__(self, task, views, weights, n):
        super().__init__(task, views, weights, n)
        self.kind: str | None = None if task.output == "auto" else task.output
        self.bufs: dict[str, ResultBuffer] | None = None
        self.t0 = time.perf_counter()

    # -- per chunk ------------------------------------------------------------
    def begin(self, x, start):
        self.start_index, self.n = start, x.shape[0]
        self.begin_failures(x.shape[0], start, x.device)
        self.acc = None
        self.stats = None
        self.chunk_views = [None] * len(self.views) if self.task.keep_views else None

    def add_many(self, indices, out):
        """The outputs of views ``indices``, one after the other in ``out``
        (``len(indices) x n`` rows): checked at once, then added view by view
        (the same result as :meth:`add` for each)."""
        k, n = len(indices), self.n
        if out.ndim != 2 or not bool(torch.isfinite(out).all()):
            for j, i in enumerate(indices):  # failures are found and named view by view
                self.add(i, out[j * n:(j + 1) * n])
            return
        if self.kind is None:  # auto: the first view's output decides, as with add()
            self._check(out[:n])
        kind = self._check(out, repeat=k)
        for j, i in enumerate(indices):
            self._add_checked(i, out[j * n:(j + 1) * n], kind)

    def add(self, i, out):
        if out.ndim == 2:
            bad = ~torch.isfinite(out).all(-1)
            if bad.any():
                self.fail(bad, f"the model returned NaN or infinite values (view {self.views[i]!r})",
                          ModelOutputError)
                out = out.masked_fill(bad[:, None], 0.0)
        self._add_checked(i, out, self._check(out))

    def _add_checked(self, i, out, kind):
        if self.acc is None:
            self.acc = self.task.merge.start(self.views, self.weights, kind)
            self.stats = _Spread(out.shape, out.device) if self.task.spread else None
        self.acc.add(i, out)
        if self.stats is None and self.chunk_views is None:
            return
        p = to_probs(out, kind)
        if self.stats is not None:
            self.stats.add(self.weights[i], p)
        if self.chunk_views is not None:
            self.chunk_views[i] = p

    def end(self):
        self._write(self.start_index, self.merged())
        self.n_seen += self.n
        self.acc = self.stats = self.chunk_views = None

    def merged(self) -> dict:
        """The chunk's merged results so far (tensors, one row per input)."""
        scores = self.acc.result()
        labels = self.acc.labels(scores)
        probs = scores if self.task.merge.normalised else normalise(scores)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        if self.stats is not None:
            spread, agreement = self.stats.at(labels)
        else:
            spread = agreement = torch.full(labels.shape, float("nan"), device=labels.device)
        overflow = ~torch.isfinite(probs).all(-1)
        if self.stats is not None:
            overflow |= ~torch.isfinite(spread)
        if self.chunk_failed is not None:
            overflow &= ~self.chunk_failed
        if overflow.any():  # finite outputs so large that merging them overflowed: never a silent NaN
            self.fail(overflow, f"merging the views overflowed (model outputs too large for {self.task.merge!r})",
                      ModelOutputError)
        failed = self.chunk_failed
        if failed is not None and failed.any():
            nan = float("nan")
            probs, entropy = probs.masked_fill(failed[:, None], nan), entropy.masked_fill(failed, nan)
            scores = probs if scores is probs else scores.masked_fill(failed[:, None], nan)
            spread, agreement = spread.masked_fill(failed, nan), agreement.masked_fill(failed, nan)
            labels = labels.masked_fill(failed, -1)
        out = {"probs": probs, "scores": scores, "labels": labels, "entropy": entropy, "spread": spread,
               "agreement": agreement,
               "failed": failed if failed is not None else torch.zeros(self.n, dtype=torch.bool)}
        if self.chunk_views is not None:
            out["views"] = torch.stack(self.chunk_views)
        return out

    def _write(self, where, merged: dict, rows=None) -> None:
        """Write ``merged`` (from :meth:`merged`) from input ``where`` on, or,
        with ``where`` an index array, at those inputs (the rows ``rows`` of
        ``merged`` only, when given)."""
        if self.bufs is None:
            self._allocate(merged["probs"].shape[-1])
        for k, buf in self.bufs.items():
            v = merged[k].cpu()
            if rows is not None:
                v = v[:, rows] if k == "views" else v[rows]
            if isinstance(where, int):
                buf.write(where, v)
            else:
                buf.write_at(where, v)

    def _allocate(self, c: int):
        n = self.n_expected
        self.bufs = {k: ResultBuffer(n, shape, dt) for k, shape, dt in (
            ("probs", (c,), np.float32), ("labels", (), np.int64), ("entropy", (), np.float32),
            ("spread", (), np.float32), ("agreement", (), np.float32), ("failed", (), np.bool_))}
        if not self.task.merge.normalised:
            self.bufs["scores"] = ResultBuffer(n, (c,), np.float32)
        if self.task.keep_views:
            self.bufs["views"] = ResultBuffer(n, (c,), np.float32, lead=(len(self.views),))

    def finish(self) -> ClassificationResult:
        c = len(self.task.classes or []) if self.bufs is None else self.bufs["probs"].item_shape[0]

        def get(k, shape):
            if self.bufs is None or k not in self.bufs:
                return np.zeros(shape, np.float32)
            return self.bufs[k].result()

        probs = get("probs", (0, c))
        scores = get("scores", (0, c)) if self.bufs is not None and "scores" in self.bufs else probs
        views = get("views", (len(self.views), 0, c)) if self.task.keep_views else None
        return ClassificationResult(
            probs=probs, labels=get("labels", (0,)).astype(np.int64, copy=False), scores=scores,
            entropy=get("entropy", (0,)), spread=get("spread", (0,)), agreement=get("agreement", (0,)),
            views=tuple(self.views), weights=np.asarray(self.weights, dtype=np.float64),
            forward_passes=self.n_seen * len(self.views), seconds=time.perf_counter() - self.t0,
            output_kind=self.kind or "probs", view_probs=views, classes=self.task.classes,
            failed=get("failed", (0,)).astype(bool, copy=False), errors=dict(sorted(self.errors.items())))

    # -- checks ---------------------------------------------------------------
    def _check(self, out: torch.Tensor, repeat: int = 1) -> str:
        """The output kind of ``out`` (``repeat`` views' outputs of the chunk,
        one after the other), checked against the kind decided so far."""
        start = self.start_index
        if out.ndim != 2:
            raise ModelOutputError(f"a classifier must return one row of class scores per input, shape (n, C); "
                                   f"got per-input shape {tuple(out.shape[1:]) or '()'}")
        classes = self.task.classes
        if classes is not None and out.shape[-1] != len(classes):
            raise ModelOutputError(f"the model returned {out.shape[-1]} classes but {len(classes)} "
                                   f"class names were given")
        if self.chunk_failed is not None and self.chunk_failed.any():
            good = ~self.chunk_failed
            if not good.any():
                return self.kind or "logits"  # nothing to read the kind from: every row failed
            out = out[good.repeat(repeat)]
        looks_probs = bool((out.min() >= -1e-6) and ((out.sum(-1) - 1).abs().max() <= PROB_TOLERANCE))
        if self.kind is None:  # auto: the first output decides, every later one must agree
            self.kind = "probs" if looks_probs else "logits"
            return self.kind
        if self.kind == "probs" and not looks_probs:
            sums = out.sum(-1)
            worst = float(sums.flatten()[(sums - 1).abs().flatten().argmax()])
            how = "declared" if self.task.output == "probs" else "detected from the first batch"
            raise ModelOutputError(
                f"model outputs were {how} as probabilities, but rows are not distributions "
                f"(a row sums to {worst:.4g}, min value {float(out.min()):.4g}) in the chunk starting at "
                f"input {start}. If the model returns logits, pass output='logits'")
        return self.kind


class _Spread:
    """Running weighted per-class mean and squared deviation of the views'
    probabilities (West's weighted Welford update) and weighted top-1 votes:
    the spread and agreement of whichever class ends up the label."""

    def __init__(self, shape, device):
        self.w = 0.0
        self.mean = torch.zeros(shape, device=device)
        self.m2 = torch.zeros(shape, device=device)
        self.votes = torch.zeros(shape, device=device)

    def add(self, w: float, p: torch.Tensor) -> None:
        if w <= 0:
            return
        self.w += w
        delta = p - self.mean
        self.mean.add_(delta, alpha=w / self.w)
        self.m2.add_(delta * (p - self.mean), alpha=w)
        self.votes.scatter_add_(-1, p.argmax(-1, keepdim=True),
                                torch.full((p.shape[0], 1), w, dtype=p.dtype, device=p.device))

    def at(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = labels.view(-1, 1)
        w = max(self.w, 1e-12)
        spread = (self.m2.gather(-1, idx).squeeze(-1) / w).clamp_min(0).sqrt()
        agreement = self.votes.gather(-1, idx).squeeze(-1) / w
        return spread, agreement
