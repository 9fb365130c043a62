"""Adapter for ``torch.nn.Module`` (TorchScript modules included)."""

from __future__ import annotations

import contextlib
import threading

import torch

from ..errors import ModelLoadError
from .base import ModelAdapter, as_tensor, check_layout, to_layout


class TorchModel(ModelAdapter):
    """Run a ``torch.nn.Module`` in eval and inference mode.

    ``device`` moves the module there (default: where its parameters are);
    ``dtype`` (e.g. ``torch.bfloat16``) converts the module and inputs;
    ``channels_last`` uses the channels-last memory format, often faster on
    CPUs and tensor cores. ``layout`` is the layout the module consumes.
    The module's train/eval flag is restored after every call.
    """

    def __init__(self, module: torch.nn.Module, device=None, dtype: torch.dtype | None = None,
                 channels_last: bool = False, layout: str = "NCHW"):
        if not isinstance(module, torch.nn.Module):
            raise ModelLoadError(f"TorchModel needs a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.layout = check_layout(layout)
        if device is not None:
            module.to(device)
        if dtype is not None:
            module.to(dtype)
        self.dtype = dtype
        self.channels_last = channels_last
        if channels_last:
            module.to(memory_format=torch.channels_last)
        first = next(iter(module.parameters()), None)
        if first is None:
            first = next(iter(module.buffers()), None)
        self._device = torch.device(device) if device is not None else (
            first.device if first is not None else torch.device("cpu"))
        self._lock = threading.Lock()
        self._active = 0
        self._flags: list = []

    @property
    def device(self) -> torch.device:
        return self._device

    @contextlib.contextmanager
    def _eval(self, inference: bool = True):
        # Restore every submodule's own flag: a training model may hold frozen
        # (eval-mode) parts, which module.train() would switch back on. Calls
        # from several threads share one eval period: the first in saves the
        # flags, the last out restores them, so no thread runs in train mode.
        with self._lock:
            if self._active == 0:
                self._flags = [(m, m.training) for m in self.module.modules()]
                self.module.eval()
            self._active += 1
        try:
            # no_grad where the graph is traced (an exporter), inference mode to run
            with torch.inference_mode() if inference else torch.no_grad():
                yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    for m, was_training in self._flags:
                        m.training = was_training
                    self._flags = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return as_tensor(self.forward_raw(x), self._device)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The float32 NCHW batch ``x`` as the module takes it (layout,
        dtype, memory format)."""
        x = to_layout(x, self.layout)
        if self.dtype is not None:
            x = x.to(self.dtype)
        if self.channels_last and self.layout == "NCHW":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def running(self):
        """The module in eval and inference mode for one call (flags restored after)."""
        return self._eval()

    @contextlib.contextmanager
    def tracing(self):
        """The module in eval mode under ``torch.no_grad`` (not inference
        mode, which exporters cannot trace), flags restored after."""
        with self._eval(inference=False):
            yield self.module

    def forward_raw(self, x: torch.Tensor):
        x = self.prepare(x)
        with self._eval():
            return self.module(x)
