"""Tables in and out: CSV and Parquet files for models of tabular rows.

:func:`read_table` reads ``.csv``/``.tsv`` (pandas) and ``.parquet``/``.pq``
(pandas with pyarrow, the ``tables`` extra); :func:`model_inputs` picks the
columns a fitted model was trained on (by name when the model knows its
``feature_names_in_``, else every column but the target) and says, by name,
what is missing; :func:`prediction_frame` lays out merged predictions as a
table and :func:`write_table` writes it (CSV or Parquet by suffix).

A table is checked before it is read whole: :func:`read_header` reads its
column names only (the CSV header, the Parquet schema), refusing more than
``max_table_columns`` columns or a name longer than ``max_cell_chars``
(:mod:`ttakit.limits`) while it reads; :func:`model_columns` checks them
against the model; then :func:`read_table` reads only the columns needed
and refuses a cell longer than ``max_cell_chars``. Messages quote input
values and names cut short.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, require
from ..limits import current
from ..policy.spec import short

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


#: bytes read at a time while looking for the end of a CSV header
HEADER_BLOCK = 1 << 20


def _table_path(path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError(f"{short(path.name)}: not a table file (expected {', '.join(TABLE_SUFFIXES)})")
    if not path.is_file():
        raise InputError(f"table file not found: {short(str(path), 200)}")
    return path


def _sep(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _unreadable(path: Path, e: Exception) -> InputError:
    return InputError(f"cannot read table {short(str(path), 200)}: {type(e).__name__}: {short(str(e), 300)}")


def _scan_csv_header(path: Path, sep: str) -> None:
    """Refuse a CSV header of more than ``max_table_columns`` names or with a
    name longer than ``max_cell_chars``, reading it in blocks (never whole
    before counting). Separators are counted as written: one inside a quoted
    name counts too."""
    limits = current()
    cols, run, quotes = 1, 0, 0
    s = sep.encode()
    with open(path, "rb") as f:
        while True:
            piece = f.readline(HEADER_BLOCK)
            if not piece:
                return
            quotes += piece.count(b'"')
            parts = piece.split(s)
            cols += len(parts) - 1
            limits.check("max_table_columns", cols, f"{short(path.name)} has too many columns")
            for k, part in enumerate(parts):  # bytes: up to 4 per character (names are checked again)
                run = run + len(part) if k == 0 else len(part)
                if run > 4 * limits.max_cell_chars:
                    limits.check("max_cell_chars", run // 4, f"{short(path.name)}: the name of column "
                                                             f"{cols - len(parts) + k + 1} is too long "
                                                             "(characters, at least)")
            if piece.endswith(b"\n") and quotes % 2 == 0:
                return


def read_header(path) -> list:
    """The column names of the table in ``path``, read without its rows (the
    CSV header, the Parquet schema) and checked against ``max_table_columns``
    and ``max_cell_chars``."""
    pd = _pandas()
    path = _table_path(path)
    limits = current()
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            _check_parquet(path)
            import pyarrow.parquet as pq

            names = list(pq.read_schema(path).names)
            limits.check("max_table_columns", len(names), f"{short(path.name)} has too many columns")
        else:
            _scan_csv_header(path, _sep(path))
            names = list(pd.read_csv(path, sep=_sep(path), nrows=0).columns)
    except InputError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise _unreadable(path, e) from None
    for j, name in enumerate(names):
        if isinstance(name, str):
            limits.check("max_cell_chars", len(name), f"{short(path.name)}: column {j + 1}'s name is too long")
    return names


def read_table(path, columns: list | None = None) -> "pd.DataFrame":  # noqa: F821
    """The table in ``path`` (CSV, TSV or Parquet, by suffix): only
    ``columns`` when given (names of :func:`read_header`), the header checked
    first; a cell longer than ``max_cell_chars`` is refused."""
    pd = _pandas()
    names = read_header(path)
    path = Path(path)
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise InputError(f"{short(path.name)} lacks column(s) {', '.join(short(c) for c in missing[:10])}")
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            frame = pd.read_parquet(path, columns=None if columns is None else list(columns))
        else:
            wanted = None if columns is None else set(columns)
            frame = pd.read_csv(path, sep=_sep(path), usecols=None if wanted is None else (lambda c: c in wanted))
    except InputError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise _unreadable(path, e) from None
    check_cells(frame, path.name)
    return frame


def check_cells(frame, name: str = "the table") -> None:
    """Refuse a text (or bytes) cell longer than ``max_cell_chars``, naming
    its column and row."""
    limit = current().max_cell_chars
    for c in frame.columns:
        col = frame[c]
        if col.dtype.kind not in "OSU" and str(col.dtype) not in ("string", "str"):
            continue
        lengths = np.fromiter((len(v) if isinstance(v, (str, bytes)) else 0 for v in col), np.int64, len(col))
        if len(lengths) and lengths.max() > limit:
            row = int(lengths.argmax())
            current().check("max_cell_chars", int(lengths[row]),
                            f"{short(name)}: the cell of column {short(c)} in row {row} is too long "
                            f"(it starts {short(col.iloc[row])})")


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
    """Refuse a column name the table (a DataFrame, or its list of column
    names) does not have, listing those it has."""
    have = list(frame.columns) if hasattr(frame, "columns") else list(frame)
    if name not in have:
        import difflib

        text = [str(c) for c in have]
        close = difflib.get_close_matches(str(name), [t for t in text if len(t) <= 200], n=3) \
            if len(str(name)) <= 200 else []
        hint = f" (did you mean {' or '.join(short(c) for c in close)}?)" if close else ""
        more = f" ... ({len(text)} in all)" if len(text) > 20 else ""
        raise InputError(f"{what} {short(name)} is not a column of the table{hint}; its columns: "
                         f"{', '.join(short(c) for c in text[:20])}{more}")


def _names(cols) -> str:
    return ", ".join(short(c) for c in cols[:10]) + (f" ... ({len(cols)} in all)" if len(cols) > 10 else "")


def model_columns(model, header: list, target: str | None = None, columns: list | None = None) -> list:
    """The names of the columns ``model`` takes from a table whose column
    names are ``header``: its ``feature_names_in_`` when it has them, else
    ``columns`` when given (e.g. the names saved with the feature
    statistics), else every column but ``target``. Refuses what is missing
    before any row is read."""
    if target is not None:
        check_column(header, target)
    named = getattr(model, "feature_names_in_", None)
    if named is not None:
        wanted = [str(c) for c in named]
    elif columns is not None:
        wanted = list(columns)
    else:
        wanted = [c for c in header if c != target]
    have = set(header)
    missing = [c for c in wanted if c not in have]
    if missing:
        raise InputError(f"the table lacks column(s) the model was fitted on: {_names(missing)}")
    if target is not None and target in wanted:
        raise InputError(f"--target {short(target)} is one of the model's input columns")
    n = getattr(model, "n_features_in_", None)
    if n is not None and len(wanted) != n:
        raise InputError(f"the model takes {n} features; the table has {len(wanted)} columns besides the target "
                         f"({_names(wanted)})")
    return wanted


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
    named = getattr(model, "feature_names_in_", None)
    wanted = model_columns(model, list(frame.columns), target, columns)
    sub = frame[wanted]
    if named is not None:
        return ModelInputs(sub, wanted)
    bad = [c for c in wanted if sub[c].dtype.kind not in "biuf"]
    if bad:
        raise InputError(f"column(s) {_names(bad)} are not numeric, and the model was fitted "
                         "on an array (no column names): encode them as numbers first")
    return ModelInputs(sub.to_numpy(dtype=np.float64, na_value=np.nan), wanted)


def empty_prediction_frame():
    """The table :func:`prediction_frame` writes when no row could be predicted."""
    pd = _pandas()
    return pd.DataFrame({"row": np.zeros(0, np.int64), "prediction": np.zeros(0)})


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


__all__ = ["TABLE_SUFFIXES", "CSV_SUFFIXES", "PARQUET_SUFFIXES", "EXTRA", "is_table", "read_header", "read_table",
           "check_cells", "write_table", "empty_prediction_frame", "check_column", "model_columns", "ModelInputs", "model_inputs",
           "prediction_frame"]
