"""Image classification with test-time augmentation."""

from __future__ import annotations

import numbers
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import engine
from ..errors import InputError, ModelOutputError
from ..merge import Merge, get_merge, to_probs
from ..merge.learned import merge_from_aggregation
from ..models import as_model
from ..models.base import check_layout
from ..policy import Policy
from ..views import View
from ..views.photometric import _Photometric

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
    views: tuple[View, ...]      #: the distinct views that were run
    weights: np.ndarray          #: their weights
    forward_passes: int          #: model inputs evaluated (distinct views x inputs)
    seconds: float               #: wall time
    output_kind: str             #: "probs" or "logits": how the model's outputs were read
    view_probs: np.ndarray | None = None  #: (V, N, C) per-view probabilities, on request
    classes: Sequence[str] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def class_names(self) -> list[str] | None:
        return None if self.classes is None else [self.classes[i] for i in self.labels]

    @property
    def throughput(self) -> float:
        """Inputs per second."""
        return len(self) / self.seconds if self.seconds > 0 else float("nan")


class Classifier:
    """Test-time augmentation for an image classifier.

    Parameters
    ----------
    model
        A ``torch.nn.Module``, Keras model, ONNX Runtime session or file,
        scikit-learn estimator, callable, or :class:`~ttakit.models.ModelAdapter`.
    policy
        Views to run: a spec string (``"identity + hflip"``, ``"d4"``...), a
        :class:`~ttakit.Policy`, a view or a list of views. ``None`` is no TTA.
    merge
        How to merge views: ``"mean"`` (soft voting), ``"sum"``, ``"gmean"``,
        ``"max"``, ``"min"``, ``"vote"``, ``"sharpen"``, ``"logits"``, or a
        :class:`~ttakit.merge.Merge`. Default: the policy's own aggregation
        (a tuned policy's temperature or learned weights), else ``"mean"``.
    layout
        Layout of the inputs you pass: ``"NCHW"`` or ``"NHWC"``.
    output
        What the model returns: ``"probs"``, ``"logits"``, or ``"auto"`` (rows
        of non-negative numbers summing to 1 on the first batch mean
        probabilities; every later batch must agree).
    preprocess
        Applied to each view after augmentation (e.g. ``Normalize(mean, std)``).
    batch_size
        Model inputs per forward pass. Default: 1024 on GPU; on CPU 256, or
        512 when glibc's allocator is tuned (``ttakit.engine.tune_allocator``
        or the ``MALLOC_*`` variables the Makefile sets).
    dedupe
        Run each distinct view once, weighted by its multiplicity (exactly
        the same merged result). ``False`` runs every copy, for comparison.
    classes
        Optional class names.
    progress
        Show a progress bar.
    model_kwargs
        Passed to the adapter (``device=``, ``channels_last=`` ...). ``layout=``
        is the layout of your inputs; for a model that consumes another layout,
        pass an adapter (``CallableModel(fn, layout="NHWC")``).

    uint8 inputs are scaled to ``[0, 1]`` before the views; float inputs are
    used as given.
    """

    def __init__(self, model, policy="identity", merge: str | Merge | None = None, *, data_layout: str = "NCHW",
                 model_layout: str | None = None, output: str = "auto", preprocess=None,
                 batch_size: int | None = None, dedupe: bool = True, classes: Sequence[str] | None = None,
                 progress: bool = False, device=None, model_options: dict | None = None):
        opts = dict(model_options or {})
        if device is not None:
            opts["device"] = device
        if model_layout is not None:
            opts["layout"] = model_layout
        self.adapter = as_model(model, **opts)
        self.policy = Policy.coerce(policy)
        self.merge = merge_from_aggregation(self.policy.aggregation) if merge is None else get_merge(merge)
        self.layout = check_layout(data_layout)
        if output not in OUTPUT_KINDS:
            raise InputError(f"output must be one of {', '.join(OUTPUT_KINDS)}, got {output!r}")
        self.output = output
        self.preprocess = preprocess
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
                                       or batch_size < 1):
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = None if batch_size is None else int(batch_size)
        self.dedupe = dedupe
        self.classes = list(classes) if classes is not None else None
        self.progress = progress
        self._detected: str | None = None

    def __repr__(self) -> str:
        return (f"Classifier({self.adapter!r}, policy={self.policy.spec!r}, merge={self.merge!r}, "
                f"data_layout={self.layout!r}, output={self.output!r})")

    # -- public API ---------------------------------------------------------
    @property
    def run_policy(self) -> Policy:
        """The policy as run: deduplicated unless ``dedupe=False``."""
        return self.policy.unique() if self.dedupe else self.policy

    def predict_proba(self, x) -> np.ndarray:
        """Merged class probabilities, shape ``(N, C)``."""
        return self.run(x).probs

    def predict(self, x) -> np.ndarray:
        """Predicted class indices, shape ``(N,)``."""
        return self.run(x).labels

    def run(self, x, *, return_views: bool = False, progress: bool | None = None) -> ClassificationResult:
        """Predict with TTA. ``x`` is an array or tensor of inputs in
        ``layout``, or an iterable of such batches (``(x, y)`` pairs are fine).
        ``return_views`` keeps the per-view probabilities ``(V, N, C)``."""
        t0 = time.perf_counter()
        pol = self.run_policy
        views = list(pol.views)
        weights = torch.as_tensor(pol.weights, dtype=torch.float32)
        clip_check = self._clip_check(views)
        total = engine.count_inputs(x)
        bar = _progress_bar(total, self.progress if progress is None else progress)
        parts: dict[str, list] = {k: [] for k in ("probs", "scores", "labels", "entropy", "spread", "agreement", "views")}
        n_seen = 0
        for start, outs in engine.iter_view_outputs(self.adapter, x, views, layout=self.layout,
                                                    batch_size=self.batch_size, preprocess=self.preprocess,
                                                    input_check=clip_check):
            kind = self._output_kind(outs, start)
            w = weights.to(outs.device)
            scores = self.merge(outs, w, kind)
            labels = self.merge.labels(scores, outs, w, kind)
            probs = scores if self.merge.normalised else scores / scores.sum(-1, keepdim=True)
            view_p = to_probs(outs, kind)
            stats = _uncertainty(view_p, probs, labels, w)
            for k, v in (("probs", probs), ("scores", scores), ("labels", labels), *stats.items()):
                parts[k].append(v.cpu())
            if return_views:
                parts["views"].append(view_p.cpu())
            n_seen += outs.shape[1]
            if bar is not None:
                bar.update(outs.shape[1])
        if bar is not None:
            bar.close()
        n_classes = parts["probs"][0].shape[-1] if parts["probs"] else len(self.classes or [])

        def cat(k, dim=0, shape=(0,)):
            return torch.cat(parts[k], dim).numpy() if parts[k] else np.zeros(shape, dtype=np.float32)

        return ClassificationResult(
            probs=cat("probs", shape=(0, n_classes)),
            labels=cat("labels", shape=(0,)).astype(np.int64),
            scores=cat("scores", shape=(0, n_classes)),
            entropy=cat("entropy"),
            spread=cat("spread"),
            agreement=cat("agreement"),
            views=tuple(views),
            weights=pol.weights,
            forward_passes=n_seen * len(views),
            seconds=time.perf_counter() - t0,
            output_kind=self._detected or (self.output if self.output != "auto" else "probs"),
            view_probs=cat("views", dim=1, shape=(len(views), 0, n_classes)) if return_views else None,
            classes=self.classes,
        )

    # -- checks ---------------------------------------------------------------
    def _output_kind(self, outs: torch.Tensor, start: int) -> str:
        if outs.ndim != 3:
            raise ModelOutputError(f"a classifier must return one row of class scores per input, shape (n, C); "
                                   f"got per-input shape {tuple(outs.shape[2:]) or '()'}")
        if not torch.isfinite(outs).all():
            raise ModelOutputError(f"the model returned NaN or infinite values (chunk starting at input {start})")
        if self.classes is not None and outs.shape[-1] != len(self.classes):
            raise ModelOutputError(f"the model returned {outs.shape[-1]} classes but {len(self.classes)} "
                                   f"class names were given")
        looks_probs = bool((outs.min() >= -1e-6) and ((outs.sum(-1) - 1).abs().max() <= PROB_TOLERANCE))
        declared = self.output if self.output != "auto" else self._detected
        if declared is None:
            self._detected = "probs" if looks_probs else "logits"
            return self._detected
        if declared == "probs" and not looks_probs:
            sums = outs.sum(-1)
            worst = float(sums.flatten()[(sums - 1).abs().flatten().argmax()])
            how = "declared" if self.output == "probs" else "detected from the first batch"
            raise ModelOutputError(
                f"model outputs were {how} as probabilities, but rows are not distributions "
                f"(a row sums to {worst:.4g}, min value {float(outs.min()):.4g}) in the chunk starting at "
                f"input {start}. If the model returns logits, pass output='logits'")
        if self.output == "auto" and self._detected is None:
            self._detected = declared
        return declared

    def _clip_check(self, views: list[View]):
        def clipping(v: View) -> bool:
            inner = getattr(v, "views", (v,))
            return any(isinstance(u, _Photometric) and u.clip for u in inner)

        if not any(clipping(v) for v in views):
            return None

        def check(x: torch.Tensor, start: int) -> None:
            lo, hi = float(x.min()), float(x.max())
            if lo < -1e-6 or hi > 1 + 1e-6:
                raise InputError(
                    f"the policy has photometric views that clip to [0, 1], but the inputs range over "
                    f"[{lo:.4g}, {hi:.4g}] (chunk starting at input {start}). Pass uint8 pixels or floats in "
                    f"[0, 1] and move normalisation into preprocess=, or use clip=false on those views")
        return check


def _uncertainty(view_p: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, w: torch.Tensor):
    wn = (w / w.sum()).to(view_p.dtype)
    p_label = view_p.gather(-1, labels.view(1, -1, 1).expand(view_p.shape[0], -1, 1)).squeeze(-1)  # (V, n)
    mean_label = (p_label * wn[:, None]).sum(0)
    spread = ((p_label - mean_label) ** 2 * wn[:, None]).sum(0).clamp_min(0).sqrt()
    agree = ((view_p.argmax(-1) == labels[None]).to(view_p.dtype) * wn[:, None]).sum(0)
    p = probs.clamp_min(1e-12)
    entropy = -(probs * p.log()).sum(-1)
    return {"entropy": entropy, "spread": spread, "agreement": agree}


def _progress_bar(total, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="ttakit")
