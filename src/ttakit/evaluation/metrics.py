"""Scores of probabilistic classifiers: accuracy, top-k, NLL, Brier, ECE."""

from __future__ import annotations

import numpy as np

from ..errors import InputError

_TINY = 1e-12


def as_labels(y, n: int | None = None) -> np.ndarray:
    """Labels as int64 class indices, checked: one per input (``n`` inputs,
    when known), whole numbers, >= 0."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise InputError(f"labels must be one class index per input, shape (N,), got shape {y.shape}")
    if n is not None and len(y) != n:
        raise InputError(f"{n} inputs but {len(y)} labels: they must match one to one")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if y.dtype.kind in "fc" and np.all(np.isfinite(y)) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise InputError(f"labels must be integer class indices, got dtype {y.dtype}")
    if y.size and y.min() < 0:
        raise InputError(f"labels must be class indices >= 0, found {y.min()}")
    return y.astype(np.int64)


def check_probs_and_labels(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2:
        raise InputError(f"probabilities must have shape (N, C), got {probs.shape}")
    if labels.shape != (probs.shape[0],):
        raise InputError(f"{probs.shape[0]} predictions but labels have shape {labels.shape}; "
                         "labels must be one class index per input")
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise InputError(f"labels must be class indices in [0, {probs.shape[1] - 1}], "
                         f"found {labels.min()}..{labels.max()}")
    return probs, labels.astype(np.int64)


def accuracy(probs, labels) -> float:
    probs, labels = check_probs_and_labels(probs, labels)
    return float((probs.argmax(1) == labels).mean())


def top_k_accuracy(probs, labels, k: int = 5) -> float:
    probs, labels = check_probs_and_labels(probs, labels)
    k = min(k, probs.shape[1])
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(1).mean())


def nll(probs, labels) -> float:
    """Mean negative log-likelihood of the true class (nats)."""
    probs, labels = check_probs_and_labels(probs, labels)
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], _TINY, None)).mean())


def brier(probs, labels) -> float:
    """Mean squared distance between the probabilities and the one-hot label."""
    probs, labels = check_probs_and_labels(probs, labels)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), labels] = 1
    return float(((probs - onehot) ** 2).sum(1).mean())


def ece(probs, labels, bins: int = 15) -> float:
    """Expected calibration error of the top-class confidence (equal-width bins)."""
    probs, labels = check_probs_and_labels(probs, labels)
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def reliability(probs, labels, bins: int = 15):
    """Per-bin ``(mean confidence, accuracy, count)`` for a reliability diagram."""
    probs, labels = check_probs_and_labels(probs, labels)
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        m = idx == b
        rows.append((float(conf[m].mean()) if m.any() else float("nan"),
                     float(correct[m].mean()) if m.any() else float("nan"), int(m.sum())))
    return rows


def summary(probs, labels) -> dict[str, float]:
    return {"accuracy": accuracy(probs, labels), "nll": nll(probs, labels),
            "brier": brier(probs, labels), "ece": ece(probs, labels)}
