"""``ttakit evaluate`` and ``ttakit predict`` on tables (CSV or Parquet)
with a fitted scikit-learn model.

    ttakit evaluate model.skops --data test.csv --target y --views policy.json
    ttakit evaluate model.skops --data test.csv --target y --views "noise(0.1)" --fit-data train.csv
    ttakit predict model.skops --data new.parquet --views policy.json --out preds.parquet

A command is about a table when ``--data`` names a ``.csv``, ``.tsv``,
``.parquet`` or ``.pq`` file, or MODEL a scikit-learn file (``.skops``;
``.pkl``/``.pickle``/``.joblib`` only with ``--allow-pickle``). Row views
need the statistics of the *training* rows (column roles, robust spread,
range, category frequencies), so they come from one explicit place: the
row policy file (``--views policy.json``, written by
``TTAClassifier.save_policy`` with the statistics it was tuned with), or
``--fit-data`` (a table of training rows) for a ``--views`` spec. They are
never learnt from the rows being evaluated or predicted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ...errors import UsageError
from ...io import tables
from ...models.sklearn_loading import PICKLE_SUFFIXES, SKOPS_SUFFIXES, load_sklearn
from ...policy.rows import ROW_MERGES, RowPolicy, is_row_policy_file, load_row_policy, row_policy
from ...views.rows import NAN_POLICIES, ROLES, FeatureStats
from .common import EXIT_OK, cannot_write, positive_int, warn, write_stdout

SKLEARN_SUFFIXES = SKOPS_SUFFIXES + PICKLE_SUFFIXES

ALLOW_PICKLE_HELP = (
    "load a pickle/joblib MODEL (.pkl, .pickle, .joblib). RISK: unpickling runs whatever code the file "
    "names, with your permissions (it can delete files, read secrets, install malware); only for files you "
    "made yourself or fully trust. Prefer saving with skops (skops.io.dump). Default: refused")


def add_table_options(p: argparse.ArgumentParser, *, command: str) -> None:
    """The ``tables`` option group of ``command`` (``evaluate`` or ``predict``)."""
    g = p.add_argument_group(
        "tables", "with --data TABLE.csv|.tsv|.parquet and a scikit-learn MODEL (.skops; pickles with\n"
                  "--allow-pickle). Parquet needs pyarrow (pip install 'ttakit[tables]'). See docs/tables.md")
    if command == "predict":
        g.add_argument("--data", default=None, metavar="TABLE",
                       help="predict the rows of this table (instead of IMAGES)")
    g.add_argument("--target", default=None, metavar="COLUMN",
                   help="the column holding the label (classification) or value (regression); "
                        + ("required with a table" if command == "evaluate" else
                           "left out of the model's inputs when present"))
    g.add_argument("--views", default=None, metavar="SPEC_OR_FILE",
                   help="the row views: a row policy file (.json, .yaml) saved by TTAClassifier.save_policy / "
                        "TTARegressor.save_policy, which carries the training statistics; or a spec such as "
                        "'noise(0.1) + dropout(0.05)' (families noise, jitter, dropout, resample; each term "
                        "becomes --copies seeded copies), which needs --fit-data. Required with a table")
    g.add_argument("--fit-data", default=None, metavar="TABLE",
                   help="training rows (CSV or Parquet) from which a --views spec learns the column roles and "
                        "statistics (robust spread, range, median/mode, category frequencies). Never taken "
                        "from --data: the statistics must be those of the data the model was fitted on")
    g.add_argument("--copies", type=positive_int, default=8, metavar="N",
                   help="seeded copies per term of a --views spec. Default: 8")
    g.add_argument("--seed", type=int, default=0, metavar="S",
                   help="first seed of a --views spec (term k uses S + 1000k ...). Default: 0")
    g.add_argument("--roles", nargs="+", default=None, metavar="COLUMN=ROLE",
                   help=f"override inferred column roles for --fit-data ({', '.join(ROLES)})")
    g.add_argument("--nan", choices=NAN_POLICIES, default="raise",
                   help="with --fit-data: a row with a missing value is an error (raise), or missing values "
                        "become the training median/mode (impute). Default: raise")
    if command == "predict":
        g.add_argument("--row-merge", choices=ROW_MERGES, default=None,
                       help="how regression copies merge. Default: the policy file's, else mean")
    g.add_argument("--trust", action="append", default=[], metavar="TYPE",
                   help="trust this type in a .skops MODEL (repeatable); without it, a file holding types "
                        "skops does not trust by default is refused and they are listed")
    g.add_argument("--allow-pickle", action="store_true", help=ALLOW_PICKLE_HELP)


def wants_table(args: argparse.Namespace) -> bool:
    """True when the command is about a table (see the module doc); refuses
    table options given for images."""
    model_is_sklearn = Path(str(args.model)).suffix.lower() in SKLEARN_SUFFIXES
    if tables.is_table(getattr(args, "data", None)) or model_is_sklearn:
        if getattr(args, "data", None) is None or not tables.is_table(args.data):
            raise UsageError(f"{Path(args.model).name} is a scikit-learn model: give it a table, "
                             f"--data FILE ({', '.join(tables.TABLE_SUFFIXES)})")
        return True
    given = [flag for flag, v in (("--target", args.target), ("--views", args.views),
                                  ("--fit-data", args.fit_data), ("--roles", args.roles)) if v]
    if given:
        raise UsageError(f"{', '.join(given)} apply to tables (--data FILE.csv or .parquet)")
    return False


def _roles(items: list[str] | None) -> dict | None:
    if not items:
        return None
    out = {}
    for item in items:
        col, sep, role = item.partition("=")
        if not sep or role not in ROLES:
            raise UsageError(f"--roles takes COLUMN=ROLE with ROLE one of {', '.join(ROLES)}, got {item!r}")
        out[col] = role
    return out


def _load(args: argparse.Namespace):
    """``(model, frame, inputs, row policy)`` from the options."""
    from ...tasks.rows import model_task

    model = load_sklearn(args.model, trusted=args.trust, allow_pickle=args.allow_pickle)
    task = model_task(model)
    frame = tables.read_table(args.data)
    target = args.target
    if target is not None:
        tables.check_column(frame, target)
    if not args.views:
        raise UsageError("a table needs --views: a row policy file saved by TTAClassifier.save_policy, or a "
                         "spec such as 'noise(0.1)' with --fit-data TRAIN.csv for the training statistics")
    if is_row_policy_file(args.views):
        if args.fit_data or args.roles:
            raise UsageError(f"--views {args.views} carries the statistics it was tuned with; --fit-data and "
                             "--roles are for a --views spec")
        rp = load_row_policy(args.views)
        if rp.task is not None and rp.task != task:
            raise UsageError(f"--views {args.views} was tuned for {rp.task}, but {Path(args.model).name} is "
                             f"a {task} model")
        inputs = tables.model_inputs(model, frame, target, rp.stats.columns)
    else:
        if not args.fit_data:
            raise UsageError(f"--views {args.views!r} needs --fit-data TRAIN.csv: row views are scaled by the "
                             "training rows' statistics (a row policy file saved by save_policy carries them)")
        inputs = tables.model_inputs(model, frame, target)
        fit = tables.read_table(args.fit_data)
        fit_x = tables.model_inputs(model, fit, None, inputs.columns).x
        stats = FeatureStats(_roles(args.roles), nan=args.nan).fit(fit_x)
        rp = RowPolicy(row_policy(args.views, stats, n_copies=args.copies, seed=args.seed), stats)
    if rp.stats.n_features != len(inputs.columns):
        raise UsageError(f"the row views' statistics have {rp.stats.n_features} features, the model's input "
                         f"columns {len(inputs.columns)}")
    return model, frame, inputs, rp


def _run_options(rp: RowPolicy, merge: str | None) -> dict:
    s = rp.stats
    return {"merge": merge or rp.merge, "nan": s.nan, "fill": s.centre if s.nan == "impute" else None}


def run_evaluate(args: argparse.Namespace) -> int:
    """``ttakit evaluate MODEL --data TABLE --target COL --views ...``."""
    from ...evaluation.rows import evaluate_rows

    if args.target is None:
        raise UsageError("evaluating on a table needs --target COLUMN (the label or value to score against)")
    if args.merge not in (None, *ROW_MERGES):
        raise UsageError(f"--merge for tables is one of {', '.join(ROW_MERGES)} (regression copies), "
                         f"got {args.merge!r}")
    model, frame, inputs, rp = _load(args)
    rows, decoder = rp.stats.encode(inputs.x)
    y = frame[args.target].to_numpy()
    report = evaluate_rows(model, rows, y, rp.policy, decoder=decoder, **_run_options(rp, args.merge))
    print(f"Data: {args.data}, target {args.target!r}, model {Path(args.model).name}\n")
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
    return EXIT_OK


def run_predict(args: argparse.Namespace) -> int:
    """``ttakit predict MODEL --data TABLE --views ... [--out FILE]``."""
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
    pred = predict_rows(model, rows, rp.policy, decoder=decoder, **_run_options(rp, args.row_merge))
    result = tables.prediction_frame(pred)
    if out:
        try:
            tables.write_table(result, out)
        except OSError as e:
            raise cannot_write(out, e) from None
        warn(f"wrote {len(result)} predictions to {out} ({pred.forward_passes} model rows, {pred.seconds:.2f} s)")
    else:
        write_stdout(result.to_csv(index=False))
    return EXIT_OK


__all__ = ["add_table_options", "wants_table", "run_evaluate", "run_predict", "ALLOW_PICKLE_HELP"]
