"""Tables in and out: CSV and Parquet files for models of tabular rows.

:func:`read_table` reads ``.csv``/``.tsv`` (pandas) and ``.parquet``/``.pq``
(pandas with pyarrow, the ``tables`` extra); :func:`model_inputs` picks the
columns a fitted model was trained on (by name when the model knows its
``feature_names_in_``, else every column but the target) and says, by name,
what is missing; :func:`prediction_frame` lays out merged predictions as a
table and :func:`write_table` writes it (CSV or Parquet by suffix).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, require

CSV_SUFFIXES = (".csv", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
TABLE_SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES


def is_table(path) -> bool:
    """True when ``path`` names a CSV or Parquet file (by suffix)."""
    return isinstance(path, (str, Path)) and Path(str(path)).suffix.lower() in TABLE_SUFFIXES


def _pandas():
    return require("pandas", "tables", "reading and writing tables")


def _check_parquet(path: Path) -> None:
    require("pyarrow", "tables", f"Parquet ({path.name}; CSV needs nothing more)")


def read_table(path) -> "pd.DataFrame":  # noqa: F821
    """The table in ``path`` (CSV, TSV or Parquet, by suffix)."""
    pd = _pandas()
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"{path.name}: not a table file (expected {', '.join(TABLE_SUFFIXES)})")
    if not path.is_file():
        raise InputError(f"table file not found: {path}")
    try:
        if suffix in PARQUET_SUFFIXES:
            _check_parquet(path)
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except InputError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise InputError(f"cannot read table {path}: {type(e).__name__}: {e}") from None


def write_table(frame, path) -> Path:
    """Write ``frame`` to ``path``: Parquet for ``.parquet``/``.pq``, else
    CSV (tab-separated for ``.tsv``), without the index."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        _check_parquet(path)
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    return path


def check_column(frame, name: str, what: str = "--target") -> None:
    """Refuse a column name the table does not have, listing those it has."""
    if name not in frame.columns:
        import difflib

        have = [str(c) for c in frame.columns]
        close = difflib.get_close_matches(str(name), have, n=3)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        more = f" ... ({len(have)} in all)" if len(have) > 20 else ""
        raise InputError(f"{what} {name!r} is not a column of the table{hint}; its columns: "
                         f"{', '.join(have[:20])}{more}")


@dataclass
class ModelInputs:
    """The rows to give a model: ``x`` (a DataFrame when the model was
    fitted on named columns, else a float64 array) and the column names."""

    x: object
    columns: list


def model_inputs(model, frame, target: str | None = None, columns: list | None = None) -> ModelInputs:
    """The columns of ``frame`` that ``model`` takes: its ``feature_names_in_``
    when it has them, else ``columns`` when given (e.g. the names saved with
    the feature statistics), else every column but ``target``."""
    if target is not None:
        check_column(frame, target)
    named = getattr(model, "feature_names_in_", None)
    if named is not None:
        wanted = [str(c) for c in named]
    elif columns is not None:
        wanted = list(columns)
    else:
        wanted = [c for c in frame.columns if c != target]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise InputError(f"the table lacks column(s) the model was fitted on: {', '.join(map(str, missing[:10]))}")
    if target is not None and target in wanted:
        raise InputError(f"--target {target!r} is one of the model's input columns")
    n = getattr(model, "n_features_in_", None)
    if n is not None and len(wanted) != n:
        raise InputError(f"the model takes {n} features; the table has {len(wanted)} columns besides the target "
                         f"({', '.join(map(str, wanted[:10]))}{' ...' if len(wanted) > 10 else ''})")
    sub = frame[wanted]
    if named is not None:
        return ModelInputs(sub, wanted)
    bad = [c for c in wanted if sub[c].dtype.kind not in "biuf"]
    if bad:
        raise InputError(f"column(s) {', '.join(map(str, bad[:10]))} are not numeric, and the model was fitted "
                         "on an array (no column names): encode them as numbers first")
    return ModelInputs(sub.to_numpy(dtype=np.float64, na_value=np.nan), wanted)


def prediction_frame(pred, index=None):
    """One row per input: ``prediction``, then ``p_<class>`` per class
    (classification) or ``std``, the spread across the copies (regression)."""
    pd = _pandas()
    data = {"row": np.arange(len(pred.pred)) if index is None else np.asarray(index)}
    data["prediction"] = pred.pred
    if pred.probs is not None:
        for j, c in enumerate(pred.classes):
            data[f"p_{c}"] = pred.probs[:, j]
    if pred.std is not None:
        data["std"] = pred.std
    return pd.DataFrame(data)


__all__ = ["TABLE_SUFFIXES", "CSV_SUFFIXES", "PARQUET_SUFFIXES", "EXTRA", "is_table", "read_table", "write_table",
           "check_column", "ModelInputs", "model_inputs", "prediction_frame"]
