"""What the user-facing dense tasks (:class:`~ttakit.Segmenter`,
:class:`~ttakit.Detector`, :class:`~ttakit.KeypointDetector`) share with
:class:`~ttakit.Classifier`'s conventions: arguments kept as given
(``get_params``/``set_params``, ``sklearn.base.clone``), the objects they
stand for built once and cached under a lock (so an instance may be called
from several threads), and one call of the run loop per ``run``."""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass

from .. import adapt, engine
from ..errors import InputError
from ..inputs import ImageInputs, check_layout
from ..inputs.rows import RowInputs
from ..models import CallableModel, as_model
from ..models.runtime import check_runtime, with_runtime
from ..policy import Policy
from .base import check_on_error

#: the arguments every front end takes after its own
COMMON = ("data_layout", "model_layout", "preprocess", "batch_size", "dedupe", "device", "model_options",
          "runtime", "on_error")


#: the ``data_layout`` of tabular rows ``(N, F)`` (see :func:`row_inputs`)
ROWS = "rows"


def row_inputs(adapter, n_features: int | None = None, **options) -> RowInputs:
    """How rows reach ``adapter``: float64 for scikit-learn estimators and
    callables (their own precision: an unchanged row gives exactly the
    model's prediction), float32 for torch, Keras and ONNX models (what
    their layers compute in). ``options`` go to :class:`RowInputs`."""
    return RowInputs(n_features, dtype="float64" if isinstance(adapter, CallableModel) else "float32", **options)


@dataclass(frozen=True)
class Setup:
    adapter: object
    inputs: ImageInputs
    policy: Policy
    run_policy: Policy
    task: object
    batch_size: int | None
    preprocess: object = None
    adaptation: object = None
    objective: object = None


def cached_adapter(owner, data_layout: str, model_layout: str | None):
    """The adapter ``owner.model`` stands for (with ``owner.device``,
    ``owner.model_options`` and ``owner.runtime``), rebuilt only when one of
    those arguments changed. Call it under the owner's lock."""
    runtime = check_runtime(owner.runtime)
    key = (id(owner.model), model_layout, id(owner.device), id(owner.model_options), data_layout, runtime)
    prev = owner.__dict__.get("_adapter")
    if prev is not None and prev[0] == key:
        return prev[1]
    opts = dict(owner.model_options or {})
    if owner.device is not None:
        opts["device"] = owner.device
    if model_layout is not None:
        opts["layout"] = check_layout(model_layout, "model_layout")
    adapter = as_model(owner.model, default_layout=data_layout, **opts)
    if runtime != "eager":
        adapter = with_runtime(adapter, runtime)
    owner.__dict__["_adapter"] = (key, adapter)
    return adapter


class Front(abc.ABC):
    """Base of the front ends. A subclass lists its parameters in ``PARAMS``
    (``model`` and ``policy`` first) and builds its task in :meth:`make_task`."""

    PARAMS: tuple = ("model", "policy") + COMMON

    def _init(self, values: dict) -> None:
        for k in self.PARAMS:
            setattr(self, k, values[k])
        self._setup()  # validate the arguments now, so a mistake shows where it is made

    # -- scikit-learn conventions -------------------------------------------------
    def get_params(self, deep: bool = True) -> dict:
        """The constructor arguments, as given."""
        return {k: getattr(self, k) for k in self.PARAMS}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in self.PARAMS:
                raise InputError(f"{type(self).__name__} has no parameter {k!r}; valid: {', '.join(self.PARAMS)}")
            setattr(self, k, v)
        self._setup()
        return self

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.PARAMS}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({repr(self.model)[:60]}, policy={self.policy!r})"

    @abc.abstractmethod
    def make_task(self, policy: Policy):
        """The task this front end runs (with the distinct views of ``policy``)."""

    def adapt_objective(self, task):
        """The entropy objective ``adapt="tent"`` and ``"memo"`` minimise on
        this task's outputs (see :class:`ttakit.adapt.session.ClassScores`),
        or a string saying why the task has none (``"norm"`` only). Only
        front ends with an ``adapt`` parameter are asked."""
        return f"{type(self).__name__} has no entropy objective"

    def _adaptation(self, adapter, task, policy):
        """``(adaptation, objective)`` the ``adapt`` argument stands for, checked."""
        method = adapt.coerce(getattr(self, "adapt", None))
        if method is None:
            return None, None
        adapt.check_adaptable(adapter, method)
        objective = self.adapt_objective(task)
        if isinstance(method, (adapt.Tent, adapt.Memo)) and isinstance(objective, str):
            raise InputError(f"adapt={method.name!r} minimises the entropy of the model's predictions, and "
                             f"{objective}: use adapt='norm' (normalisation statistics only)")
        if isinstance(method, adapt.Memo) and len(policy.unique()) < 2:
            raise InputError("adapt='memo' minimises the entropy of the mean prediction over the policy's "
                             "views: it needs a policy of two or more distinct views (e.g. 'identity + hflip')")
        return method, (None if isinstance(objective, str) else objective)

    def _setup(self) -> Setup:
        key = tuple(id(getattr(self, k)) for k in self.PARAMS)
        lock = self.__dict__.setdefault("_lock", threading.Lock())
        with lock:
            cached = self.__dict__.get("_cached")
            if cached is not None and cached[0] == key:
                return cached[1]
            check_on_error(self.on_error)
            data_layout = check_layout(self.data_layout)
            policy = Policy.coerce(self.policy)
            adapter = cached_adapter(self, data_layout, self.model_layout)
            run_policy = policy.unique() if self.dedupe else policy
            task = self.make_task(run_policy)
            adaptation, objective = self._adaptation(adapter, task, policy)
            setup = Setup(adapter, ImageInputs(data_layout), policy, run_policy, task,
                          engine.check_batch_size(self.batch_size), self.preprocess, adaptation, objective)
            self.__dict__["_cached"] = (key, setup)
            return setup

    @property
    def adapter(self):
        return self._setup().adapter

    @property
    def run_policy(self) -> Policy:
        """The policy as run: deduplicated unless ``dedupe=False``."""
        return self._setup().run_policy

    def _run(self, x, task=None):
        s = self._setup()
        pol = s.run_policy
        model = s.adapter
        if s.adaptation is not None and adapt.may_adapt(s.adaptation, s.inputs.count(x)):  # a copy of its own
            unique = s.policy.unique()
            model = adapt.AdaptedModel(s.adapter, s.adaptation, unique.views, unique.weights, s.objective)
        return engine.run(task or s.task, model, x, pol.views, pol.weights, inputs=s.inputs,
                          batch_size=s.batch_size, preprocess=s.preprocess)
