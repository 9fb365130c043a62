"""Keypoints with test-time augmentation: each view's points brought back to
the input frame, left and right swapped under mirroring views, merged by a
(confidence-weighted) mean with the spread of the views around it.

The model returns ``(n, P, 2)`` points ``(x, y)`` or ``(n, P, 3)`` with a
confidence per point, in pixels of the view it saw (or fractions of its
width and height, ``normalized=True``). A view that mirrors the image (an
odd number of flips: ``hflip``, ``vflip``, ``transpose``, ``transverse``)
turns a left wrist into a right one: ``flip_pairs`` lists the index pairs
``(left, right)`` to swap back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError, ModelOutputError
from .base import check_on_error, ResultBuffer, Task, TaskRun
from .front import COMMON, Front


@dataclass
class KeypointResult:
    """What :meth:`KeypointDetector.run` returns (NumPy, one row per input)."""

    points: np.ndarray       #: (N, P, 2) merged (x, y) in the input frame
    confidence: np.ndarray   #: (N, P) view-weighted mean confidence (1 without confidences)
    spread: np.ndarray       #: (N, P) weighted RMS distance of the views' points from the merged point
    views: tuple = ()
    weights: np.ndarray | None = None
    forward_passes: int = 0
    seconds: float = 0.0
    failed: np.ndarray | None = None
    errors: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.points)


def mirrors(view, size) -> bool:
    """True when ``view`` mirrors the image (its linear part has a negative determinant)."""
    m = np.asarray(view.matrix(size), dtype=np.float64)
    return float(np.linalg.det(m[:2, :2])) < 0


def swap_index(n_points: int, flip_pairs: Sequence) -> np.ndarray:
    """The permutation that swaps every ``(left, right)`` pair."""
    perm = np.arange(n_points)
    for pair in flip_pairs:
        if len(pair) != 2:
            raise InputError(f"flip_pairs must be (left, right) index pairs, got {pair!r}")
        a, b = (int(i) for i in pair)
        if not (0 <= a < n_points and 0 <= b < n_points):
            raise ModelOutputError(f"flip pair {pair!r} is outside the model's {n_points} keypoints")
        perm[a], perm[b] = b, a
    return perm


class KeypointTask(Task):
    def __init__(self, flip_pairs: Sequence = (), normalized: bool = False, weight_by_confidence: bool = True,
                 on_error: str = "raise"):
        check_on_error(on_error)
        self.flip_pairs = [tuple(p) for p in flip_pairs]
        self.normalized, self.weight_by_confidence, self.on_error = bool(normalized), bool(weight_by_confidence), on_error

    def start(self, views, weights, n):
        return KeypointRun(self, views, weights, n)


class KeypointRun(TaskRun):
    task: KeypointTask

    def __init__(self, task, views, weights, n):
        super().__init__(task, views, weights, n)
        self.bufs = None
        self.t0 = time.perf_counter()

    def begin(self, x, start):
        self.start_index, self.n, self.size = start, x.shape[0], (x.shape[-2], x.shape[-1])
        self.begin_failures(x.shape[0], start, x.device)
        self.sums = None

    def add(self, i, out):
        y = out.detach().to(torch.float64).cpu()
        if y.ndim != 3 or y.shape[-1] not in (2, 3):
            raise ModelOutputError(f"a keypoint model must return (n, P, 2) points or (n, P, 3) with confidences; "
                                   f"got per-input shape {tuple(y.shape[1:])}")
        bad = ~torch.isfinite(y).reshape(y.shape[0], -1).all(1)
        if bad.any():
            self.fail(bad, f"the model returned NaN or infinite keypoints (view {self.views[i]!r})", ModelOutputError)
            y = y.masked_fill(bad[:, None, None], 0.0)
        view = self.views[i]
        pts = y[..., :2].numpy()
        conf = y[..., 2].numpy() if y.shape[-1] == 3 else np.ones(pts.shape[:2])
        if self.task.normalized:
            vh, vw = view.output_size(self.size)
            pts = pts * np.array([vw, vh])
        pts = np.asarray(view.invert_points(pts, self.size), dtype=np.float64)
        if self.task.flip_pairs and mirrors(view, self.size):
            perm = swap_index(pts.shape[1], self.task.flip_pairs)
            pts, conf = pts[:, perm], conf[:, perm]
        w = self.weights[i]
        wp = w * (np.clip(conf, 0, None) if self.task.weight_by_confidence else np.ones_like(conf))
        if self.sums is None:
            p = pts.shape[1]
            self.sums = [np.zeros((self.n, p)), np.zeros((self.n, p, 2)), np.zeros((self.n, p)),
                         np.zeros((self.n, p)), 0.0]
        s = self.sums
        s[0] += wp
        s[1] += wp[..., None] * pts
        s[2] += wp * (pts * pts).sum(-1)
        s[3] += w * conf
        s[4] += w

    def end(self):
        sw, sx, sxx, sc, wv = self.sums
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sx / sw[..., None]
            spread = np.sqrt(np.clip(sxx / sw - (mean * mean).sum(-1), 0, None))
        conf = sc / max(wv, 1e-12)
        if self.task.normalized:
            h, w = self.size
            mean = mean / np.array([w, h])
            spread = spread / np.hypot(w, h)
        failed = np.zeros(self.n, bool) if self.chunk_failed is None else self.chunk_failed.cpu().numpy()
        mean[failed], spread[failed], conf[failed] = np.nan, np.nan, np.nan
        if self.bufs is None:
            p = mean.shape[1]
            self.bufs = {"points": ResultBuffer(self.n_expected, (p, 2), np.float64),
                         "confidence": ResultBuffer(self.n_expected, (p,), np.float64),
                         "spread": ResultBuffer(self.n_expected, (p,), np.float64),
                         "failed": ResultBuffer(self.n_expected, (), np.bool_)}
        for k, v in (("points", mean), ("confidence", conf), ("spread", spread), ("failed", failed)):
            self.bufs[k].write(self.start_index, v)
        self.n_seen += self.n

    def finish(self) -> KeypointResult:
        get = (lambda k, shape: np.zeros(shape) if self.bufs is None else self.bufs[k].result())
        return KeypointResult(points=get("points", (0, 0, 2)), confidence=get("confidence", (0, 0)),
                              spread=get("spread", (0, 0)), views=tuple(self.views),
                              weights=np.asarray(self.weights), forward_passes=self.n_seen * len(self.views),
                              seconds=time.perf_counter() - self.t0, failed=get("failed", (0,)).astype(bool),
                              errors=dict(sorted(self.errors.items())))


class KeypointDetector(Front):
    """Test-time augmentation for a keypoint (pose, landmark) model.

    Parameters (besides those :class:`~ttakit.Classifier` shares):

    flip_pairs
        ``(left, right)`` keypoint index pairs swapped under mirroring views
        (COCO: ``[(1, 2), (3, 4), (5, 6), ...]``).
    normalized
        Points are fractions of the view's width and height (results too).
    weight_by_confidence
        Weight each view's point by its confidence (third column) as well as
        the view's weight (default True).
    """

    PARAMS = ("model", "policy", "flip_pairs", "normalized", "weight_by_confidence") + COMMON

    def __init__(self, model, policy="identity", *, flip_pairs: Sequence = (), normalized: bool = False,
                 weight_by_confidence: bool = True, data_layout: str = "NCHW", model_layout: str | None = None,
                 preprocess=None, batch_size: int | None = None, dedupe: bool = True, device=None,
                 model_options: dict | None = None, runtime: str = "eager",
                 on_error: str = "raise"):
        self._init(dict(locals()))

    def make_task(self, policy):
        return KeypointTask(self.flip_pairs, self.normalized, self.weight_by_confidence, self.on_error)

    def run(self, x) -> KeypointResult:
        """Merged keypoints for images ``x``."""
        return self._run(x)

    def predict(self, x) -> np.ndarray:
        """Merged points ``(N, P, 2)``."""
        return self.run(x).points
