"""``ttakit evaluate`` and ``ttakit predict`` on tables (CSV or Parquet)
with a fitted scikit-learn model.

    ttakit evaluate model.skops --data test.csv --target y --policy policy.json
    ttakit evaluate model.skops --data test.csv --target y --policy "noise(0.1)" --fit-data train.csv
    ttakit predict model.skops --data new.parquet --policy policy.json --out preds.parquet

A command is about a table when ``--data`` names a ``.csv``, ``.tsv``,
``.parquet`` or ``.pq`` file, or MODEL a scikit-learn file (``.skops``;
``.pkl``/``.pickle``/``.joblib`` only with ``--allow-pickle``). Row views
need the statistics of the *training* rows (column roles, robust spread,
range, category frequencies), so they come from one explicit place: the
row policy file (``--policy policy.json``, written by
``TTAClassifier.save_policy`` with the statistics it was tuned with), or
``--fit-data`` (a table of training rows) for a ``--policy`` spec. They are
never learnt from the rows being evaluated or predicted.

The table's header is read first and checked against the model (and the
limits ``max_table_columns`` and ``max_cell_chars``); then only the columns
the model takes are read. Rows that cannot be predicted (NaN or infinity
in an input, a missing target) are named on standard error and left out,
the others predicted and written, and the exit code is 3, as for image
files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ...errors import UsageError
from ...io import tables
from ...models.sklearn_loading import PICKLE_SUFFIXES, SKOPS_SUFFIXES, load_sklearn
from ...policy.rows import ROW_MERGES, RowPolicy, is_row_policy_file, load_row_policy, row_policy
from ...policy.spec import short
from ...views.rows import NAN_POLICIES, ROLES, FeatureStats
from .common import EXIT_FAILED_INPUTS, EXIT_OK, Deprecated, cannot_write, positive_int, warn, write_stdout

SKLEARN_SUFFIXES = SKOPS_SUFFIXES + PICKLE_SUFFIXES
#: rows that cannot be predicted named one by one on standard error; the rest are counted
SHOWN_FAILURES = 20

ALLOW_PICKLE_HELP = (
    "load a pickle/joblib MODEL (.pkl, .pickle, .joblib). RISK: unpickling runs whatever code the file "
    "names, with your permissions (it can delete files, read secrets, install malware); only for files you "
    "made yourself or fully trust. Prefer saving with skops (skops.io.dump). Default: refused")


def add_table_options(p: argparse.ArgumentParser, *, command: str) -> None:
    """The ``tables`` option group of ``command`` (``evaluate`` or ``predict``).
    The row views are ``--policy`` (a row policy file, or a row spec with
    ``--fit-data``), as for images; ``--policy`` is its old spelling."""
    g = p.add_argument_group(
        "tables", "with --data TABLE.csv|.tsv|.parquet and a scikit-learn MODEL (.skops; pickles with\n"
                  "--allow-pickle). Parquet needs pyarrow (pip install 'ttakit[tables]'). The header is checked\n"
                  "against the model before the rows are read (limits: TTAKIT_MAX_TABLE_COLUMNS,\n"
                  "TTAKIT_MAX_CELL_CHARS). Rows with NaN or infinity (and, for evaluate, a missing target)\n"
                  "are named on stderr and left out; the others are predicted, and the exit code is 3.\n"
                  "See docs/tables.md")
    if command == "predict":
        g.add_argument("--data", default=None, metavar="TABLE",
                       help="predict the rows of this table (instead of IMAGES)")
    g.add_argument("--target", default=None, metavar="COLUMN",
                   help="the column holding the label (classification) or value (regression); "
                        + ("required with a table" if command == "evaluate" else
                           "left out of the model's inputs when present"))
    g.add_argument("--views", dest="policy", action=Deprecated, new="--policy")  # the old spelling
    g.add_argument("--fit-data", default=None, metavar="TABLE",
                   help="training rows (CSV or Parquet) from which a --policy spec learns the column roles and "
                        "statistics (robust spread, range, median/mode, category frequencies). Never taken "
                        "from --data: the statistics must be those of the data the model was fitted on")
    g.add_argument("--copies", type=positive_int, default=8, metavar="N",
                   help="seeded copies per term of a --policy spec. Default: 8")
    g.add_argument("--seed", type=int, default=0, metavar="S",
                   help="first seed of a --policy spec (term k uses S + 1000k ...). Default: 0")
    g.add_argument("--roles", nargs="+", default=None, metavar="COLUMN=ROLE",
                   help=f"override inferred column roles for --fit-data ({', '.join(ROLES)})")
    g.add_argument("--nan", choices=NAN_POLICIES, default="raise",
                   help="with --fit-data: a row with a missing value is named on stderr and left out "
                        "(raise; exit code 3), or missing values become the training median/mode (impute). "
                        "Default: raise")
    if command == "predict":
        g.add_argument("--row-merge", choices=ROW_MERGES, default=None,
                       help="how regression copies merge. Default: the policy file's, else mean")
    g.add_argument("--trust", action="append", default=[], metavar="TYPE",
                   help="trust this type in a .skops MODEL (repeatable); without it, a file holding types "
                        "skops does not trust by default is refused and they are listed")
    g.add_argument("--allow-pickle", action="store_true", help=ALLOW_PICKLE_HELP)


def wants_table(args: argparse.Namespace) -> bool:
    """True when the command is about a table (see the module doc); refuses
    table options given for images. For a table, ``args.views`` is the row
    policy ``--policy`` names."""
    model_is_sklearn = Path(str(args.model)).suffix.lower() in SKLEARN_SUFFIXES
    if tables.is_table(getattr(args, "data", None)) or model_is_sklearn:
        if getattr(args, "data", None) is None or not tables.is_table(args.data):
            raise UsageError(f"{Path(args.model).name} is a scikit-learn model: give it a table, "
                             f"--data FILE ({', '.join(tables.TABLE_SUFFIXES)})")
        args.views = getattr(args, "policy", None)
        return True
    given = [flag for flag, v in (("--target", args.target), ("--fit-data", args.fit_data),
                                  ("--roles", args.roles)) if v]
    if given:
        raise UsageError(f"{', '.join(given)} apply to tables (--data FILE.csv or .parquet)")
    return False


#: the policy of images when --policy is not given (a table has no default: its row views need statistics)
IMAGE_POLICY = "identity + hflip"


def take_policy(args: argparse.Namespace) -> bool:
    """:func:`wants_table`, with ``--policy`` given its meaning: a table's
    row views, or the policy of images (default :data:`IMAGE_POLICY`)."""
    table = wants_table(args)
    if not table and args.policy is None:
        args.policy = IMAGE_POLICY
    return table


def _roles(items: list[str] | None) -> dict | None:
    if not items:
        return None
    out = {}
    for item in items:
        col, sep, role = item.partition("=")
        if not sep or role not in ROLES:
            raise UsageError(f"--roles takes COLUMN=ROLE with ROLE one of {', '.join(ROLES)}, got {short(item)}")
        out[col] = role
    return out


def _load(args: argparse.Namespace):
    """``(model, frame, inputs, row policy)`` from the options. The tables'
    headers are checked against the model before their rows are read, and
    only the columns needed are read."""
    from ...tasks.rows import model_task

    model = load_sklearn(args.model, trusted=args.trust, allow_pickle=args.allow_pickle)
    task = model_task(model)
    header = tables.read_header(args.data)
    target = args.target
    if target is not None:
        tables.check_column(header, target)
    if not args.views:
        raise UsageError("a table needs --policy: a row policy file saved by TTAClassifier.save_policy, or a "
                         "spec such as 'noise(0.1)' with --fit-data TRAIN.csv for the training statistics")
    if is_row_policy_file(args.views):
        if args.fit_data or args.roles:
            raise UsageError(f"--policy {args.views} carries the statistics it was tuned with; --fit-data and "
                             "--roles are for a --policy spec")
        rp = load_row_policy(args.views)
        if rp.task is not None and rp.task != task:
            raise UsageError(f"--policy {args.views} was tuned for {rp.task}, but {Path(args.model).name} is "
                             f"a {task} model")
        wanted = tables.model_columns(model, header, target, rp.stats.columns)
    else:
        if not args.fit_data:
            raise UsageError(f"--policy {short(args.views)} needs --fit-data TRAIN.csv: row views are scaled by "
                             "the training rows' statistics (a row policy file saved by save_policy carries them)")
        wanted = tables.model_columns(model, header, target)
        fit_columns = tables.model_columns(model, tables.read_header(args.fit_data), None, wanted)
        fit_x = tables.model_inputs(model, tables.read_table(args.fit_data, fit_columns), None, wanted).x
        stats = FeatureStats(_roles(args.roles), nan=args.nan).fit(fit_x)
        rp = RowPolicy(row_policy(args.views, stats, n_copies=args.copies, seed=args.seed), stats)
    if rp.stats.n_features != len(wanted):
        raise UsageError(f"the row views' statistics have {rp.stats.n_features} features, the model's input "
                         f"columns {len(wanted)}")
    frame = tables.read_table(args.data, wanted + ([target] if target is not None else []))
    return model, frame, tables.model_inputs(model, frame, target, wanted), rp


def _bad_rows(rows, stats: FeatureStats, columns: list, y=None) -> np.ndarray:
    """Rows that cannot be predicted (NaN, or inf, in an input; a missing
    target), each named on standard error (the first ``SHOWN_FAILURES``,
    then a count): the others are predicted, as for image files."""
    missing = np.isnan(rows) if stats.nan == "raise" else np.zeros(rows.shape, dtype=bool)
    infinite = np.isinf(rows)
    no_target = np.zeros(len(rows), dtype=bool) if y is None else _missing_values(y)
    bad = missing.any(1) | infinite.any(1) | no_target
    for n, i in enumerate(np.flatnonzero(bad)):
        if n == SHOWN_FAILURES:
            warn(f"... and {int(bad.sum()) - SHOWN_FAILURES} more rows that cannot be predicted")
            break
        why = [f"{'NaN' if missing[i, j] else 'infinity'} in column {short(columns[j])}"
               for j in np.flatnonzero(missing[i] | infinite[i])[:3]]
        if no_target[i]:
            why.append("the target is missing")
        hint = " (--nan impute fills missing values with the training median/mode)" \
            if missing[i].any() and stats.nan == "raise" else ""
        warn(f"cannot predict row {i}: {'; '.join(why)}{hint}")
    return bad


def _missing_values(y) -> np.ndarray:
    import pandas as pd

    return np.asarray(pd.isna(pd.Series(y, dtype=object)), dtype=bool)


def _run_options(rp: RowPolicy, merge: str | None) -> dict:
    s = rp.stats
    return {"merge": merge or rp.merge, "nan": s.nan, "fill": s.centre if s.nan == "impute" else None}


def run_evaluate(args: argparse.Namespace) -> int:
    """``ttakit evaluate MODEL --data TABLE --target COL --policy ...``."""
    from ...evaluation.rows import evaluate_rows

    if args.target is None:
        raise UsageError("evaluating on a table needs --target COLUMN (the label or value to score against)")
    if args.merge not in (None, *ROW_MERGES):
        raise UsageError(f"--merge for tables is one of {', '.join(ROW_MERGES)} (regression copies), "
                         f"got {args.merge!r}")
    model, frame, inputs, rp = _load(args)
    rows, decoder = rp.stats.encode(inputs.x)
    y = frame[args.target].to_numpy()
    bad = _bad_rows(rows, rp.stats, inputs.columns, y)
    if bad.all():
        warn(f"none of the {len(rows)} rows can be evaluated")
        return EXIT_FAILED_INPUTS
    report = evaluate_rows(model, rows[~bad], y[~bad], rp.policy, decoder=decoder, **_run_options(rp, args.merge))
    print(f"Data: {args.data}, target {short(args.target)}, model {Path(args.model).name}"
          + (f" ({int(bad.sum())} of {len(rows)} rows left out: named above)" if bad.any() else "") + "\n")
    print(report.to_markdown())
    if args.out:
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "report.md").write_text(report.to_markdown(), encoding="utf-8")
            (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
            from ...report import write_table

            page = write_table(report, out)
        except OSError as e:
            raise cannot_write(out, e) from None
        print(f"report: {page} ({out / 'report.md'})", file=sys.stderr)
    return EXIT_FAILED_INPUTS if bad.any() else EXIT_OK


def run_predict(args: argparse.Namespace) -> int:
    """``ttakit predict MODEL --data TABLE --policy ... [--out FILE]``."""
    from ...tasks.rows import predict_rows

    if args.images:
        raise UsageError("give either IMAGES or --data TABLE, not both")
    out = args.out
    if out and not tables.is_table(out):
        raise UsageError(f"--out {out}: predictions of a table are written as {', '.join(tables.TABLE_SUFFIXES)}")
    if out and Path(out).resolve() in {Path(p).resolve() for p in (args.data, args.fit_data) if p}:
        raise UsageError(f"--out {out} is one of the input tables; write the predictions elsewhere")
    model, frame, inputs, rp = _load(args)
    rows, decoder = rp.stats.encode(inputs.x)
    bad = _bad_rows(rows, rp.stats, inputs.columns)
    good = np.flatnonzero(~bad)
    if len(good):
        pred = predict_rows(model, rows[good], rp.policy, decoder=decoder, **_run_options(rp, args.row_merge))
        result = tables.prediction_frame(pred, index=good)
    else:
        result = tables.empty_prediction_frame()
    if out:
        try:
            tables.write_table(result, out)
        except OSError as e:
            raise cannot_write(out, e) from None
        warn(f"wrote {len(result)} predictions to {out}" + (
            f" ({pred.forward_passes} model rows, {pred.seconds:.2f} s)" if len(good) else ""))
    else:
        write_stdout(result.to_csv(index=False))
    if bad.any():
        warn(f"{int(bad.sum())} of {len(rows)} rows could not be predicted (named above)")
        return EXIT_FAILED_INPUTS
    return EXIT_OK


__all__ = ["add_table_options", "wants_table", "take_policy", "IMAGE_POLICY", "run_evaluate", "run_predict", "ALLOW_PICKLE_HELP"]
