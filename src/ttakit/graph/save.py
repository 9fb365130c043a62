"""Write a :class:`~ttakit.graph.torch_module.TTAModule` to one file:
an ONNX graph (``format="onnx"``) or a TorchScript module
(``format="torchscript"``), checked against the module before it is
written (see :func:`export`)."""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import InputError, ModelError, ModelLoadError
from ..files import write_atomic
from ..merge import Merge
from ..models import Normalize
from ..models.runtime import OPSET, max_difference
from ..version import __version__
from .torch_module import TTAModule

FORMATS = ("onnx", "torchscript")
#: largest |file - module| accepted on the check batch
TOLERANCE = 1e-5
INPUT_NAME, OUTPUT_NAME = "input", "probs"


def export(model, policy, path: str | Path, format: str = "onnx", *, input_shape: Sequence[int],
           merge: str | Merge | None = None, data_layout: str = "NCHW", input_dtype: str = "float32",
           model_layout: str | None = None, output: str = "auto", preprocess: Normalize | None = None,
           opset: int = OPSET) -> Path:
    """Write test-time augmentation of ``model`` under ``policy`` as one file.

    ``format="onnx"``: one ONNX graph (opset ``opset``) with input
    ``"input"`` (``(batch, *input_shape)`` in ``data_layout``, float32 or
    uint8 as ``input_dtype`` says; the batch axis is dynamic) and output
    ``"probs"`` (``(batch, C)``, the merged probabilities that
    ``Classifier.predict_proba`` returns), run by any ONNX runtime without
    ttakit. ``format="torchscript"``: the scripted module
    (``torch.jit.load`` reads it). The other arguments are those of
    :class:`~ttakit.graph.TTAModule`.

    The file is checked before it is written: its outputs on a batch of
    seeded random inputs (another batch size than the export's) must equal
    the module's within :data:`TOLERANCE`, else a
    :class:`~ttakit.errors.ModelError` says by how much and nothing is
    written. Returns the path written.
    """
    if format not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format == "onnx":
        _need_onnx()
    module = TTAModule(model, policy, input_shape=input_shape, merge=merge, data_layout=data_layout,
                       input_dtype=input_dtype, model_layout=model_layout, output=output, preprocess=preprocess)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    sample, probe = _inputs(module, input_shape, 2).to(device), _inputs(module, input_shape, 3).to(device)
    with torch.no_grad():
        expected = module(probe)
    if format == "onnx":
        data = onnx_bytes(module, sample, opset)
        got = _run_onnx(data, probe)
    else:
        scripted = torch.jit.script(module)
        with torch.no_grad():
            got = scripted(probe)
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
        data = buf.getvalue()
    diff = max_difference(got.float().cpu(), expected.float().cpu())
    if not diff <= TOLERANCE:
        raise ModelError(f"the exported {format} file's probabilities differ from the module's by up to "
                         f"{diff:.3g} (more than {TOLERANCE:g}); nothing was written")
    path = Path(path)
    write_atomic(path, data)
    return path


def onnx_bytes(module: TTAModule, sample: torch.Tensor, opset: int = OPSET) -> bytes:
    """``module`` as a serialized ONNX model with a dynamic batch axis, its
    ttakit description in the model's metadata (``ttakit.*`` keys)."""
    import onnx

    # the exporter traces the module, and a trace cannot enter a TorchScript model: script the whole then
    target = torch.jit.script(module) if isinstance(module.model, torch.jit.ScriptModule) else module
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own notes (deprecation, tracer) are not the user's
        torch.onnx.export(target, (sample,), buf, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          opset_version=opset, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in describe(module).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"ttakit.{key}", value
    return proto.SerializeToString()


def describe(module: TTAModule) -> dict[str, str]:
    """What the graph computes, as text (written into the ONNX metadata)."""
    return {"version": __version__, "views": json.dumps(module.views_repr),
            "input": f"{'uint8 0-255' if module.uint8 else 'float32'} "
                     f"{'NHWC' if module.nhwc_input else 'NCHW'}",
            "model_output": module.output_kind, "merge": module.merge_repr}


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ModelLoadError(f"exporting to ONNX needs onnx and onnxruntime ({e}): pip install 'ttakit[onnx]'"
                             ) from None


def _inputs(module: TTAModule, input_shape: Sequence[int], n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(n)
    x = torch.rand((n, *[int(s) for s in input_shape]), generator=g)
    return (x * 255).round().to(torch.uint8) if module.uint8 else x


def _run_onnx(data: bytes, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.cpu().numpy()})[0])
