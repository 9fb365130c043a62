"""The small training loop the trained reference models share (U-Net on
ISBI 2012 membranes, CenterNet on BCCD): Adam with a cosine learning rate,
a fixed number of steps, an optional wall-time cap, seeded batches."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError


@dataclass
class TrainLog:
    """What a training run did: the loss of every step, the steps run (fewer
    than asked when ``max_seconds`` stopped it), its wall time and threads."""

    losses: list = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0   #: CPU time of the process: below seconds x threads on a busy machine
    threads: int = 1
    stopped_by_time: bool = False

    def mean_loss(self, first: int = 0, last: int | None = None) -> float:
        return float(np.mean(self.losses[first:last]))

    def as_dict(self) -> dict:
        n = max(1, min(20, len(self.losses) // 5))
        return {"steps": self.steps, "seconds": self.seconds, "cpu_seconds": self.cpu_seconds, "threads": self.threads,
                "stopped_by_time": self.stopped_by_time,
                "loss_first": self.mean_loss(0, n) if self.losses else None,
                "loss_last": self.mean_loss(-n) if self.losses else None}


def train_steps(model: torch.nn.Module, batch: Callable[[np.random.Generator], tuple], loss: Callable,
                steps: int, lr: float = 2e-3, seed: int = 0, max_seconds: float | None = None,
                log: Callable[[str], None] | None = None, every: int = 100) -> TrainLog:
    """Train ``model`` for ``steps`` steps of ``loss(model, *batch(rng))``
    (AdamW, weight decay 1e-4, cosine decay from ``lr`` to 5% of it), the
    batches drawn from a NumPy generator seeded by ``seed``. With
    ``max_seconds`` the decay follows whichever of steps or time runs out
    first, and training stops there (then the result depends on the
    machine's speed: ``stopped_by_time`` says so). The model is left in
    eval mode."""
    if steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    out = TrainLog(threads=torch.get_num_threads())
    t0, c0 = time.perf_counter(), time.process_time()
    model.train()
    for step in range(steps):
        elapsed = time.perf_counter() - t0
        # the cosine runs over the steps, or over the time cap when that comes first, so
        # a run cut short by a busy machine still ends at a low learning rate
        progress = step / steps if max_seconds is None else max(step / steps, elapsed / max_seconds)
        if progress >= 1:
            out.stopped_by_time = True
            break
        for group in opt.param_groups:
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        value = loss(model, *batch(rng))
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        out.losses.append(float(value.detach()))
        out.steps = step + 1
        if log is not None and (step + 1) % every == 0:
            log(f"step {step + 1}/{steps}: loss {np.mean(out.losses[-every:]):.4f} "
                f"({time.perf_counter() - t0:.0f} s)")
    out.seconds, out.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    model.eval()
    return out


def d4_array(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """``a`` (..., H, W) turned by ``k`` quarter turns and then mirrored
    left-right when ``flip``: one of the 8 dihedral views, for training."""
    a = np.rot90(a, k, axes=(-2, -1))
    return a[..., ::-1] if flip else a
