"""Batch-norm statistics estimated over a call's stream, mixed with the
model's own by a prior strength, behind a shift test (:class:`StreamStats`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

BATCH_NORMS = (nn.modules.batchnorm._BatchNorm,)


def batch_norms(module: nn.Module) -> list:
    """The batch-norm layers of ``module`` that keep running statistics."""
    return [m for m in module.modules() if isinstance(m, BATCH_NORMS) and m.track_running_stats
            and m.running_mean is not None and m.running_var is not None]


def divergence(mean_t, var_t, mean_s, var_s, eps: float = 1e-5) -> float:
    """Mean over channels of KL(N(mean_t, var_t) || N(mean_s, var_s))."""
    vt, vs = var_t + eps, var_s + eps
    kl = 0.5 * (vt / vs + (mean_t - mean_s) ** 2 / vs - 1 - torch.log(vt / vs))
    return float(kl.mean())


class _Moments:
    """Per-layer running per-channel sums of values and squares (float64)."""

    def __init__(self, like: list):
        self.sums = [torch.zeros_like(t) for t in like]
        self.squares = [torch.zeros_like(t) for t in like]
        self.counts = [0] * len(like)

    def add(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add layer ``i``'s input ``x``; its stream mean and variance so far."""
        dims = [0] + list(range(2, x.dim()))
        xd = x.detach().double()
        self.sums[i] += xd.sum(dims)
        self.squares[i] += (xd * xd).sum(dims)
        self.counts[i] += x.numel() // x.shape[1]
        return self.get(i)

    def get(self, i: int):
        mean = self.sums[i] / max(self.counts[i], 1)
        return mean, (self.squares[i] / max(self.counts[i], 1) - mean ** 2).clamp_min(0)


class StreamStats:
    """Hooks on the batch-norm layers of ``module`` (a copy the caller owns).

    Each chunk is first *probed*: a forward with the model's own statistics
    that adds every layer's input moments to the stream's; the *shift* is
    the mean over layers of the divergence between the stream's moments and
    the model's. The stream counts as shifted (:attr:`active`) once at least
    ``min_inputs`` inputs were seen and the shift exceeds ``threshold``.
    While active, a second, *collecting* forward adds the chunk to the
    adapted moments (measured with the adapted earlier layers) and sets each
    layer's statistics to ``(N s + n t) / (N + n)``: the model's own ``s``
    and the ``n`` adapted inputs' ``t``, ``N = prior``. While not active,
    every layer keeps the model's own statistics, exactly."""

    def __init__(self, module: nn.Module, prior: float, min_inputs: int, threshold: float):
        self.layers = batch_norms(module)
        self.prior, self.min_inputs, self.threshold = float(prior), int(min_inputs), float(threshold)
        self.source = [(m.running_mean.detach().clone().double(), m.running_var.detach().clone().double())
                       for m in self.layers]
        self.probed = _Moments([s[0] for s in self.source])
        self.adapted = _Moments([s[0] for s in self.source])
        self.n_probed = 0
        self.n_adapted = 0
        self.mode = None          # "probe", "collect" or None (use the statistics as set)
        self.active = False
        self.shift = float("nan")  #: the last shift measured
        self._handles = [m.register_forward_pre_hook(self._hook(i)) for i, m in enumerate(self.layers)]

    def weight(self) -> float:
        return self.n_adapted / (self.prior + self.n_adapted) if self.active else 0.0

    def set_source(self) -> None:
        with torch.no_grad():
            for m, (mean_s, var_s) in zip(self.layers, self.source):
                m.running_mean.copy_(mean_s.to(m.running_mean.dtype))
                m.running_var.copy_(var_s.to(m.running_var.dtype))

    def probe(self, run, n_inputs: int) -> None:
        """Probe a chunk (``run()`` does the forward) and decide :attr:`active`."""
        self.set_source()
        self.n_probed += int(n_inputs)
        self.mode = "probe"
        try:
            run()
        finally:
            self.mode = None
        shifts = [divergence(*self.probed.get(i), *self.source[i], m.eps) for i, m in enumerate(self.layers)]
        self.shift = float(np.mean(shifts))
        self.active = self.n_probed >= self.min_inputs and self.shift > self.threshold
        if not self.active:
            self.set_source()

    def begin_collect(self, n_inputs: int) -> None:
        self.n_adapted += int(n_inputs)
        self.mode = "collect"

    def end_collect(self) -> None:
        self.mode = None

    def _hook(self, i: int):
        def hook(module, args):
            if self.mode is None:
                return None
            with torch.no_grad():
                if self.mode == "probe":
                    self.probed.add(i, args[0])
                    return None
                mean_t, var_t = self.adapted.add(i, args[0])
                mean_s, var_s = self.source[i]
                w = self.weight()
                module.running_mean.copy_(((1 - w) * mean_s + w * mean_t).to(module.running_mean.dtype))
                module.running_var.copy_(((1 - w) * var_s + w * var_t).to(module.running_var.dtype))
            return None

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
