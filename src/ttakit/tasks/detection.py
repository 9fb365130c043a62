"""Object detection with test-time augmentation: each view's boxes brought
back to the input frame and merged across views per image (NMS, soft-NMS,
Weighted Boxes Fusion: :mod:`ttakit.merge.boxes`).

What a model may return for a batch of ``n`` images (``decode`` turns
anything else, such as an ONNX model's raw grid, into one of these):

- ``n`` records, each a mapping with ``boxes``, ``scores``, ``labels``
  (torchvision's convention) or a tuple ``(boxes, scores, labels)``;
- padded arrays with a count: a mapping with ``boxes (n, M, 4)``,
  ``scores (n, M)``, ``labels (n, M)`` and ``num``/``count (n,)``, or the
  tuple ``(boxes, scores, labels, num)`` (TensorFlow's combined NMS).

Boxes are ``box_format`` (``xyxy``, ``xywh``, ``cxcywh``) in pixels of the
view the model saw, or fractions of its width and height
(``normalized=True``). They are mapped back through the view's inverse
(flips, quarter turns, transposes, shifts, zooms, crops; a rotated box
becomes the axis-aligned hull of its corners), clipped to the image, and
dropped when nothing of them is left inside.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError, ModelOutputError
from ..merge.boxes import BOX_FORMATS, BoxMerge, BoxSet, from_xyxy, get_box_merge, to_xyxy
from .base import check_on_error, Task, TaskRun
from .front import COMMON, Front


@dataclass
class DetectionResult:
    """What :meth:`Detector.run` returns: one entry per image in each list,
    boxes in the input's frame (``box_format``, normalised when the model's
    were), highest score first."""

    boxes: list            #: per image (M, 4)
    scores: list           #: per image (M,)
    labels: list           #: per image (M,) int64
    support: list          #: per image (M,) number of distinct views agreeing with each box
    views: tuple = ()
    weights: np.ndarray | None = None
    forward_passes: int = 0
    seconds: float = 0.0
    classes: Sequence[str] | None = field(default=None, repr=False)
    failed: np.ndarray | None = None
    errors: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, i: int) -> dict:
        return {"boxes": self.boxes[i], "scores": self.scores[i], "labels": self.labels[i],
                "support": self.support[i]}


def _np(a, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelOutputError(f"detection {name} must be numbers, got {type(a).__name__}") from None


def _record(rec, k: int):
    if isinstance(rec, Mapping):
        missing = [key for key in ("boxes", "scores", "labels") if key not in rec]
        if missing:
            raise ModelOutputError(f"detection record {k} has no {missing[0]!r} (keys: {', '.join(map(str, rec))})")
        b, s, lab = rec["boxes"], rec["scores"], rec["labels"]
    elif isinstance(rec, (tuple, list)) and len(rec) == 3:
        b, s, lab = rec
    else:
        raise ModelOutputError(f"detection record {k} must be a mapping with boxes/scores/labels or a tuple "
                               f"(boxes, scores, labels), got {type(rec).__name__}")
    b, s, lab = _np(b, "boxes").reshape(-1, 4), _np(s, "scores").reshape(-1), _np(lab, "labels").reshape(-1)
    if not len(b) == len(s) == len(lab):
        raise ModelOutputError(f"detection record {k} has {len(b)} boxes, {len(s)} scores and {len(lab)} labels")
    return b, s, lab.astype(np.int64)


def parse_detections(raw, n: int) -> list:
    """Any of the accepted output forms as ``n`` tuples ``(boxes, scores, labels)``."""
    padded = None
    if isinstance(raw, Mapping) and "boxes" in raw:
        count = raw.get("num", raw.get("count"))
        if count is None:
            raise ModelOutputError("padded detection outputs need a 'num' (or 'count') entry: boxes per image")
        padded = (raw["boxes"], raw["scores"], raw["labels"], count)
    elif isinstance(raw, (tuple, list)) and len(raw) == 4 and not isinstance(raw[0], (Mapping, tuple, list)) \
            and _np(raw[0], "boxes").ndim == 3:
        padded = tuple(raw)
    if padded is not None:
        b, s, lab, num = (_np(a, nm) for a, nm in zip(padded, ("boxes", "scores", "labels", "num")))
        if b.ndim != 3 or b.shape[0] != n or num.reshape(-1).shape[0] != n:
            raise ModelOutputError(f"padded detections must be boxes (n, M, 4) and num (n,) for a batch of {n}, "
                                   f"got {b.shape} and {num.shape}")
        return [_record((b[k, :int(c)], s[k, :int(c)], lab[k, :int(c)]), k) for k, c in enumerate(num.reshape(-1))]
    if isinstance(raw, (np.ndarray, torch.Tensor)) or not hasattr(raw, "__len__"):
        raise ModelOutputError(f"the model must return one detection record per input (a list of {n}) or padded "
                               f"arrays with a count, got {type(raw).__name__}; pass decode= for raw outputs")
    if len(raw) != n:
        raise ModelOutputError(f"the model returned {len(raw)} detection records for a batch of {n} inputs")
    return [_record(r, k) for k, r in enumerate(raw)]


def view_ordered(parts: list) -> tuple:
    """``(boxes, scores, labels, view index)`` of one image, concatenated in
    view order (whatever order the forward batches came in), so that a merge
    sees the same input however the views were batched."""
    ordered = [p for _, p in sorted(parts, key=lambda p: p[0])]
    return tuple(np.concatenate(a) for a in zip(*ordered))


def merge_images(merge: BoxMerge, images: list, weights) -> list[BoxSet]:
    """The merged boxes of each image of a chunk, from its views' parts
    (``(view index, (boxes, scores, labels, view index))`` each; no parts or
    ``None``: no boxes), all images in one call of the merge
    (:meth:`~ttakit.merge.boxes.BoxMerge.many`: WBF fuses them together)."""
    todo = [k for k, parts in enumerate(images) if parts]
    done = dict(zip(todo, merge.many([view_ordered(images[k]) for k in todo], weights)))
    return [done[k] if k in done else BoxSet.empty() for k in range(len(images))]


class DetectionTask(Task):
    output_structure = "records"

    def __init__(self, merge: BoxMerge, box_format: str = "xyxy", normalized: bool = False, decode=None,
                 classes: Sequence[str] | None = None, on_error: str = "raise"):
        if box_format not in BOX_FORMATS:
            raise InputError(f"box_format must be one of {', '.join(BOX_FORMATS)}, got {box_format!r}")
        check_on_error(on_error)
        if decode is not None and not callable(decode):
            raise InputError(f"decode must be a function of the model's raw output, got {type(decode).__name__}")
        self.merge, self.box_format, self.normalized, self.decode = merge, box_format, bool(normalized), decode
        self.classes = None if classes is None else list(classes)
        self.on_error = on_error

    def convert_output(self, raw, n, device):
        if self.decode is not None:
            try:
                raw = self.decode(raw)
            except Exception as e:  # the user's function: name it
                raise ModelOutputError(f"decode failed on the model's output: {type(e).__name__}: {e}") from e
        return parse_detections(raw, n)

    def start(self, views, weights, n):
        return DetectionRun(self, views, weights, n)


class DetectionRun(TaskRun):
    task: DetectionTask

    def __init__(self, task, views, weights, n):
        super().__init__(task, views, weights, n)
        self.out = {k: [] for k in ("boxes", "scores", "labels", "support")}
        self.failed: list[bool] = []
        self.t0 = time.perf_counter()

    def begin(self, x, start):
        self.start_index, self.n, self.size = start, x.shape[0], (x.shape[-2], x.shape[-1])
        self.begin_failures(x.shape[0], start, x.device)
        self.parts = [[] for _ in range(self.n)]

    def add(self, i, records):
        view = self.views[i]
        h, w = self.size
        vh, vw = view.output_size(self.size)
        for k, (b, s, lab) in enumerate(records):
            if not (np.isfinite(b).all() and np.isfinite(s).all()):
                self.fail(torch.arange(self.n) == k, f"the model returned NaN or infinite boxes or scores "
                          f"(view {view!r})", ModelOutputError)
                continue
            if len(b) == 0:
                continue
            xyxy = to_xyxy(b, self.task.box_format)
            if self.task.normalized:
                xyxy = xyxy * np.array([vw, vh, vw, vh], dtype=np.float64)
            back = np.asarray(view.invert_boxes(xyxy, self.size), dtype=np.float64)
            back = np.concatenate([np.clip(back[:, :2], 0, [w, h]), np.clip(back[:, 2:], 0, [w, h])], 1)
            inside = (back[:, 2] > back[:, 0]) & (back[:, 3] > back[:, 1])
            self.parts[k].append((i, (back[inside], s[inside], lab[inside], np.full(int(inside.sum()), i))))

    def end(self):
        h, w = self.size
        failed = self.chunk_failed
        bads = [failed is not None and bool(failed[k]) for k in range(self.n)]
        images = [None if bad else parts for parts, bad in zip(self.parts, bads)]
        for merged, bad in zip(merge_images(self.task.merge, images, self.weights), bads):
            boxes = from_xyxy(merged.boxes, self.task.box_format)
            if self.task.normalized:
                boxes = boxes / np.array([w, h, w, h], dtype=np.float64)
            for key, val in (("boxes", boxes), ("scores", merged.scores), ("labels", merged.labels),
                             ("support", merged.support)):
                self.out[key].append(val)
            self.failed.append(bad)
        self.n_seen += self.n

    def finish(self) -> DetectionResult:
        return DetectionResult(**self.out, views=tuple(self.views), weights=np.asarray(self.weights),
                               forward_passes=self.n_seen * len(self.views), seconds=time.perf_counter() - self.t0,
                               classes=self.task.classes, failed=np.asarray(self.failed, dtype=bool),
                               errors=dict(sorted(self.errors.items())))


class Detector(Front):
    """Test-time augmentation for an object detector.

    Parameters (besides those :class:`~ttakit.Classifier` shares:
    ``data_layout``, ``model_layout``, ``preprocess``, ``batch_size``,
    ``dedupe``, ``device``, ``model_options``, ``runtime``, ``on_error``):

    merge
        ``"wbf"`` (default), ``"nms"``, ``"soft_nms"`` or a
        :class:`~ttakit.merge.boxes.BoxMerge`; ``merge_options`` are its
        parameters (``iou_thr``, ``conf_type``, ``min_views``, ``method``,
        ``sigma``, ``score_thr``, ``skip_box_thr``).
    box_format, normalized
        How the model's boxes are written (see the module's documentation);
        results are written the same way, in the input's frame.
    decode
        A function from the model's raw output for a batch to one of the
        accepted forms (e.g. :func:`ttakit.zoo.yolox.decoder`).
    classes
        Optional class names.
    adapt
        ``"norm"`` (or :class:`ttakit.adapt.Norm`): batch-norm statistics
        from the call's images, mixed with the model's own, for a PyTorch
        model with batch norm, guarded as :class:`~ttakit.Classifier`'s.
        Tent and MEMO are refused: they minimise an entropy of class
        predictions, and a detector's boxes, kept by its own score threshold
        and NMS, give no differentiable per-image class distribution in
        general. The model passed is never changed.
    """

    PARAMS = ("model", "policy", "merge", "merge_options", "box_format", "normalized", "decode",
              "classes", "adapt") + COMMON

    #: why detection has no entropy objective (adapt="tent"/"memo" are refused)
    NO_OBJECTIVE = ("a detector's output (boxes and scores after its own score threshold and non-maximum "
                    "suppression, often a decoded or scripted graph) has no differentiable per-image class "
                    "distribution to take the entropy of in general")

    def __init__(self, model, policy="identity", merge="wbf", *, merge_options: dict | None = None,
                 box_format: str = "xyxy", normalized: bool = False, decode=None, classes=None,
                 data_layout: str = "NCHW", model_layout: str | None = None, preprocess=None,
                 batch_size: int | None = None, dedupe: bool = True, device=None, model_options: dict | None = None,
                 runtime: str = "eager", on_error: str = "raise", adapt=None):
        self._init(dict(locals()))

    def adapt_objective(self, task):
        return self.NO_OBJECTIVE

    def make_task(self, policy):
        merge = get_box_merge(self.merge, **dict(self.merge_options or {}))
        return DetectionTask(merge, self.box_format, self.normalized, self.decode, self.classes, self.on_error)

    def run(self, x) -> DetectionResult:
        """Merged detections for images ``x`` (an array or tensor in
        ``data_layout``, or an iterable of batches)."""
        return self._run(x)

    def predict(self, x) -> list[dict]:
        """One ``{"boxes", "scores", "labels", "support"}`` per image."""
        res = self.run(x)
        return [res[i] for i in range(len(res))]
