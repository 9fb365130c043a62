"""Write :class:`~ttakit.io.prediction.Predictions` as CSV or JSON.

Every writer reads the same per-image :func:`records` (plain dicts: path,
label, class, confidence, entropy, spread, agreement, and all the
probabilities or the top k), so the formats cannot drift apart, and a new
format (COCO, Parquet...) is one function that takes ``(pred, out, top_k)``
added to :data:`WRITERS`. ``out`` is an open text file for the formats here;
a binary format would take a binary file.

CSV, one row per image: ``path, label[, class], confidence, entropy, spread,
agreement`` then one ``p_<class>`` column per class, or with ``top_k`` the
columns ``top1_label[, top1_class], top1_prob, ...``. Numbers have 7
significant digits (float32 precision).

JSON: ``{"results": [...], "failures": [{"path", "reason"}], "summary":
{...}}``, the summary saying what was run (policy, merge, views, forward
passes, timings).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import InputError
from ..files import write_atomic
from .images import printable
from .prediction import failed_rows


def _num(v: float) -> float:
    """A float rounded to float32 precision, for output."""
    return float(f"{float(v):.7g}")


def _top_k(probs: np.ndarray, k: int) -> np.ndarray:
    k = min(k, probs.shape[-1])
    return np.argsort(-probs, axis=-1, kind="stable")[:, :k]


def n_classes(pred) -> int:
    """How many classes the predictions have (0 when there are no rows)."""
    probs = pred.result.probs
    return int(probs.shape[-1]) if probs.ndim == 2 else 0


def records(pred, top_k: int | None = None) -> Iterator[dict]:
    """One dict per image predicted, in order (rows the model failed on,
    ``result.failed``, are left out: they are among ``pred.failures``):
    ``path`` (what UTF-8 cannot encode backslash-escaped), ``label``, ``class`` (only
    with class names), ``confidence`` (merged probability of the label),
    ``entropy``, ``spread``, ``agreement``, then ``probs`` (all classes) or,
    with ``top_k``, ``top_k``: a list of ``{"label", "class"?, "prob"}``,
    largest first. Numbers are numpy scalars, formatted by the writers."""
    r = pred.result
    classes = pred.classes or None
    tops = _top_k(r.probs, top_k) if top_k is not None else None
    skip = failed_rows(r)
    for i, path in enumerate(pred.paths):
        if i in skip:
            continue
        label = int(r.labels[i])
        rec: dict = {"path": printable(path), "label": label}
        if classes:
            rec["class"] = classes[label]
        rec.update(confidence=r.probs[i, label], entropy=r.entropy[i], spread=r.spread[i],
                   agreement=r.agreement[i])
        if tops is None:
            rec["probs"] = r.probs[i]
        else:
            rec["top_k"] = [{"label": int(j), **({"class": classes[j]} if classes else {}), "prob": r.probs[i, j]}
                            for j in tops[i]]
        yield rec


SCORES = ("confidence", "entropy", "spread", "agreement")


def write_csv(pred, out: IO[str], top_k: int | None = None) -> None:
    """Write ``pred`` to the text file ``out`` as CSV (see the module docstring)."""
    w = csv.writer(out, lineterminator="\n")
    named = bool(pred.classes)
    k = n_classes(pred)
    head = ["path", "label"] + (["class"] if named else []) + list(SCORES)
    if top_k is None:
        head += [f"p_{pred.classes[j] if named else j}" for j in range(k)]
    else:
        for j in range(1, min(top_k, k) + 1):
            head += [f"top{j}_label"] + ([f"top{j}_class"] if named else []) + [f"top{j}_prob"]
    w.writerow(head)
    for rec in records(pred, top_k):
        row = [rec["path"], rec["label"]] + ([rec["class"]] if named else [])
        row += [f"{rec[s]:.7g}" for s in SCORES]
        if top_k is None:
            row += [f"{v:.7g}" for v in rec["probs"]]
        else:
            for t in rec["top_k"]:
                row += [t["label"]] + ([t["class"]] if named else []) + [f"{t['prob']:.7g}"]
        w.writerow(row)


def to_json(pred, top_k: int | None = None) -> dict:
    """``pred`` as a JSON-ready dict: ``results``, ``failures``, ``summary``."""
    from ..version import __version__

    rows = []
    for rec in records(pred, top_k):
        for s in SCORES:
            rec[s] = _num(rec[s])
        if "probs" in rec:
            rec["probs"] = [_num(v) for v in rec["probs"]]
        else:
            for t in rec["top_k"]:
                t["prob"] = _num(t["prob"])
        rows.append(rec)
    r = pred.result
    unique = pred.policy.unique()
    summary = {
        "ttakit": __version__,
        "model": pred.model,
        "policy": pred.policy.spec,
        "policy_source": pred.policy.source,
        "policy_distinct": unique.spec,
        "views": len(pred.policy),
        "distinct_views": len(unique),
        "merge": pred.merge,
        "output_kind": r.output_kind,
        "classes": pred.classes,
        "n_classes": n_classes(pred),
        "images": len(rows),
        "failed": len(pred.failures),
        "forward_passes": int(r.forward_passes),
        "seconds": round(pred.seconds, 4),
        "model_seconds": round(float(r.seconds), 4),
    }
    notes = getattr(pred, "notes", None) or {}
    summary["converted"] = {kind: [printable(p) for p, _ in done] for kind, done in notes.items()}
    return {"results": rows, "failures": [{"path": printable(p), "reason": printable(why)}
                                          for p, why in pred.failures],
            "summary": summary}


def write_json(pred, out: IO[str], top_k: int | None = None) -> None:
    """Write :func:`to_json` of ``pred`` to the text file ``out``, indented."""
    json.dump(to_json(pred, top_k), out, indent=2)
    out.write("\n")


#: format name -> ``writer(pred, out, top_k)``
WRITERS: dict[str, Callable[..., None]] = {"csv": write_csv, "json": write_json}


def format_for(path: str | Path | None, format: str | None = None) -> str:
    """The format to write: ``format`` when given, else the one named by the
    suffix of ``path`` (``.json``), else csv."""
    if format is None:
        suffix = Path(path).suffix.lower().lstrip(".") if path is not None else ""
        format = suffix if suffix in WRITERS else "csv"
    if format not in WRITERS:
        raise InputError(f"format must be one of {', '.join(WRITERS)}, got {format!r}")
    return format


def render(pred, format: str = "csv", top_k: int | None = None) -> str:
    """``pred`` written in ``format``, as one string."""
    buf = io.StringIO()
    WRITERS[format_for(None, format)](pred, buf, top_k)
    return buf.getvalue()


def write_predictions(pred, path: str | Path, format: str | None = None, top_k: int | None = None) -> str:
    """Write ``pred`` to the file ``path`` (format from ``format``, else the
    suffix); returns the format written. The text is built first and
    written with :func:`write_atomic`, so a failure leaves ``path`` as it
    was. Raises ``OSError`` when the file cannot be written."""
    fmt = format_for(path, format)
    write_atomic(path, render(pred, fmt, top_k))
    return fmt


__all__ = ["WRITERS", "records", "write_csv", "to_json", "write_json", "format_for", "render",
           "write_atomic", "write_predictions"]
