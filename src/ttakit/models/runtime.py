"""Run a PyTorch model through a faster runtime: ONNX Runtime or
``torch.compile``, checked against the eager model and given up (with a
:class:`~ttakit.errors.RuntimeFallbackWarning`) where it cannot be trusted.

:func:`with_runtime` turns a :class:`~ttakit.models.torch_model.TorchModel`
into a :class:`RuntimeModel`. The first batch of each input shape (the
shape after the batch axis: views that change the image size give another)
is run by the eager model and by the runtime; the runtime is used for that
shape from then on only when it was built and its outputs equal the eager
model's within :data:`TOLERANCE`. Otherwise the eager model runs that shape,
and a warning says why (the exporter failed, no C++ compiler for
``torch.compile``, outputs differ by how much...). The first batch's result
is the eager model's in every case.

- ``"onnx"``: the module is exported once per input shape with PyTorch's
  TorchScript-based ONNX exporter (``torch.onnx.export(..., dynamo=False)``,
  opset :data:`OPSET`), with a dynamic batch axis so a last, smaller chunk
  runs through the same session, and run with ONNX Runtime (CPU, or CUDA
  where the model is on a GPU and ONNX Runtime has it).
- ``"compile"``: ``torch.compile(module, dynamic=True)`` (Inductor). On CPU
  it needs a C++ compiler; compiling a small CNN takes tens of seconds.

Both are plain adapters afterwards: an ONNX Runtime session may be run from
several threads at once, and the first batch of a shape is decided under a
lock, so a :class:`RuntimeModel` is as thread-safe as the eager adapter.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import warnings

import torch

from ..errors import ModelLoadError, RuntimeFallbackWarning, require
from .base import ModelAdapter, as_tensor

#: the runtimes :func:`with_runtime` knows
RUNTIMES = ("eager", "onnx", "compile")
#: largest |runtime - eager| accepted on the first batch of a shape
TOLERANCE = 1e-4
#: ONNX opset of the export
OPSET = 17
#: input shapes exported or checked per model; further shapes run eagerly
MAX_SHAPES = 16
#: whether ONNX Runtime's CPU threads spin while waiting for work (its default). Spinning
#: answers the next operator sooner on an idle machine and burns CPU on a busy one (the
#: threads of PyTorch, which runs the views and the merge, then compete with them)
ONNX_SPINNING = True


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ModelLoadError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return runtime


def with_runtime(adapter: ModelAdapter, runtime: str = "eager", tolerance: float = TOLERANCE) -> ModelAdapter:
    """``adapter`` run through ``runtime``: itself for ``"eager"``, else a
    :class:`RuntimeModel`. Only PyTorch models (TorchScript included) have
    another runtime; anything else is a :class:`~ttakit.ModelLoadError`."""
    from .torch_model import TorchModel

    check_runtime(runtime)
    if isinstance(adapter, RuntimeModel):
        adapter = adapter.eager
    if runtime == "eager":
        return adapter
    if runtime == "onnx":  # asked for by name: a missing extra is an error, not a fallback
        require("onnxruntime", "onnx", "runtime='onnx'")
    if not isinstance(adapter, TorchModel):
        raise ModelLoadError(f"runtime={runtime!r} is for PyTorch models; this is a {type(adapter).__name__} "
                             "(a Keras model takes model_options={'runtime': 'onnx'}; an ONNX model already "
                             "runs in ONNX Runtime)")
    return RuntimeModel(adapter, runtime, tolerance)


class RuntimeModel(ModelAdapter):
    """A :class:`TorchModel` run through ONNX Runtime or ``torch.compile``
    where that gives the eager outputs (see the module's notes).

    ``decisions`` maps each input shape seen to ``"onnx"``, ``"compile"`` or
    ``"eager"`` (what runs it); ``reasons`` says why a shape runs eagerly."""

    def __init__(self, eager, runtime: str, tolerance: float = TOLERANCE):
        self.eager = eager
        self.runtime = check_runtime(runtime)
        self.tolerance = float(tolerance)
        self.layout = eager.layout
        self.expected_channels = eager.expected_channels
        self.expected_size = eager.expected_size
        self._lock = threading.Lock()
        self._chosen: dict[tuple, ModelAdapter] = {}
        self.decisions: dict[tuple, str] = {}
        self.reasons: dict[tuple, str] = {}
        self._compiled: ModelAdapter | None = None

    @property
    def device(self) -> torch.device:
        return self.eager.device

    def __repr__(self) -> str:
        return f"RuntimeModel({self.eager!r}, runtime={self.runtime!r})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return as_tensor(self.forward_raw(x), self.device)

    def forward_raw(self, x: torch.Tensor):
        key = tuple(x.shape[1:])
        chosen = self._chosen.get(key)
        if chosen is None:
            with self._lock:
                chosen = self._chosen.get(key)
                if chosen is None:
                    return self._first(key, x)
        return chosen.forward_raw(x)

    # -- the first batch of a shape ------------------------------------------
    def _first(self, key: tuple, x: torch.Tensor):
        """Run the first batch of shape ``key`` eagerly and through the
        runtime, keep the runtime when they agree; the eager outputs."""
        expected = self.eager.forward_raw(x)  # the model's own errors are the user's: they propagate
        if len(self._chosen) >= MAX_SHAPES:
            return self._use_eager(key, f"more than {MAX_SHAPES} input shapes", expected, warn=False)
        try:
            ref = as_tensor(expected, self.device)
        except Exception as e:  # e.g. a detector's records: nothing to compare
            return self._use_eager(key, f"its outputs are not one array ({type(e).__name__}: {e})", expected)
        try:
            fast = self._build(x)
            got = as_tensor(fast.forward_raw(x), self.device)
        except Exception as e:  # exporters, runtimes and compilers raise many types
            return self._use_eager(key, f"{self._verb()} failed ({type(e).__name__}: {_first_line(e)})", expected)
        if got.shape != ref.shape:
            return self._use_eager(key, f"its outputs have shape {tuple(got.shape)}, the eager model's "
                                        f"{tuple(ref.shape)}", expected)
        diff = max_difference(got, ref)
        if not diff <= self.tolerance:
            return self._use_eager(key, f"its outputs differ from the eager model's by up to {diff:.3g} "
                                        f"(more than {self.tolerance:g}) on the first batch", expected)
        self._chosen[key] = fast
        self.decisions[key] = self.runtime
        return expected

    def _use_eager(self, key: tuple, why: str, expected, warn: bool = True):
        self._chosen[key] = self.eager
        self.decisions[key] = "eager"
        self.reasons[key] = why
        if warn:
            warnings.warn(f"runtime={self.runtime!r} is not used for inputs of shape {key}: {why}; running "
                          "the eager PyTorch model instead", RuntimeFallbackWarning, stacklevel=2)
        return expected

    def _verb(self) -> str:
        return "exporting to ONNX" if self.runtime == "onnx" else "torch.compile"

    def _build(self, x: torch.Tensor) -> ModelAdapter:
        if self.runtime == "onnx":
            return export_onnx(self.eager, x)
        if self._compiled is None:
            self._compiled = CompiledModel(self.eager)
        return self._compiled


def export_onnx(eager, x: torch.Tensor) -> ModelAdapter:
    """An :class:`~ttakit.models.onnx_model.OnnxModel` running the module of
    ``eager`` (a TorchModel), exported on the shape of batch ``x`` with a
    dynamic batch axis."""
    ort = require("onnxruntime", "onnx", "runtime='onnx'")
    from .onnx_model import OnnxModel

    sample = eager.prepare(x[:2])
    buf = io.BytesIO()
    with eager.tracing() as module, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own notes (deprecation, tracer) are not the user's
        torch.onnx.export(module, (sample,), buf, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
    providers = ["CPUExecutionProvider"]
    if eager.device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ModelLoadError("the model is on CUDA but ONNX Runtime here has no CUDAExecutionProvider")
        providers = [("CUDAExecutionProvider", {"device_id": eager.device.index or 0})]
    session = ort.InferenceSession(buf.getvalue(), session_options(), providers=providers)
    return OnnxModel(session, layout=eager.layout)


def session_options(threads: int | None = None, spinning: bool | None = None):
    """ONNX Runtime session options for a model exported here: as many
    intra-operator threads as PyTorch uses (``torch.get_num_threads()``, so
    ``torch.set_num_threads`` and ``OMP_NUM_THREADS`` govern both runtimes;
    ONNX Runtime's own default is every physical core), one inter-operator
    thread, operators in sequence, every graph optimisation (the default:
    Conv+BatchNorm+ReLU fusion, the blocked NCHWc layout), and spinning as
    :data:`ONNX_SPINNING` says."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads or torch.get_num_threads()))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    spin = ONNX_SPINNING if spinning is None else spinning
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return so


class CompiledModel(ModelAdapter):
    """The module of a TorchModel through ``torch.compile(dynamic=True)``,
    run in eval and inference mode like the eager adapter. Raises a
    :class:`~ttakit.ModelLoadError` where compiling cannot work here."""

    def __init__(self, eager):
        reason = compile_unavailable(eager.device)
        if reason:
            raise ModelLoadError(reason)
        self.eager = eager
        self.layout = eager.layout
        self.compiled = torch.compile(eager.module, dynamic=True)

    @property
    def device(self) -> torch.device:
        return self.eager.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return as_tensor(self.forward_raw(x), self.device)

    def forward_raw(self, x: torch.Tensor):
        x = self.eager.prepare(x)
        with self.eager.running():
            return self.compiled(x)


def compile_unavailable(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot work here, or None."""
    try:
        import torch._dynamo as dynamo
    except ImportError as e:  # pragma: no cover - part of torch
        return f"torch.compile is not available ({e})"
    if not dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python version"
    if device.type == "cpu":
        cxx = os.environ.get("CXX")
        if not any(shutil.which(c) for c in ([cxx] if cxx else []) + ["c++", "g++", "clang++"]):
            return "torch.compile on CPU needs a C++ compiler (c++, g++ or clang++ on PATH, or $CXX)"
    return None


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b|, where NaN and infinities must sit at the same places
    with the same values (else infinity)."""
    if a.numel() == 0:
        return 0.0
    finite = torch.isfinite(b)
    if not torch.equal(finite, torch.isfinite(a)) or not torch.equal(a[~finite].nan_to_num(), b[~finite].nan_to_num()):
        return float("inf")
    return float((a[finite] - b[finite]).abs().max()) if finite.any() else 0.0


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else "no message"
