"""Adapter for ONNX Runtime (a model path or an ``InferenceSession``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ModelLoadError, require
from .base import ModelAdapter, as_tensor, check_layout, to_layout


class OnnxModel(ModelAdapter):
    """Run an ONNX model with ONNX Runtime.

    ``layout`` is read from the model's input shape when it is clear (3 or 1
    channels in axis 1 means NCHW, in the last axis NHWC) and must be given
    otherwise. ``providers`` defaults to CUDA when available, else CPU.
    """

    def __init__(self, model, layout: str | None = None, providers=None, input_name: str | None = None):
        ort = require("onnxruntime", "onnx", "running an ONNX model")
        if isinstance(model, (str, Path)):
            path = Path(model)
            if not path.exists():
                raise ModelLoadError(f"ONNX model file not found: {path}")
            if providers is None:
                avail = ort.get_available_providers()
                providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]
            try:
                self.session = ort.InferenceSession(str(path), providers=providers)
            except Exception as e:  # onnxruntime raises its own exception types
                raise ModelLoadError(f"ONNX Runtime cannot load {path}: {e}") from None
        else:
            self.session = model
        inputs = self.session.get_inputs()
        inp = next((i for i in inputs if i.name == input_name), inputs[0]) if input_name else inputs[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if "float16" in inp.type else np.float32
        shape = list(inp.shape)
        if layout is None:
            layout = _guess_layout(shape)
            if layout is None:
                raise ModelLoadError(f"cannot tell the layout of ONNX input {inp.name!r} with shape {shape}; "
                                     "pass layout='NCHW' or 'NHWC'")
        self.layout = check_layout(layout)
        declared = _guess_layout(shape)
        if declared is not None and declared != self.layout:
            c = shape[1] if declared == "NCHW" else shape[3]
            wrong = shape[1] if self.layout == "NCHW" else shape[3]
            raise ModelLoadError(f"the ONNX input {inp.name!r} has shape {shape}: {declared}, {c} channels; "
                                 f"layout={self.layout!r} would read it as {wrong} channels. Leave the layout out "
                                 f"(ONNX models declare theirs) or pass layout={declared!r}")
        if len(shape) == 4:
            c = shape[1] if self.layout == "NCHW" else shape[3]
            hw = (shape[2], shape[3]) if self.layout == "NCHW" else (shape[1], shape[2])
            self.expected_channels = c if isinstance(c, int) else None
            self.expected_size = tuple(hw) if all(isinstance(v, int) for v in hw) else None
            self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        else:
            self.fixed_batch = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = to_layout(x, self.layout).cpu().numpy().astype(self.input_dtype, copy=False)
        if self.fixed_batch and arr.shape[0] != self.fixed_batch:
            # a model exported with a fixed batch size: run it one slice at a time
            outs = []
            for i in range(0, arr.shape[0], self.fixed_batch):
                part = arr[i:i + self.fixed_batch]
                pad = self.fixed_batch - part.shape[0]
                if pad:
                    part = np.concatenate([part, np.repeat(part[-1:], pad, 0)])
                outs.append(self.session.run(None, {self.input_name: part})[0][: self.fixed_batch - pad])
            return as_tensor(np.concatenate(outs), x.device)
        y = self.session.run(None, {self.input_name: arr})[0]
        return as_tensor(y, x.device)


def _guess_layout(shape) -> str | None:
    if len(shape) != 4:
        return None
    c1, c3 = shape[1], shape[3]
    small = (1, 3, 4)
    if c1 in small and c3 not in small:
        return "NCHW"
    if c3 in small and c1 not in small:
        return "NHWC"
    return None
