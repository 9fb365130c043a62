"""Learned aggregation weights (Shanmugam et al., ICCV 2021).

Per-view weights ``(V,)`` or per-view-per-class weights ``(V, C)`` combine
the views' log-probabilities; a temperature scales the result. They are
fitted on tuning data by minimising the NLL with L2 regularisation towards
the plain geometric mean (every weight ``1/V``), with L-BFGS.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..merge import LearnedMerge

KINDS = ("per_view", "per_view_class")
_TINY = 1e-12


def fit_weights(view_probs: np.ndarray, labels: np.ndarray, kind: str = "per_view",
                l2: float = 1e-2, iters: int = 200) -> LearnedMerge:
    """Fit a :class:`LearnedMerge` on ``(V, N, C)`` per-view probabilities."""
    if kind not in KINDS:
        raise InputError(f"kind must be one of {KINDS}, got {kind!r}")
    v, n, c = view_probs.shape
    logp = torch.log(torch.as_tensor(view_probs, dtype=torch.float64).clamp_min(_TINY))
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    shape = (v,) if kind == "per_view" else (v, c)
    base = torch.full(shape, 1.0 / v, dtype=torch.float64)
    w = base.clone().requires_grad_(True)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, log_t], lr=0.5, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        ww = w if kind == "per_view_class" else w[:, None]
        z = (logp * ww[:, None, :]).sum(0) / torch.exp(log_t)
        loss = torch.nn.functional.cross_entropy(z, y) + l2 * ((w - base) ** 2).sum() * v
        loss.backward()
        return loss

    opt.step(closure)
    return LearnedMerge(w.detach().numpy(), float(torch.exp(log_t).detach()))


def apply_weights(merge: LearnedMerge, view_probs: np.ndarray) -> np.ndarray:
    """Merged probabilities of ``(V, N, C)`` per-view probabilities, the
    views taken in the merge's order."""
    views = merge.views if merge.views is not None else None
    out = merge(torch.as_tensor(view_probs, dtype=torch.float64), [1.0] * view_probs.shape[0], "probs", views)
    return out.numpy()
