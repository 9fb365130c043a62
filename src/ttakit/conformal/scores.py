"""Conformity scores of split-conformal classification: how *un*like the
model's prediction a candidate label is (higher = stranger).

- **LAC** (least ambiguous set-valued classifier; Sadinle et al. 2019):
  ``1 - p_y``. Smallest sets on average; large sets only where the model
  is unsure.
- **APS** (adaptive prediction sets; Romano et al. 2020): the probability
  mass of every label ranked at or above ``y``. Sets grow with the input's
  difficulty.
- **RAPS** (regularised APS; Angelopoulos et al. 2021): APS plus
  ``lam * max(0, rank(y) - k_reg)``, which keeps long tails of unlikely
  labels out of the sets.

APS and RAPS can be randomised (``u ~ U(0, 1)`` times ``p_y`` replaces the
label's own mass), which makes coverage exact instead of at least
``1 - alpha``; the default is deterministic.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

METHODS = ("lac", "aps", "raps")
#: RAPS defaults (Angelopoulos et al. 2021 use lam in [0.001, 0.5] and k_reg of a few labels)
RAPS_LAMBDA = 0.01
RAPS_K_REG = 1


def check_probs(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise InputError(f"probabilities must have shape (N, C) with C >= 2 classes, got {p.shape}")
    if not np.all(np.isfinite(p)) or p.min() < 0:
        raise InputError("probabilities must be finite and >= 0 (pass softmax outputs, not logits)")
    return p


def score_matrix(probs, method: str = "lac", *, lam: float = RAPS_LAMBDA, k_reg: int = RAPS_K_REG,
                 u: np.ndarray | None = None) -> np.ndarray:
    """Score of every label for every input, shape ``(N, C)``. ``u`` (shape
    ``(N,)``, in [0, 1]) randomises APS/RAPS; ``None`` is the deterministic
    score (``u = 1``)."""
    if method not in METHODS:
        raise InputError(f"conformal method must be one of {METHODS}, got {method!r}")
    p = check_probs(probs)
    if method == "lac":
        return 1.0 - p
    n, c = p.shape
    order = np.argsort(-p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1)
    above = np.cumsum(ranked, axis=1) - ranked          # mass strictly above each rank
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(c)[None, :].repeat(n, 0), axis=1)
    own = p if u is None else p * np.asarray(u, dtype=np.float64)[:, None]
    scores = np.take_along_axis(above, rank, axis=1) + own
    if method == "raps":
        if lam < 0 or k_reg < 0:
            raise InputError(f"RAPS needs lam >= 0 and k_reg >= 0, got lam={lam}, k_reg={k_reg}")
        scores = scores + lam * np.maximum(0, rank + 1 - k_reg)
    return scores


def label_scores(probs, labels, method: str = "lac", **kw) -> np.ndarray:
    """Score of each input's true label, shape ``(N,)``."""
    s = score_matrix(probs, method, **kw)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (s.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() >= s.shape[1])):
        raise InputError(f"labels must be {s.shape[0]} class indices in [0, {s.shape[1] - 1}]")
    return s[np.arange(len(labels)), labels]
