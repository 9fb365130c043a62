"""Image classification with test-time augmentation: a task on the one run
loop (:mod:`ttakit.engine`) and the :class:`Classifier` users call."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import adapt, engine
from ..errors import InputError, ModelOutputError
from ..inputs import ImageInputs, check_layout
from ..merge import Mean, Merge, get_merge
from ..models import Normalize
from ..policy import AdaptivePolicy, Policy
from .front import ROWS, cached_adapter, row_inputs
from .adaptive import run_adaptive
from .classification_run import OUTPUT_KINDS, ClassificationResult, ClassificationTask


_PARAMS = ("model", "policy", "merge", "data_layout", "model_layout", "output", "preprocess", "batch_size",
           "dedupe", "classes", "progress", "device", "model_options", "runtime", "on_error", "adapt")


@dataclass(frozen=True)
class _Setup:
    adapter: object
    inputs: ImageInputs
    policy: Policy
    run_policy: Policy
    merge: Merge
    task: ClassificationTask
    batch_size: int | None
    preprocess: object = None
    adaptation: object = None


@dataclass(frozen=True)
class _Contracted:
    """The options a call uses: the caller's, completed by (and checked
    against) what the policy was tuned with (its :class:`InputContract`)."""

    preprocess: object
    model_layout: str | None
    output: str
    classes: list | None

    @classmethod
    def resolve(cls, policy: Policy, preprocess=None, model_layout=None, output="auto", classes=None) -> "_Contracted":
        pre, layout = preprocess, model_layout
        classes = None if classes is None else list(classes)
        k = policy.inputs
        if k is None:
            return cls(pre, layout, output, classes)

        def clash(what: str, given, tuned):
            return InputError(f"the policy was tuned with {what}={tuned!r} but {what}={given!r} was given; "
                              f"pass the same, or leave {what} unset to use the policy's")

        if k.mean is not None:
            if pre is None:
                pre = Normalize(k.mean, k.std)
            elif not isinstance(pre, Normalize):
                raise InputError(f"the policy was tuned with preprocess=Normalize(mean={list(k.mean)}, "
                                 f"std={list(k.std)}) but another preprocess was given; leave preprocess unset "
                                 f"to use the policy's")
            elif not (np.allclose(pre.mean_values, k.mean, atol=1e-6) and np.allclose(pre.std_values, k.std,
                                                                                         atol=1e-6)):
                raise clash("preprocess", pre, Normalize(k.mean, k.std))
        if k.model_layout is not None:
            if layout is not None and check_layout(layout, "model_layout") != k.model_layout:
                raise clash("model_layout", layout, k.model_layout)
            layout = k.model_layout
        if k.output is not None:
            if output != "auto" and output != k.output:
                raise clash("output", output, k.output)
            output = k.output
        if k.classes is not None:
            if classes is not None and tuple(classes) != k.classes:
                raise InputError(f"the policy was tuned with {len(k.classes)} classes "
                                 f"({', '.join(k.classes[:5])}{', ...' if len(k.classes) > 5 else ''}) but other "
                                 f"class names were given; leave classes unset to use the policy's")
            classes = list(k.classes)
        return cls(pre, layout, output, classes)


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
        An adaptive policy (``"identity @ margin<0.2 | hflip + vflip"``, an
        :class:`~ttakit.AdaptivePolicy`) runs in stages: only inputs still
        uncertain after a stage get the next one's views (``result.forwards``
        says how many each got); it runs each distinct view once whatever
        ``dedupe`` says, and ``return_views`` is not available with it.
    merge
        How to merge views: ``"mean"`` (soft voting), ``"sum"``, ``"gmean"``,
        ``"max"``, ``"min"``, ``"vote"``, ``"sharpen"``, ``"logits"``, or a
        :class:`~ttakit.merge.Merge`. Default: the policy's own merge (a tuned
        policy's temperature or learned weights), else ``"mean"``.
    data_layout
        Layout of the inputs you pass: ``"NCHW"`` or ``"NHWC"`` images, or
        ``"rows"``: tabular rows ``(N, F)`` for row views
        (:mod:`ttakit.views.rows`) with a torch, Keras or ONNX model (fed
        float32) or a callable (float64); for scikit-learn estimators see
        :mod:`ttakit.sklearn`.
    model_layout
        Layout the model consumes. Default: the adapter's own (NCHW for torch,
        read from the model for Keras and ONNX); for a scikit-learn estimator
        or a callable, ``data_layout`` (it was fitted on your arrays as they are).
    output
        What the model returns: ``"probs"``, ``"logits"``, or ``"auto"`` (rows
        of non-negative numbers summing to 1 on the first output mean
        probabilities; every later output must agree). Decided per call.
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
    on_error
        What an input that cannot be used does (NaN or infinite pixels, or a
        model output with NaN or infinity for it): ``"raise"`` (default) stops
        with an error naming its index; ``"mark"`` fails it alone, goes on with
        the others and reports it in ``result.failed`` / ``result.errors``
        (NaN probabilities and label -1 on its row).
    device, model_options
        Passed to the adapter (``device="cuda"``; ``model_options={"dtype":
        torch.bfloat16, "channels_last": True}``, ``{"runtime": "onnx"}`` for Keras).
    runtime
        For a PyTorch model: ``"eager"`` (default) runs it as it is;
        ``"onnx"`` exports it once to ONNX Runtime, ``"compile"`` uses
        ``torch.compile`` -- each checked against the eager model on the
        first batch (outputs within 1e-4) and given up with a
        :class:`~ttakit.errors.RuntimeFallbackWarning` where it fails or
        differs (see :mod:`ttakit.models.runtime`).
    adapt
        Test-time adaptation of a PyTorch model while it predicts, composed
        with the policy: ``None`` (default), ``"norm"`` (batch-norm
        statistics from the call's inputs, mixed with the model's own),
        ``"tent"`` (also entropy minimisation of the normalisation layers'
        affine parameters), ``"memo"`` (per input, the entropy of the mean
        prediction over the policy's views), or a
        :class:`ttakit.adapt.Norm` / ``Tent`` / ``Memo`` with its settings.
        Each call adapts a private copy of the model over its own inputs, in
        chunks of ``batch_size`` (the model passed is never changed, nothing
        carries over to the next call, concurrent calls stay independent);
        guarded: the model is used as it is until the inputs' statistics
        differ from the model's (see :mod:`ttakit.adapt`, docs/adaptation.md).

    Notes
    -----
    The arguments are kept as given (``get_params``/``set_params`` and
    scikit-learn's ``clone`` work); the object holds no state between calls
    and may be called from several threads at once. uint8 inputs are scaled
    to ``[0, 1]`` before the views; float inputs are used as given.
    """

    def __init__(self, model, policy="identity", merge: str | Merge | None = None, *, data_layout: str = "NCHW",
                 model_layout: str | None = None, output: str = "auto", preprocess=None,
                 batch_size: int | None = None, dedupe: bool = True, classes: Sequence[str] | None = None,
                 progress: bool = False, device=None, model_options: dict | None = None,
                 runtime: str = "eager", on_error: str = "raise", adapt=None):
        self.model = model
        self.policy = policy
        self.merge = merge
        self.data_layout = data_layout
        self.model_layout = model_layout
        self.output = output
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.dedupe = dedupe
        self.classes = classes
        self.progress = progress
        self.device = device
        self.model_options = model_options
        self.runtime = runtime
        self.on_error = on_error
        self.adapt = adapt
        self._setup()  # validate the arguments now, so a mistake shows where it is made

    # -- scikit-learn conventions -------------------------------------------------
    def get_params(self, deep: bool = True) -> dict:
        """The constructor arguments, as given."""
        return {k: getattr(self, k) for k in _PARAMS}

    def set_params(self, **params) -> "Classifier":
        for k, v in params.items():
            if k not in _PARAMS:
                raise InputError(f"Classifier has no parameter {k!r}; valid: {', '.join(_PARAMS)}")
            setattr(self, k, v)
        self._setup()
        return self

    def __repr__(self) -> str:
        shown = [repr(self.model)[:60]]
        defaults = Classifier.__init__.__kwdefaults__ or {}
        for k in _PARAMS[1:]:
            v = getattr(self, k)
            default = {"policy": "identity", "merge": None}.get(k, defaults.get(k))
            if v is not default and v != default:
                shown.append(f"{k}={v!r}")
        return "Classifier(" + ", ".join(shown) + ")"

    def _setup(self) -> _Setup:
        """The objects the arguments stand for, rebuilt when an argument changes
        (the adapter only when a model argument does)."""
        key = tuple(id(getattr(self, k)) for k in _PARAMS)
        lock = self.__dict__.setdefault("_lock", threading.Lock())
        with lock:
            cached = self.__dict__.get("_cached")
            if cached is not None and cached[0] == key:
                return cached[1]
            rows = self.data_layout == ROWS
            data_layout = "NCHW" if rows else check_layout(self.data_layout)
            policy = Policy.coerce(self.policy)
            c = _Contracted.resolve(policy, self.preprocess, self.model_layout, self.output, self.classes)
            adapter = cached_adapter(self, data_layout, c.model_layout)
            merge = (policy.merge or Mean()) if self.merge is None else get_merge(self.merge)
            task = ClassificationTask(merge, c.output, c.classes, on_error=self.on_error)
            adaptation = adapt.coerce(self.adapt)
            if adaptation is not None:
                adapt.check_adaptable(adapter, adaptation)
                if isinstance(adaptation, adapt.Memo) and isinstance(policy, AdaptivePolicy) \
                        and len(policy.stages) > 1:
                    raise InputError("adapt='memo' needs a plain policy (its views are the adaptation's); an "
                                     "adaptive policy runs different views per input")
            setup = _Setup(adapter, row_inputs(adapter) if rows else ImageInputs(data_layout), policy,
                           policy.unique() if self.dedupe else policy, merge, task,
                           engine.check_batch_size(self.batch_size), c.preprocess, adaptation)
            self.__dict__["_cached"] = (key, setup)
            return setup

    def __getstate__(self):
        return {k: getattr(self, k) for k in _PARAMS}

    def __setstate__(self, state):
        self.__dict__.update(state)

    # -- public API ---------------------------------------------------------
    @property
    def adapter(self):
        """The model adapter the model argument stands for."""
        return self._setup().adapter

    @property
    def effective_merge(self) -> Merge:
        """The merge a call uses: ``merge`` if given, else the policy's own, else mean."""
        return self._setup().merge

    @property
    def run_policy(self) -> Policy:
        """The policy as run: deduplicated unless ``dedupe=False``."""
        return self._setup().run_policy

    def predict_proba(self, x) -> np.ndarray:
        """Merged class probabilities, shape ``(N, C)``."""
        return self.run(x).probs

    def predict(self, x) -> np.ndarray:
        """Predicted class indices, shape ``(N,)``."""
        return self.run(x).labels

    def run(self, x, *, return_views: bool = False, progress: bool | None = None) -> ClassificationResult:
        """Predict with TTA. ``x`` is an array or tensor of inputs in
        ``data_layout``, or an iterable of such batches (``(x, y)`` pairs are
        fine). ``return_views`` keeps the per-view probabilities ``(V, N, C)``."""
        s = self._setup()
        task = s.task
        if return_views:
            task = ClassificationTask(s.merge, task.output, task.classes, keep_views=True, on_error=self.on_error)
        pol = s.run_policy
        model = s.adapter
        count = s.inputs.count(x)
        if s.adaptation is not None and adapt.may_adapt(s.adaptation, count):  # this call's own adapted copy
            unique = s.policy.unique()
            model = adapt.AdaptedModel(s.adapter, s.adaptation, unique.views, unique.weights)
        staged = isinstance(s.policy, AdaptivePolicy) and len(s.policy.stages) > 1
        bar = _progress_bar(count if staged or count is None else count * len(pol.views),
                            self.progress if progress is None else progress, "img" if staged else "pass")
        try:
            if staged:
                res = run_adaptive(task, model, x, s.policy, inputs=s.inputs, batch_size=s.batch_size,
                                   preprocess=s.preprocess, progress=bar)
            else:
                res = engine.run(task, model, x, pol.views, pol.weights, inputs=s.inputs,
                                 batch_size=s.batch_size, preprocess=s.preprocess, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        if len(res) == 0 and res.probs.shape[-1] == 0:
            res = self._empty_with_classes(res, x, s)
        return res

    def _empty_with_classes(self, res: ClassificationResult, x, s: _Setup) -> ClassificationResult:
        """An empty array still says what one input looks like: run the model
        once on a blank input of that shape to learn the number of classes, so
        an empty input gives ``(0, C)`` like any other."""
        if not isinstance(x, (np.ndarray, torch.Tensor)) or x.ndim != 4:
            return res
        blank = torch.zeros((1, *x.shape[1:]), dtype=torch.uint8 if x.dtype in (np.uint8, torch.uint8)
                            else torch.float32)
        probe = engine.run(ClassificationTask(Mean(), s.task.output), s.adapter, blank, [s.policy.views[0]], [1.0],
                           inputs=s.inputs, batch_size=1, preprocess=s.preprocess)
        c = probe.probs.shape[-1]
        v = len(res.views)
        return ClassificationResult(
            probs=np.zeros((0, c), np.float32), labels=res.labels, scores=np.zeros((0, c), np.float32),
            entropy=res.entropy, spread=res.spread, agreement=res.agreement, views=res.views, weights=res.weights,
            forward_passes=0, seconds=res.seconds, output_kind=probe.output_kind,
            view_probs=None if res.view_probs is None else np.zeros((v, 0, c), np.float32),
            classes=res.classes, failed=np.zeros(0, bool), errors={})


def policy_id(classifier: Classifier) -> str:
    """A stable short hash of what ``classifier`` runs: its distinct views,
    their weights and the merge (what a server or a batch job writes beside
    each prediction, so results of different policies never mix unnoticed)."""
    import hashlib
    import json

    d = classifier.run_policy.to_dict()
    d.pop("source", None)
    policy = classifier._setup().policy
    if isinstance(policy, AdaptivePolicy):  # the stages and their rules are part of what runs
        d["stages"] = policy.to_dict()["stages"]
    d["merge"] = classifier.effective_merge.to_dict()
    adaptation = classifier._setup().adaptation
    if adaptation is not None:  # an adapted model predicts differently: part of what runs
        d["adapt"] = adaptation.to_dict()
    text = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def contracted_options(policy, **classifier_kwargs) -> dict:
    """``classifier_kwargs`` completed by what ``policy`` was tuned with
    (normalisation, model layout, output kind, classes), or an InputError
    where they contradict it. For code that runs a policy's views through
    another object (the prediction cache of ``evaluate``)."""
    if classifier_kwargs.get("output", "auto") not in OUTPUT_KINDS:
        raise InputError(f"output must be one of {', '.join(OUTPUT_KINDS)}, got {classifier_kwargs['output']!r}")
    c = _Contracted.resolve(Policy.coerce(policy), classifier_kwargs.get("preprocess"),
                            classifier_kwargs.get("model_layout"), classifier_kwargs.get("output", "auto"),
                            classifier_kwargs.get("classes"))
    out = dict(classifier_kwargs)
    out.update(preprocess=c.preprocess, model_layout=c.model_layout, output=c.output, classes=c.classes)
    return out


def _progress_bar(total, enabled: bool, unit: str = "img"):
    """A bar on stderr with a rate and an ETA: forward passes (inputs x
    views, moved after every forward batch) for a plain policy, inputs for
    an adaptive one (moved as inputs finish)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc="ttakit", mininterval=0.5, dynamic_ncols=True)
