"""Noise copies through a logistic regression without writing them.

A fitted scikit-learn ``LogisticRegression`` is linear in its input: the
decision values of a noisy copy ``x + s`` are ``x W' + b + s W'``. A row
noise view (:class:`~ttakit.views.rows.RowNoise`) draws each row's step
``s`` from a fixed table of its own (``PATTERNS`` rows, picked by a hash of
the row), so ``s W'`` is one row of ``table W'``, computed once per view.
The copies' decision values then cost one gather of ``n_classes`` numbers
per copy instead of writing and multiplying ``n_features`` numbers: the
16 copies of a row cost less than one plain call on 16 times the rows.

The result is the general run loop's (:func:`~ttakit.tasks.rows.run_rows`)
up to float rounding, because the shortcut is only taken where the view
would change nothing else:

- only ``LogisticRegression`` itself (not a subclass or a pipeline) whose
  ``predict_proba`` is ``expit`` (two classes) or ``softmax`` of
  ``x W' + b``: checked on a few of the rows, since older scikit-learn
  versions normalise one-vs-rest ``expit`` instead for some settings;
- only row noise views, on numeric features (a view that rounds integer
  features is not linear);
- only rows that no copy can push out of the training range (the views
  clip there): a row within the largest step of a bound, or with a value
  that is not finite, goes through the general loop, whose result for a
  row does not depend on the rows beside it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..views.rows import RowNoise, row_patterns

#: rows per block of the shortcut (decision values of ``n_classes`` numbers per row and copy)
BLOCK_ROWS = 65536


def _is_plain_logistic(model) -> bool:
    cls = type(model)
    return (cls.__name__ == "LogisticRegression" and cls.__module__.startswith("sklearn.linear_model")
            and hasattr(model, "coef_") and hasattr(model, "intercept_") and hasattr(model, "classes_"))


def _proba(decision: np.ndarray) -> np.ndarray:
    """``expit`` (one column: two classes) or ``softmax`` of decision values, as scikit-learn computes them."""
    from scipy.special import expit, softmax  # scipy comes with scikit-learn, the only models taken here

    if decision.shape[1] == 1:
        p1 = expit(decision[:, 0])
        return np.column_stack([1 - p1, p1])
    return softmax(decision, axis=1)


def linear_noise_applies(model, rows: np.ndarray, views) -> bool:
    """Whether :func:`linear_noise_proba` can take ``model`` and ``views`` on ``rows``."""
    views = list(views)
    if not views or not _is_plain_logistic(model) or rows.dtype != np.float64 or rows.ndim != 2:
        return False
    if any(type(v) is not RowNoise for v in views):
        return False
    stats = views[0].stats
    if any(v.stats.fingerprint != stats.fingerprint for v in views):
        return False
    coef = np.asarray(model.coef_)
    if coef.ndim != 2 or coef.shape[1] != rows.shape[1] or len(model.classes_) < 2:
        return False
    if len(model.classes_) == 2 and coef.shape[0] != 1:
        return False
    if (stats.mask("integer") & stats.mask("numeric", "integer")).any():
        return False
    probe = rows[np.isfinite(rows).all(1)][:8]  # the model's own probabilities are expit/softmax of x W' + b
    if len(probe) == 0:
        return False
    ours = _proba(probe @ coef.T + np.asarray(model.intercept_, dtype=np.float64))
    return bool(np.allclose(model.predict_proba(probe), ours, rtol=1e-9, atol=1e-12))


def linear_noise_proba(model, rows: np.ndarray, views, weights) -> tuple[np.ndarray, np.ndarray]:
    """``(probs (N, C), done (N,))``: the weighted mean of ``model``'s
    probabilities over the noise copies of each row where ``done``; the other
    rows (near a bound of the training range, or not finite) are left for the
    general loop (their ``probs`` are 0). Check :func:`linear_noise_applies` first."""
    from scipy.special import expit, softmax

    views = list(views)
    w = np.asarray(weights, dtype=np.float64)
    stats = views[0].stats
    f = rows.shape[1]
    moved = stats.mask("numeric", "integer")
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    steps = []
    for v in views:
        table = v.table(f, torch.float64, torch.device("cpu")).numpy()
        steps.append(np.where(moved, table * (stats.scale * v.strength), 0.0))
    reach = np.max([np.abs(s).max(0) for s in steps], axis=0)
    low, high = np.asarray(stats.low, np.float64), np.asarray(stats.high, np.float64)
    with np.errstate(invalid="ignore"):
        inside = ((rows - reach >= low) & (rows + reach <= high)) | ~moved
    done = inside.all(1) & np.isfinite(rows).all(1)
    shifts = [s @ coef.T for s in steps]  # (PATTERNS, K): each pattern's change of the decision values
    n_classes = len(model.classes_)
    probs = np.zeros((len(rows), n_classes))
    idx = np.flatnonzero(done)
    for start in range(0, len(idx), BLOCK_ROWS):
        part = idx[start:start + BLOCK_ROWS]
        x = rows[part]
        pattern = row_patterns(torch.from_numpy(x)).numpy()
        base = x @ coef.T + intercept
        if n_classes == 2:  # sum the positive class only: the other is one minus it
            p1 = sum(wk * expit((base + shift[pattern])[:, 0]) for shift, wk in zip(shifts, w)) / w.sum()
            probs[part, 0], probs[part, 1] = 1 - p1, p1
        else:
            probs[part] = sum(wk * softmax(base + shift[pattern], axis=1) for shift, wk in zip(shifts, w)) / w.sum()
    return probs, done


def shortcut_proba(model, rows: np.ndarray, views, weights, general) -> np.ndarray | None:
    """The merged probabilities ``(N, C)`` through the shortcut, with
    ``general(rows_subset)`` (the run loop) for the rows it leaves; None when
    the shortcut does not apply (then run the loop on every row)."""
    if not (linear_noise_applies(model, rows, views) and np.isfinite(rows).all()):
        return None
    probs, done = linear_noise_proba(model, rows, views, weights)
    if not done.all():  # rows near a bound of the training range: the views clip them
        probs[~done] = general(rows[~done])
    return probs


__all__ = ["linear_noise_applies", "linear_noise_proba", "shortcut_proba", "BLOCK_ROWS"]
