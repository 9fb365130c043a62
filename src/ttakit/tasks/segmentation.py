"""Semantic segmentation with test-time augmentation: per-pixel class maps
from every view, de-augmented back to the input frame and merged on the fly.

Each view's output ``(n, K, H', W')`` (logits or probabilities; one channel
means a binary foreground map; ``(n, H', W')`` integers are label maps) is
resized to the view's own size when the model has a stride, mapped back onto
the input grid by the view's inverse (exact for flips, quarter turns and
transposes of any shape; bilinear for scores and nearest for label maps
otherwise) and folded into the merge's accumulator with the view's coverage
mask, so a crop, a zoom or a shift counts only on the pixels it saw. A chunk
holds the accumulators and one view's output, never views x batch outputs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..adapt.session import model_output
from ..errors import InputError, ModelOutputError
from ..merge import Merge, get_merge, normalise, to_probs
from ..views import identity
from .base import check_on_error, ResultBuffer, Task, TaskRun
from .front import COMMON, Front

SEG_OUTPUTS = ("auto", "probs", "logits", "labels")
PROB_TOLERANCE = 1e-3


@dataclass
class SegmentationResult:
    """What :meth:`Segmenter.run` returns (NumPy arrays, one entry per input)."""

    labels: np.ndarray                 #: (N, H, W) int64 merged class per pixel
    probs: np.ndarray | None           #: (N, K, H, W) merged probabilities (None with labels_only)
    entropy: np.ndarray | None         #: (N, H, W) entropy of the merged probabilities (nats)
    variance: np.ndarray | None        #: (N, H, W) weighted variance over views of the label's probability
    agreement: np.ndarray | None       #: (N, H, W) weighted share of views whose top class is the label
    vvc: np.ndarray | None             #: (N,) volume variation coefficient (std / mean of foreground volume)
    views: tuple = ()
    weights: np.ndarray | None = None
    forward_passes: int = 0
    seconds: float = 0.0
    output_kind: str = "probs"
    classes: Sequence[str] | None = field(default=None, repr=False)
    failed: np.ndarray | None = None   #: (N,) inputs that failed (on_error="mark")
    errors: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


def nearest_back(labels: torch.Tensor, view, size) -> torch.Tensor:
    """Label maps ``(n, H', W')`` in a view's frame brought back to the
    input grid ``(n, H, W)`` by nearest neighbour: each input pixel takes the
    label of the view pixel its centre maps into (clamped at the edges; the
    view's ``valid_mask`` says which pixels it really saw)."""
    h, w = size
    vh, vw = labels.shape[-2:]
    m = view.matrix(size)
    ys, xs = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    vx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    vy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    cols = np.clip(np.floor(vx + 1e-9), 0, vw - 1).astype(np.int64)
    rows = np.clip(np.floor(vy + 1e-9), 0, vh - 1).astype(np.int64)
    idx = torch.from_numpy((rows * vw + cols).ravel()).to(labels.device)
    return labels.reshape(labels.shape[0], -1).index_select(1, idx).reshape(labels.shape[0], h, w)


class SegmentationTask(Task):
    """Per-pixel class maps per view, merged by ``merge`` along the class axis."""

    def __init__(self, merge: Merge, output: str = "auto", classes: Sequence[str] | None = None,
                 output_layout: str = "NCHW", labels_only: bool = False, uncertainty: bool = True,
                 background: int | None = 0, on_error: str = "raise"):
        if output not in SEG_OUTPUTS:
            raise InputError(f"output must be one of {', '.join(SEG_OUTPUTS)}, got {output!r}")
        if output_layout not in ("NCHW", "NHWC"):
            raise InputError(f"output_layout must be 'NCHW' or 'NHWC', got {output_layout!r}")
        check_on_error(on_error)
        self.merge, self.output, self.output_layout = merge, output, output_layout
        self.classes = None if classes is None else list(classes)
        self.labels_only, self.uncertainty, self.background = bool(labels_only), bool(uncertainty), background
        self.on_error = on_error
        if output == "labels" and self.classes is None:
            raise InputError("label-map outputs need the classes (classes=[...] names, or a number of classes)")

    def start(self, views, weights, n):
        return SegmentationRun(self, views, weights, n)


class SegmentationRun(TaskRun):
    task: SegmentationTask

    def __init__(self, task, views, weights, n):
        super().__init__(task, views, weights, n)
        self.kind = None if task.output == "auto" else task.output
        self.bufs: dict[str, ResultBuffer] | None = None
        self.masks: dict[tuple, torch.Tensor | None] = {}
        self.t0 = time.perf_counter()

    def begin(self, x, start):
        self.start_index, self.n, self.size = start, x.shape[0], (x.shape[-2], x.shape[-1])
        self.begin_failures(x.shape[0], start, x.device)
        self.acc = self.stats = None

    # -- one view ---------------------------------------------------------------
    def _mask(self, i: int, device) -> torch.Tensor | None:
        key = (i, self.size)
        if key not in self.masks:
            m = self.views[i].valid_mask(self.size, device)
            self.masks[key] = None if bool(m.all()) else m[None, None]
        return self.masks[key]

    def _scores(self, i: int, y: torch.Tensor) -> tuple[torch.Tensor, str]:
        """The view's output as class maps on the input grid, and their kind."""
        view = self.views[i]
        vsize = tuple(view.output_size(self.size))
        n_cls = len(self.task.classes) if self.task.classes is not None else None
        if y.ndim == 3 or self.kind == "labels":  # integer label maps
            if y.ndim == 4 and y.shape[1] == 1:
                y = y[:, 0]
            if y.ndim != 3:
                raise ModelOutputError(f"label-map outputs must be (n, H, W), got per-input shape {tuple(y.shape[1:])}")
            self.kind = "labels"
            lab = y.round().long()
            if tuple(lab.shape[-2:]) != vsize:
                lab = F.interpolate(lab[:, None].float(), size=vsize, mode="nearest")[:, 0].long()
            if n_cls is None:
                raise InputError("label-map outputs need the classes (classes=[...])")
            if lab.min() < 0 or lab.max() >= n_cls:
                raise ModelOutputError(f"label maps hold values outside [0, {n_cls}) for {n_cls} classes")
            back = nearest_back(lab, view, self.size)
            return torch.zeros((lab.shape[0], n_cls, *self.size), device=y.device).scatter_(
                1, back[:, None], 1.0), "probs"
        if y.ndim != 4:
            raise ModelOutputError(f"a segmenter must return class maps (n, K, H, W) or label maps (n, H, W); "
                                   f"got per-input shape {tuple(y.shape[1:])}")
        if self.task.output_layout == "NHWC":
            y = y.permute(0, 3, 1, 2)
        if n_cls is not None and y.shape[1] not in (n_cls, 1):
            raise ModelOutputError(f"the model returned {y.shape[1]} classes but {n_cls} class names were given")
        kind = self._kind(y)
        if y.shape[1] == 1:  # binary: a foreground map
            p = torch.sigmoid(y) if kind == "logits" else y.clamp(0, 1)
            y, kind = torch.cat([1 - p, p], 1), "probs"
        if tuple(y.shape[-2:]) != vsize:
            y = F.interpolate(y, size=vsize, mode="bilinear", align_corners=False)
        return view.invert_dense(y, self.size), kind

    def _kind(self, y: torch.Tensor) -> str:
        if self.kind in ("probs", "logits"):
            return self.kind
        if y.shape[1] == 1:
            # values outside [0, 1] can only be logits; inside, a weak net's
            # logits look like probabilities, so that is not guessed
            if bool(y.min() >= -1e-6 and y.max() <= 1 + 1e-6):
                raise ModelOutputError(
                    "a one-channel output with every value in [0, 1] may be probabilities or logits (a weakly "
                    "trained net's logits can lie there too): say which with output='probs' or output='logits'")
            looks = False
        else:  # per-pixel sums of 1 across the classes: reliably probabilities
            looks = bool(y.min() >= -1e-6 and (y.sum(1) - 1).abs().max() <= PROB_TOLERANCE)
        self.kind = "probs" if looks else "logits"
        return self.kind

    def back(self, i, out) -> tuple[torch.Tensor, str, torch.Tensor | None]:
        """View ``i``'s output on the input grid, its kind, and the view's
        coverage mask (None: every pixel); inputs with non-finite outputs fail."""
        bad = ~torch.isfinite(out.reshape(out.shape[0], -1)).all(1)
        if bad.any():
            self.fail(bad, f"the model returned NaN or infinite values (view {self.views[i]!r})", ModelOutputError)
            out = out.masked_fill(bad.view(-1, *([1] * (out.ndim - 1))), 0.0)
        back, kind = self._scores(i, out)
        return back, kind, self._mask(i, back.device)

    def add(self, i, out):
        back, kind, mask = self.back(i, out)
        if self.acc is None:
            self.acc = self.task.merge.start(self.views, self.weights, kind, dim=1)
            self.out_kind = kind
            if self.task.uncertainty:
                self.stats = _PixelStats(back.shape, back.device)
        self.acc.add(i, back, mask)
        if self.stats is not None:
            self.stats.add(self.weights[i], to_probs(back, kind, 1), mask, self.task.background)

    def end(self):
        scores = self.acc.result()
        labels = self.acc.labels(scores)
        probs = scores if self.task.merge.normalised else normalise(scores, 1)
        out = {"labels": labels}
        if not self.task.labels_only:
            out["probs"] = probs
        if self.stats is not None:
            out["entropy"] = -(probs * probs.clamp_min(1e-12).log()).sum(1)
            out["variance"], out["agreement"] = self.stats.at(labels)
            out["vvc"] = self.stats.vvc()
        failed = self.chunk_failed
        if failed is not None and failed.any():
            for k, v in out.items():
                fill = -1 if k == "labels" else float("nan")
                out[k] = v.masked_fill(failed.view(-1, *([1] * (v.ndim - 1))), fill)
        if self.bufs is None:
            self.bufs = {k: ResultBuffer(self.n_expected, tuple(v.shape[1:]),
                                         np.int64 if k == "labels" else np.float32) for k, v in out.items()}
            self.bufs["failed"] = ResultBuffer(self.n_expected, (), np.bool_)
        for k, v in out.items():
            self.bufs[k].write(self.start_index, v.detach().cpu())
        self.bufs["failed"].write(self.start_index, (failed if failed is not None
                                                     else torch.zeros(self.n, dtype=torch.bool)).cpu())
        self.n_seen += self.n
        self.acc = self.stats = None

    def finish(self) -> SegmentationResult:
        get = (lambda k: None if self.bufs is None or k not in self.bufs else self.bufs[k].result())
        labels = get("labels")
        return SegmentationResult(
            labels=labels if labels is not None else np.zeros((0, 0, 0), np.int64), probs=get("probs"),
            entropy=get("entropy"), variance=get("variance"), agreement=get("agreement"), vvc=get("vvc"),
            views=tuple(self.views), weights=np.asarray(self.weights), forward_passes=self.n_seen * len(self.views),
            seconds=time.perf_counter() - self.t0, output_kind=self.kind or "probs", classes=self.task.classes,
            failed=get("failed"), errors=dict(sorted(self.errors.items())))


class _PixelStats:
    """Per pixel and class: the running weighted mean and squared deviation
    of the views' probabilities (weights are view weight x coverage), the
    weighted top-1 votes; per image: the weighted moments of each view's
    foreground volume (for the volume variation coefficient)."""

    def __init__(self, shape, device):
        self.w = torch.zeros((shape[0], 1, *shape[2:]), device=device)
        self.mean = torch.zeros(shape, device=device)
        self.m2 = torch.zeros(shape, device=device)
        self.votes = torch.zeros(shape, device=device)
        self.vol = torch.zeros((3, shape[0]), dtype=torch.float64, device=device)

    def add(self, w: float, p: torch.Tensor, mask: torch.Tensor | None, background) -> None:
        if w <= 0:
            return
        wm = torch.full_like(self.w, w) if mask is None else mask.to(p.dtype).expand_as(self.w) * w
        self.w += wm
        delta = p - self.mean
        self.mean += delta * (wm / self.w.clamp_min(1e-12))
        self.m2 += wm * delta * (p - self.mean)
        top = p.max(1, keepdim=True).indices  # argmax, without its slow path along the class axis
        self.votes.scatter_add_(1, top, wm)
        if background is not None:
            covered = wm[:, 0] > 0
            fg = ((top[:, 0] != background) & covered).sum((1, 2)).double()
            share = fg / covered.sum((1, 2)).clamp_min(1).double()  # foreground share of the pixels seen
            self.vol += torch.stack([torch.full_like(share, w), w * share, w * share * share])

    def at(self, labels: torch.Tensor):
        idx = labels[:, None]
        w = self.w.clamp_min(1e-12)
        var = (self.m2.gather(1, idx) / w).clamp_min(0)[:, 0]
        agree = (self.votes.gather(1, idx) / w)[:, 0]
        return var, agree

    def vvc(self) -> torch.Tensor:
        sw, s1, s2 = self.vol
        mean = s1 / sw.clamp_min(1e-12)
        var = (s2 / sw.clamp_min(1e-12) - mean * mean).clamp_min(0)
        return torch.where(mean > 0, var.sqrt() / mean, torch.full_like(mean, float("nan"))).float()


class PixelScores:
    """The entropy objective of ``Segmenter(adapt="tent"|"memo")``: each
    view's per-pixel class distributions brought back to the input grid as
    the task merges them (output stride, layout, one-channel maps and the
    view's coverage included); the loss is the per-pixel class entropy,
    averaged over the pixels (see :class:`ttakit.adapt.session.ClassScores`)."""

    def __init__(self, task: SegmentationTask):
        self.task = task

    def scores(self, raw) -> torch.Tensor:
        y = model_output(raw, dims=None)
        if y.dim() != 4 or not y.is_floating_point():
            raise ModelOutputError(f"adapt='tent' and 'memo' minimise the per-pixel class entropy: they need class "
                                   f"maps (n, K, H, W), got per-input shape {tuple(y.shape[1:])}; label maps have "
                                   f"no entropy (adapt='norm' works with them)")
        return y

    def probs(self, scores: torch.Tensor, view=None, size=None):
        run = SegmentationRun(self.task, [view if view is not None else identity()], [1.0], None)
        run.size = tuple(size)
        back, kind = run._scores(0, scores)
        return to_probs(back, kind, 1), run._mask(0, back.device)


class Segmenter(Front):
    """Test-time augmentation for a semantic segmentation model.

    The model returns per-pixel class scores ``(n, K, H', W')`` (logits or
    probabilities, any output stride; ``K = 1`` is a binary foreground map)
    or label maps ``(n, H', W')``. Every view's output is brought back to the
    input frame and merged as it arrives.

    Parameters (besides those :class:`~ttakit.Classifier` shares:
    ``data_layout``, ``model_layout``, ``preprocess``, ``batch_size``,
    ``dedupe``, ``device``, ``model_options``, ``runtime``, ``on_error``):

    merge
        ``"mean"`` (default), ``"gmean"``, ``"max"``, ``"vote"`` or any
        class-axis merge (:func:`ttakit.get_merge`), applied per pixel.
    output
        ``"auto"``, ``"probs"``, ``"logits"`` or ``"labels"`` (label maps
        need ``classes``). ``"auto"`` decides only where the output shows
        it: class maps whose pixels sum to 1 are probabilities, otherwise
        logits; a one-channel map is logits when a value lies outside
        [0, 1], and an error asks to declare it when every value lies
        inside (a weak net's logits can).
    output_layout
        ``"NCHW"`` (default) or ``"NHWC"`` for the model's class maps.
    classes
        Class names (or ``range(K)``).
    labels_only
        Keep only the merged labels, not the ``(N, K, H, W)`` probabilities.
    uncertainty
        Per-pixel entropy, variance and agreement, and the per-image volume
        variation coefficient (``False`` saves three class maps per chunk).
    background
        The class index that is not foreground for the volume variation
        coefficient (``None``: no VVC).
    adapt
        Test-time adaptation of a PyTorch model with batch norm, as
        :class:`~ttakit.Classifier` takes it (``"norm"``, ``"tent"``,
        ``"memo"`` or a :mod:`ttakit.adapt` setting): the statistics come
        from the call's images, counted in images; Tent and MEMO minimise the
        per-pixel class entropy, averaged over the pixels (MEMO: of the
        views' mean, each view brought back to the input grid). Label-map
        outputs take ``"norm"`` only. The model passed is never changed.
    """

    PARAMS = ("model", "policy", "merge", "output", "output_layout", "classes", "labels_only", "uncertainty",
              "background", "adapt") + COMMON

    def __init__(self, model, policy="identity", merge: str | Merge = "mean", *, output: str = "auto",
                 output_layout: str = "NCHW", classes=None, labels_only: bool = False, uncertainty: bool = True,
                 background: int | None = 0, data_layout: str = "NCHW", model_layout: str | None = None,
                 preprocess=None, batch_size: int | None = None, dedupe: bool = True, device=None,
                 model_options: dict | None = None, runtime: str = "eager",
                 on_error: str = "raise", adapt=None):
        self._init(dict(locals()))

    def adapt_objective(self, task):
        if task.output == "labels":
            return "label-map outputs (output='labels') have no class probabilities to take it of"
        return PixelScores(task)

    def make_task(self, policy):
        return SegmentationTask(get_merge(self.merge), self.output, _class_list(self.classes), self.output_layout,
                                self.labels_only, self.uncertainty, self.background, self.on_error)

    def run(self, x) -> SegmentationResult:
        """Merged label maps, probabilities and uncertainty for images ``x``
        (an array or tensor in ``data_layout``, or an iterable of batches)."""
        return self._run(x)

    def predict(self, x) -> np.ndarray:
        """Merged labels ``(N, H, W)``."""
        return self.run(x).labels

    def predict_proba(self, x) -> np.ndarray:
        """Merged probabilities ``(N, K, H, W)``."""
        res = self.run(x)
        if res.probs is None:
            raise InputError("labels_only=True keeps no probabilities; use predict or set labels_only=False")
        return res.probs


def _class_list(classes):
    if classes is None:
        return None
    if isinstance(classes, int):
        return [str(i) for i in range(classes)]
    return list(classes)
