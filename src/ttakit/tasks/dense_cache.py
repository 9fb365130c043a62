"""Prediction caches for detection and segmentation: each distinct view's
de-augmented output per image is computed once, and any policy (a subset of
the cached views, with weights) and any merge is then applied to the cached
outputs without running the model again. What dense evaluation and tuning
run on: comparing 20 merges and policies costs one pass per distinct view.

- :class:`DetectionCache` keeps each view's boxes, scores and labels per
  image, already mapped back to the input frame and clipped (boxes are small).
- :class:`SegmentationCache` keeps each view's per-pixel class scores on the
  input grid, ``(N, K, H, W)`` float32 per view: memory grows with views x
  images x pixels, so it refuses to hold more than ``max_bytes``
  (:data:`SEGMENTATION_CACHE_BYTES` by default) and says so before it does.

A merged result from a cache equals a direct run of
:class:`~ttakit.Detector` / :class:`~ttakit.Segmenter` with the same policy
and merge (the same operations on the same arrays, in view order).
"""

from __future__ import annotations

import abc
import threading
import time

import numpy as np
import torch

from ..errors import InputError
from ..merge import get_merge
from ..merge.boxes import from_xyxy, get_box_merge
from ..policy import Policy
from ..views import View
from .detection import DetectionResult, DetectionRun, DetectionTask, Detector, merge_images
from .segmentation import SegmentationRun, SegmentationTask, Segmenter

#: default of ``SegmentationCache(max_bytes=)``: the most bytes of cached
#: per-view score maps (1 GiB: 8 views of 60 images of 512 x 512 x 2 classes)
SEGMENTATION_CACHE_BYTES = 2**30


class _ViewCache(abc.ABC):
    """What both caches share: :meth:`ensure` runs the missing views, under a lock."""

    @abc.abstractmethod
    def _cached(self) -> dict:
        """View -> its cached outputs."""

    @abc.abstractmethod
    def _compute(self, missing: list) -> None:
        """Run the views ``missing`` (in one pass) and cache them."""

    @property
    def views(self) -> list[View]:
        return list(self._cached())

    def ensure(self, views) -> None:
        """Compute the views (or the distinct views of a policy) not cached yet."""
        if isinstance(views, (Policy, str)):
            views = Policy.coerce(views).unique().views
        with self._lock:
            missing = [v for v in dict.fromkeys(views) if v not in self._cached()]
            if missing:
                self._compute(missing)


class _Collecting:
    """Mixin of the collecting runs: results per view and image, no merge."""

    def start_store(self):
        self.store: dict[int, dict[int, object]] = {i: {} for i in range(len(self.views))}
        self.failed_inputs: list[bool] = []


class _DetectionCollectRun(_Collecting, DetectionRun):
    def __init__(self, task, views, weights, n):
        super().__init__(task, views, weights, n)
        self.start_store()

    def end(self):
        failed = self.chunk_failed
        for k, parts in enumerate(self.parts):
            bad = failed is not None and bool(failed[k])
            self.failed_inputs.append(bad)
            for i, part in parts:
                if not bad:
                    self.store[i][self.start_index + k] = part[:3]
        self.n_seen += self.n

    def finish(self):
        return self


class _DetectionCollectTask(DetectionTask):
    def start(self, views, weights, n):
        return _DetectionCollectRun(self, views, weights, n)


class DetectionCache(_ViewCache):
    """Per-view de-augmented detections of one model on one set of images.

    ``DetectionCache(model, images, **detector_kwargs)`` takes what
    :class:`~ttakit.Detector` takes (``decode``, ``data_layout``,
    ``preprocess``...; ``box_format`` and ``normalized`` describe the model's
    boxes). :meth:`ensure` runs the views not cached yet, all in one streamed
    pass; :meth:`run` merges cached views for any policy and merge.
    """

    def __init__(self, model, data, **detector_kwargs):
        for k in ("merge", "merge_options", "policy"):
            if k in detector_kwargs:
                raise InputError(f"DetectionCache takes no {k}= (give it to run())")
        self.data = data
        self._det = Detector(model, "identity", **detector_kwargs)
        self._lock = threading.Lock()
        self._boxes: dict[View, dict[int, tuple]] = {}
        self.failed: np.ndarray | None = None
        self.n: int | None = None
        self.size: tuple[int, int] | None = None
        self.forward_passes = 0
        self.seconds = 0.0

    def _cached(self) -> dict:
        return self._boxes

    def _compute(self, missing: list) -> None:
        det = self._det.set_params(policy=Policy(missing))
        base = det.make_task(det.run_policy)
        task = _DetectionCollectTask(base.merge, base.box_format, base.normalized, base.decode, base.classes,
                                     base.on_error)
        run = det._run(self.data, task=task)
        for i, v in enumerate(missing):
            self._boxes[v] = run.store[i]
        failed = np.asarray(run.failed_inputs, dtype=bool)
        self.failed = failed if self.failed is None else (self.failed | failed)
        self.n, self.size = run.n_seen, run.size
        self.forward_passes += run.n_seen * len(missing)
        self.seconds += time.perf_counter() - run.t0

    def export(self, keep=None) -> dict[str, np.ndarray]:
        """The cached views as arrays (for ``np.savez``; :meth:`restore` reads
        them back), keeping only the boxes whose label ``keep(labels)`` accepts."""
        out = {"n": np.array(self.n), "size": np.array(self.size), "failed": self.failed,
               "views": np.array([repr(v) for v in self._boxes])}
        for i, per in enumerate(self._boxes.values()):
            parts = [per.get(k) for k in range(self.n)]
            sel = [None if p is None else (np.ones(len(p[2]), bool) if keep is None else keep(np.asarray(p[2])))
                   for p in parts]
            out[f"count{i}"] = np.array([-1 if p is None else int(m.sum()) for p, m in zip(parts, sel)])
            for j, key in enumerate(("boxes", "scores", "labels")):
                got = [np.asarray(p[j])[m] for p, m in zip(parts, sel) if p is not None]
                out[f"{key}{i}"] = np.concatenate(got) if got else np.zeros((0, 4) if j == 0 else (0,))
        return out

    def restore(self, arrays, views) -> None:
        """Cache ``views`` (the :class:`View` objects, in the order :meth:`export`
        wrote them) from its arrays instead of running the model."""
        if [repr(v) for v in views] != list(arrays["views"]):
            raise InputError("the arrays hold other views than those given")
        self.n, self.size, self.failed = int(arrays["n"]), tuple(int(v) for v in arrays["size"]), arrays["failed"]
        for i, v in enumerate(views):
            counts, at, per = arrays[f"count{i}"], 0, {}
            for k, c in enumerate(counts):
                if c >= 0:
                    per[k] = tuple(arrays[f"{key}{i}"][at:at + c] for key in ("boxes", "scores", "labels"))
                    at += c
            self._boxes[v] = per

    def run(self, policy, merge="wbf", merge_options: dict | None = None) -> DetectionResult:
        """Merged detections of ``policy`` (its distinct views, with their
        weights) from the cached views, as :meth:`Detector.run` returns them."""
        pol = Policy.coerce(policy).unique()
        self.ensure(pol.views)
        m = get_box_merge(merge, **dict(merge_options or {}))
        weights = [float(w) for w in pol.weights]
        out = {k: [] for k in ("boxes", "scores", "labels", "support")}
        h, w = self.size
        fmt, normalized = self._det.box_format, self._det.normalized
        images = []
        for k in range(self.n):
            parts = []
            if not self.failed[k]:
                for i, v in enumerate(pol.views):
                    part = self._boxes[v].get(k)
                    if part is not None:
                        parts.append((i, (*part, np.full(len(part[1]), i))))
            images.append(parts)
        for merged in merge_images(m, images, weights):
            boxes = from_xyxy(merged.boxes, fmt)
            if normalized:
                boxes = boxes / np.array([w, h, w, h], dtype=np.float64)
            for key, val in (("boxes", boxes), ("scores", merged.scores), ("labels", merged.labels),
                             ("support", merged.support)):
                out[key].append(val)
        return DetectionResult(**out, views=tuple(pol.views), weights=np.asarray(weights),
                               forward_passes=self.n * len(pol.views), classes=self._det.classes,
                               failed=self.failed.copy())


class _SegmentationCollectRun(_Collecting, SegmentationRun):
    def __init__(self, task, views, weights, n, cache):
        super().__init__(task, views, weights, n)
        self.start_store()
        self.cache = cache
        self.chunks: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(self.views))}
        self.view_masks: dict[int, torch.Tensor | None] = {}

    def add(self, i, out):
        back, kind, mask = self.back(i, out)
        self.out_kind = kind
        self.cache.reserve(back.numel() * 4)
        self.chunks[i].append(back.detach().to("cpu", torch.float32))
        self.view_masks[i] = None if mask is None else mask.cpu()

    def end(self):
        failed = self.chunk_failed
        self.failed_inputs.extend(bool(f) for f in (failed if failed is not None else torch.zeros(self.n)))
        self.n_seen += self.n

    def finish(self):
        return self


class _SegmentationCollectTask(SegmentationTask):
    def __init__(self, base: SegmentationTask, cache):
        super().__init__(base.merge, base.output, base.classes, base.output_layout, True, False, None,
                         base.on_error)
        self.cache = cache

    def start(self, views, weights, n):
        return _SegmentationCollectRun(self, views, weights, n, self.cache)


class SegmentationCache(_ViewCache):
    """Per-view de-augmented class scores of one segmentation model on one
    set of images (all of one size), for comparing policies and merges.

    Takes what :class:`~ttakit.Segmenter` takes except ``merge``; refuses
    (an :class:`~ttakit.InputError` naming the limit) to hold more than
    ``max_bytes`` of score maps: tune on fewer or smaller images, or raise it.
    """

    def __init__(self, model, data, *, max_bytes: int = SEGMENTATION_CACHE_BYTES, **segmenter_kwargs):
        for k in ("merge", "policy"):
            if k in segmenter_kwargs:
                raise InputError(f"SegmentationCache takes no {k}= (give it to run())")
        self.data = data
        self.max_bytes = int(max_bytes)
        self._seg = Segmenter(model, "identity", **segmenter_kwargs)
        self._lock = threading.Lock()
        self._scores: dict[View, torch.Tensor] = {}
        self._masks: dict[View, torch.Tensor | None] = {}
        self.bytes = 0
        self.kind: str | None = None
        self.failed: np.ndarray | None = None
        self.forward_passes = 0

    def reserve(self, nbytes: int) -> None:
        """Count ``nbytes`` more of cached scores; past ``max_bytes``, refuse."""
        if self.bytes + nbytes > self.max_bytes:
            raise InputError(f"the segmentation cache would hold more than max_bytes={self.max_bytes} bytes of "
                             f"per-view score maps ({len(self._scores)} views cached, {self.bytes} bytes); "
                             "use fewer or smaller images, fewer candidate views, or a larger max_bytes")
        self.bytes += nbytes

    def _cached(self) -> dict:
        return self._scores

    def _compute(self, missing: list) -> None:
        seg = self._seg.set_params(policy=Policy(missing))
        task = _SegmentationCollectTask(seg.make_task(seg.run_policy), self)
        run = seg._run(self.data, task=task)
        for i, v in enumerate(missing):
            self._scores[v] = torch.cat(run.chunks[i])
            self._masks[v] = run.view_masks.get(i)
        self.kind = run.out_kind
        failed = np.asarray(run.failed_inputs, dtype=bool)
        self.failed = failed if self.failed is None else (self.failed | failed)
        self.forward_passes += run.n_seen * len(missing)

    def export(self, dtype=np.float16) -> dict[str, np.ndarray]:
        """The cached score maps as arrays (``dtype``: float16 halves them),
        for ``np.savez``; :meth:`restore` reads them back."""
        out = {"kind": np.array(self.kind), "failed": self.failed, "views": np.array([repr(v) for v in self._scores])}
        for i, v in enumerate(self._scores):
            out[f"scores{i}"] = self._scores[v].numpy().astype(dtype)
            if self._masks[v] is not None:
                out[f"mask{i}"] = self._masks[v].numpy()
        return out

    def restore(self, arrays, views) -> None:
        """Cache ``views`` (in the order :meth:`export` wrote them) from its arrays."""
        if [repr(v) for v in views] != list(arrays["views"]):
            raise InputError("the arrays hold other views than those given")
        self.kind, self.failed = str(arrays["kind"]), arrays["failed"]
        for i, v in enumerate(views):
            scores = torch.from_numpy(np.asarray(arrays[f"scores{i}"], np.float32))
            self.reserve(scores.numel() * 4)
            self._scores[v] = scores
            self._masks[v] = torch.from_numpy(arrays[f"mask{i}"]) if f"mask{i}" in arrays else None

    def run(self, policy, merge="mean", chunk: int = 64) -> np.ndarray:
        """Merged labels ``(N, H, W)`` of ``policy`` from the cached views
        (-1 for failed inputs), as :meth:`Segmenter.predict` returns them."""
        pol = Policy.coerce(policy).unique()
        self.ensure(pol.views)
        m = get_merge(merge)
        weights = [float(w) for w in pol.weights]
        first = self._scores[pol.views[0]]
        out = np.empty((first.shape[0], *first.shape[2:]), np.int64)
        for s in range(0, first.shape[0], chunk):
            acc = m.start(list(pol.views), weights, self.kind, dim=1)
            for i, v in enumerate(pol.views):
                acc.add(i, self._scores[v][s:s + chunk], self._masks[v])
            out[s:s + chunk] = acc.labels(acc.result()).numpy()
        out[self.failed] = -1
        return out


__all__ = ["DetectionCache", "SegmentationCache", "SEGMENTATION_CACHE_BYTES"]
