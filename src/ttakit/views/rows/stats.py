"""What row views need to know about each feature, learnt from training data.

:class:`FeatureStats` is fitted on the training rows and gives every column
a role:

- ``"numeric"``: a real number; noise is scaled by its robust spread and
  results are clipped to the training range;
- ``"integer"``: like numeric, then rounded (no 2.7 children);
- ``"categorical"``: a code from a finite set; only dropout (to the mode) and
  resampling (by training frequency) change it;
- ``"ignore"``: never changed (ids, the time of day a model must see as is).

Roles are inferred (a column whose values are all whole numbers is
``integer``, or ``categorical`` when it holds at most two distinct values;
in a DataFrame, object, string, category and bool columns are categorical)
and overridable with ``roles={column: role}`` (a name or a position) or one
role per column.

NumPy arrays are used as they are (categorical columns hold numeric codes).
A pandas DataFrame is encoded at the boundary (:meth:`FeatureStats.encode`)
into a float64 array, categories as codes, and decoded back
(:class:`Decoder`) with its columns and dtypes, so a pipeline that one-hot
encodes strings still receives strings. NaN is refused by default
(``nan="raise"``: the row fails as the task's ``on_error`` says); with
``nan="impute"`` it becomes the training median (numeric) or mode before
any view.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from ...errors import InputError
from ..base import short_repr

ROLES = ("numeric", "integer", "categorical", "ignore")
NAN_POLICIES = ("raise", "impute")
#: the robust spread of a normal distribution: IQR / 1.349 and 1.4826 x MAD equal its sigma
IQR_TO_SIGMA = 1.349
MAD_TO_SIGMA = 1.4826


def is_dataframe(x) -> bool:
    """True for a pandas DataFrame (checked without importing pandas)."""
    return type(x).__module__.startswith("pandas") and hasattr(x, "columns") and hasattr(x, "iloc")


def robust_scale(col: np.ndarray) -> float:
    """A robust estimate of a column's spread (finite values only): IQR/1.349,
    else 1.4826 x MAD, else the standard deviation, else 0 (a constant)."""
    v = col[np.isfinite(col)]
    if v.size < 2:
        return 0.0
    q1, q3 = np.quantile(v, [0.25, 0.75])
    if q3 > q1:
        return float((q3 - q1) / IQR_TO_SIGMA)
    mad = float(np.median(np.abs(v - np.median(v))))
    if mad > 0:
        return mad * MAD_TO_SIGMA
    return float(v.std())


class FeatureStats:
    """Per-column roles, centre (median or mode), robust scale, range and
    category frequencies of the training rows. See the module doc."""

    def __init__(self, roles: Mapping | Sequence[str] | None = None, *, nan: str = "raise"):
        if nan not in NAN_POLICIES:
            raise InputError(f"nan must be one of {', '.join(NAN_POLICIES)}, got {nan!r}")
        self.roles = roles
        self.nan = nan
        self.fitted = False

    # -- fitting --------------------------------------------------------------
    def fit(self, x) -> "FeatureStats":
        """Learn the statistics from training rows (a 2-D array or a DataFrame)."""
        self.columns = list(x.columns) if is_dataframe(x) else None
        self.dtypes = list(x.dtypes) if is_dataframe(x) else None
        self.categories: dict[int, np.ndarray] = {}   # DataFrame categorical column -> its values
        if is_dataframe(x):
            inferred = [_frame_role(x.iloc[:, j]) for j in range(x.shape[1])]
            for j, role in enumerate(inferred):
                if role == "categorical" and not _is_numeric_dtype(x.dtypes.iloc[j]):
                    col = x.iloc[:, j]
                    values = col.cat.categories.to_numpy() if hasattr(col, "cat") else col.dropna().unique()
                    self.categories[j] = np.asarray(sorted(values, key=_sort_key), dtype=object)
            a = self.encode(x)[0]
        else:
            a = _as_matrix(x)
            inferred = [_array_role(a[:, j]) for j in range(a.shape[1])]
        self.n_features = a.shape[1]
        self.role_list = tuple(self._override(inferred))
        finite = np.where(np.isfinite(a), a, np.nan)
        with np.errstate(all="ignore"):
            self.low = np.nan_to_num(np.nanmin(finite, 0) if len(a) else np.zeros(a.shape[1]))
            self.high = np.nan_to_num(np.nanmax(finite, 0) if len(a) else np.zeros(a.shape[1]))
        self.scale = np.array([robust_scale(a[:, j]) for j in range(a.shape[1])])
        self.levels: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # categorical column -> (values, cdf)
        centre = np.zeros(a.shape[1])
        for j, role in enumerate(self.role_list):
            v = a[:, j][np.isfinite(a[:, j])]
            if v.size == 0:
                continue
            if role == "categorical":
                values, counts = np.unique(v, return_counts=True)
                self.levels[j] = (values, np.cumsum(counts) / counts.sum())
                centre[j] = values[counts.argmax()]
            else:
                centre[j] = np.median(v)
                if role == "integer":
                    centre[j] = np.round(centre[j])
        self.centre = centre
        self.fitted = True
        self.fingerprint = self._fingerprint()
        return self

    def _override(self, inferred: list[str]) -> list[str]:
        roles = list(inferred)
        given = self.roles
        if given is None:
            return roles
        if isinstance(given, str):
            raise InputError(f"roles must be a mapping {{column: role}} or one role per column, got {given!r}")
        items = given.items() if isinstance(given, Mapping) else enumerate(given)
        if not isinstance(given, Mapping) and len(given) != len(roles):
            raise InputError(f"roles lists {len(given)} roles for {len(roles)} columns")
        for key, role in items:
            if role not in ROLES:
                raise InputError(f"unknown role {short_repr(role)} for column {short_repr(key)}; valid: "
                                 f"{', '.join(ROLES)}")
            roles[self._column_index(key, len(roles))] = role
        return roles

    def _column_index(self, key, width: int) -> int:
        if self.columns is not None and key in self.columns:
            return self.columns.index(key)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and 0 <= key < width:
            return int(key)
        raise InputError(f"roles names column {short_repr(key)}, which is not a column of the training data")

    def _fingerprint(self) -> str:
        h = hashlib.sha1()
        for arr in (self.low, self.high, self.scale, self.centre):
            h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
        h.update(repr(self.role_list).encode())
        for j in sorted(self.levels):
            for arr in self.levels[j]:
                h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
        return h.hexdigest()[:12]

    # -- column groups (what views use) ---------------------------------------
    def mask(self, *roles: str) -> np.ndarray:
        """Boolean ``(F,)``: the columns with one of ``roles``."""
        self.check_fitted()
        return np.array([r in roles for r in self.role_list], dtype=bool)

    def check_fitted(self) -> None:
        if not self.fitted:
            raise InputError("FeatureStats must be fitted on training rows first (FeatureStats(...).fit(x))")

    def summary(self) -> list[dict]:
        """One entry per column: name, role, centre, scale, range."""
        self.check_fitted()
        names = self.columns or list(range(self.n_features))
        return [{"column": names[j], "role": self.role_list[j], "centre": float(self.centre[j]),
                 "scale": float(self.scale[j]), "low": float(self.low[j]), "high": float(self.high[j])}
                for j in range(self.n_features)]

    # -- saving ---------------------------------------------------------------
    def to_dict(self) -> dict:
        """The fitted statistics as plain JSON/YAML values (what a saved row
        policy carries: :func:`ttakit.policy.rows.save_row_policy`)."""
        self.check_fitted()
        return {
            "n_features": int(self.n_features), "nan": self.nan, "roles": list(self.role_list),
            "columns": None if self.columns is None else [_plain(c) for c in self.columns],
            "dtypes": None if self.dtypes is None else [str(d) for d in self.dtypes],
            "categories": {str(j): [_plain(v) for v in vals] for j, vals in self.categories.items()},
            "low": self.low.tolist(), "high": self.high.tolist(), "scale": self.scale.tolist(),
            "centre": self.centre.tolist(),
            "levels": {str(j): {"values": v.tolist(), "cdf": c.tolist()} for j, (v, c) in self.levels.items()},
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, d) -> "FeatureStats":
        """Fitted statistics from :meth:`to_dict`'s mapping; refuses one whose
        values do not fit together, or whose fingerprint does not match them."""
        try:
            n = int(d["n_features"])
            roles = [str(r) for r in d["roles"]]
            stats = cls(roles, nan=d.get("nan", "raise"))
            vectors = {k: np.asarray(d[k], dtype=np.float64) for k in ("low", "high", "scale", "centre")}
            levels = {int(j): (np.asarray(e["values"], dtype=np.float64), np.asarray(e["cdf"], dtype=np.float64))
                      for j, e in (d.get("levels") or {}).items()}
            categories = {int(j): np.asarray(list(v), dtype=object) for j, v in (d.get("categories") or {}).items()}
            columns = d.get("columns")
            dtypes = d.get("dtypes")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"malformed feature statistics ({type(e).__name__}: {e})") from None
        bad = [r for r in roles if r not in ROLES]
        if bad or len(roles) != n or any(v.shape != (n,) for v in vectors.values()):
            raise InputError(f"malformed feature statistics: {n} features need {n} roles (of {', '.join(ROLES)}) "
                             "and low, high, scale and centre of that length")
        if columns is not None and len(columns) != n:
            raise InputError(f"malformed feature statistics: {len(columns)} column names for {n} features")
        if any(not 0 <= j < n for j in [*levels, *categories]):
            raise InputError("malformed feature statistics: a categorical column index is out of range")
        stats.columns = None if columns is None else list(columns)
        stats.dtypes = dtypes
        stats.categories = categories
        stats.n_features = n
        stats.role_list = tuple(roles)
        stats.low, stats.high, stats.scale, stats.centre = (vectors[k] for k in ("low", "high", "scale", "centre"))
        stats.levels = levels
        stats.fitted = True
        stats.fingerprint = stats._fingerprint()
        if d.get("fingerprint") not in (None, stats.fingerprint):
            raise InputError(f"feature statistics do not match their fingerprint ({d.get('fingerprint')} saved, "
                             f"{stats.fingerprint} read): the file was changed or damaged")
        return stats

    # -- the DataFrame boundary ----------------------------------------------
    def encode(self, x) -> tuple[np.ndarray, "Decoder | None"]:
        """Rows as a float64 array, and a :class:`Decoder` that turns arrays
        of that layout back into DataFrames like ``x`` (None for arrays).
        A category unseen in training gets a code past the known ones (views
        leave it alone unless they replace it); the decoder knows it."""
        if not is_dataframe(x):
            return _as_matrix(x), None
        if self.columns is not None and list(x.columns) != self.columns:
            raise InputError(f"the DataFrame's columns {_names(list(x.columns))} differ from the training "
                             f"columns {_names(self.columns)}")
        out = np.empty(x.shape, dtype=np.float64)
        extra: dict[int, np.ndarray] = {}
        for j in range(x.shape[1]):
            col = x.iloc[:, j]
            if j in self.categories:
                known = self.categories[j]
                lookup = {v: i for i, v in enumerate(known)}
                vals = col.to_numpy(dtype=object)
                missing = [v for v in dict.fromkeys(vals) if v not in lookup and not _is_missing(v)]
                for v in missing:
                    lookup[v] = len(lookup)
                extra[j] = np.asarray(list(known) + missing, dtype=object)
                out[:, j] = [np.nan if _is_missing(v) else lookup[v] for v in vals]
            else:
                try:
                    out[:, j] = col.to_numpy(dtype=np.float64, na_value=np.nan)
                except (TypeError, ValueError) as e:
                    raise InputError(f"column {short_repr(x.columns[j])} is not numeric ({col.dtype}): "
                                     f"{short_repr(str(e), 200)}") from None
        return out, Decoder(list(x.columns), list(x.dtypes), extra)


class Decoder:
    """Turns encoded rows back into a DataFrame with the columns and dtypes
    of the rows encoded (categories decoded from their codes). Values are
    never rounded here: an integer or boolean column whose values a view
    moved off the integers (a column fitted as real numbers that arrives as
    int64, as CSV readers make whole-number columns) comes back as float64."""

    def __init__(self, columns: list, dtypes: list, categories: dict[int, np.ndarray]):
        self.columns, self.dtypes, self.categories = columns, dtypes, categories

    def __call__(self, a: np.ndarray):
        import pandas as pd

        data = {}
        for j, name in enumerate(self.columns):
            col, dtype = a[:, j], self.dtypes[j]
            if j in self.categories:
                cats = self.categories[j]
                codes = np.where(np.isfinite(col), col, -1).astype(np.int64)
                values = np.where(codes >= 0, cats[np.clip(codes, 0, len(cats) - 1)], None)
                series = pd.Series(values, dtype=object)
                try:
                    data[name] = series.astype(dtype)
                except (TypeError, ValueError):
                    data[name] = series
            elif getattr(dtype, "kind", "O") in "iub" and not _fits(col, dtype):
                # an integer or boolean column the views moved off its values (a column the model was
                # fitted on as real numbers, read as integers): float64, never rounded here; the
                # roles (what is rounded) come from the fit, not from the dtype of these rows
                data[name] = pd.Series(col)
            else:
                data[name] = pd.Series(col).astype(dtype)
        return pd.DataFrame(data, columns=self.columns)


def _fits(col: np.ndarray, dtype) -> bool:
    """Whether ``col`` (float64) holds only values of an integer or boolean
    ``dtype``, so casting back loses nothing (a nullable extension dtype
    takes NaN as missing)."""
    v = col if _is_numpy_dtype(dtype) else col[~np.isnan(col)]
    with np.errstate(invalid="ignore"):
        if dtype.kind == "b":
            return bool(np.all((v == 0) | (v == 1)))
        return bool(np.all(np.isfinite(v) & (v == np.round(v))))


def _names(columns: list) -> str:
    """The first column names, each cut short."""
    more = f" ... ({len(columns)} in all)" if len(columns) > 8 else ""
    return "[" + ", ".join(short_repr(c) for c in columns[:8]) + more + "]"


def _as_matrix(x) -> np.ndarray:
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise InputError(f"rows must be a 2-D array of numbers ({type(x).__name__}: {e})") from None
    if a.ndim != 2:
        hint = " For one row, pass x.reshape(1, -1); for one feature, x.reshape(-1, 1)." if a.ndim == 1 else ""
        raise InputError(f"rows must be a 2-D array (n_rows, n_features), got shape {a.shape}.{hint}")
    if a.dtype.kind not in "biuf":
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError(f"rows must be numbers, got dtype {a.dtype}; encode categories as numeric codes "
                             "or pass a pandas DataFrame") from None
    return a.astype(np.float64, copy=False)


def _array_role(col: np.ndarray) -> str:
    v = col[np.isfinite(col)]
    if v.size and np.all(v == np.round(v)):
        return "categorical" if np.unique(v).size <= 2 else "integer"
    return "numeric"


def _is_numpy_dtype(dtype) -> bool:
    return isinstance(dtype, np.dtype)


def _is_numeric_dtype(dtype) -> bool:
    return _is_numpy_dtype(dtype) and dtype.kind in "iuf"


def _frame_role(col) -> str:
    if not _is_numeric_dtype(col.dtype):
        if _is_numpy_dtype(col.dtype) and col.dtype.kind == "b":
            return "categorical"
        try:  # a nullable numeric extension dtype (Int64, Float64) is numbers
            a = col.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            return "categorical"
        if getattr(col.dtype, "kind", "O") in "iuf":
            return _array_role(a)
        return "categorical"
    return _array_role(col.to_numpy(dtype=np.float64))


def _plain(v):
    """A NumPy scalar as the Python value it holds (JSON writes those)."""
    return v.item() if isinstance(v, np.generic) else v


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v) or type(v).__name__ in ("NAType", "NaTType")


def _sort_key(v):
    return (type(v).__name__, str(v))
