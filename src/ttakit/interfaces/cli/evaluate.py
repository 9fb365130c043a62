"""``ttakit evaluate``: does a policy help this model? A paired report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...errors import UsageError
from . import dense
from .dense import add_dense_options, add_task_option
from .adapt_option import adapt_value, add_adapt_option, refuse_adapt, refuse_dense_adapt
from .common import EXIT_FAILED_INPUTS, EXIT_OK, Command, load_policy
from .model_data import add_model_and_data, load_data, load_model
from .tables import add_table_options, run_evaluate, take_policy


def configure(p: argparse.ArgumentParser) -> None:
    add_model_and_data(p)
    add_task_option(p)
    e = p.add_argument_group("evaluation")
    e.add_argument("--policy", default=None, metavar="SPEC_OR_FILE",
                   help="policy to evaluate: a spec or a policy file (e.g. from ttakit tune); for a table, a row "
                        "policy file, or a row spec with --fit-data. Default: 'identity + hflip' (images)")
    e.add_argument("--baseline", default="identity", metavar="SPEC_OR_FILE",
                   help="what to compare against. Default: identity (no TTA)")
    e.add_argument("--merge", default=None, metavar="NAME",
                   help="merge for the policy. Default: the policy file's own aggregation, else mean")
    e.add_argument("--calibrate-on", choices=("tune", "holdout"), default=None, metavar="SUBSET",
                   help="when the policy carries a temperature or learned weights, the report adds no TTA and the "
                        "plain policy with temperatures of their own, fitted on this part of --data (the part the "
                        "policy was tuned on: tune). Default: cross-fitted on two halves of the evaluated data")
    e.add_argument("--out", default=None, metavar="DIR",
                   help="write the report here: index.html (open it in a browser: the verdict, plots, and "
                        "galleries of the inputs TTA fixed and broke), report.md, report.json, and the plots "
                        "(lift_vs_views.png, forwards_curve.png, reliability.png; with the plots extra). "
                        "Tables and --task detect/segment/keypoints: index.html, report.md and report.json")
    add_adapt_option(e, "evaluate")
    add_table_options(p, command="evaluate")
    add_dense_options(p, "evaluate")


def run(args: argparse.Namespace) -> int:
    table = take_policy(args)
    if args.task != "classify":
        refuse_dense_adapt(args)
        return dense.evaluate(args)
    from ...evaluation import evaluate

    if table:
        refuse_adapt(args, "tables")
        return run_evaluate(args)
    model, options = load_model(args)
    if adapt_value(args):
        options["adapt"] = adapt_value(args)
    policy = load_policy(args.policy)
    data = load_data(args, policy)
    calibration = None
    if args.calibrate_on:
        if args.calibrate_on == args.subset:
            raise UsageError(f"--calibrate-on {args.calibrate_on} is the part being evaluated (--subset); "
                             "calibrate on the other part")
        cal = load_data(argparse.Namespace(**{**vars(args), "subset": args.calibrate_on}), policy)
        calibration = (cal.x, cal.y)
    report = evaluate(model, data.x, data.y, policy, baseline=load_policy(args.baseline),
                      merge=args.merge, classes=data.classes, out=args.out, calibration=calibration,
                      data_layout=data.layout, **options)
    if args.out:
        from ...report import write_classification

        page = write_classification(report, args.out, data.x, data.layout)
    print(f"Data: {data.description}\n")
    print(report.to_markdown())
    if args.out:
        print(f"report: {page} ({Path(args.out) / 'report.md'})", file=sys.stderr)
    return EXIT_FAILED_INPUTS if data.failures else EXIT_OK


COMMAND = Command("evaluate", "does a policy help this model? a paired report on labelled data",
                  configure=configure, run=run,
                  description="Accuracy, top-5, NLL, ECE, Brier of the policy and the baseline on the "
                              "same inputs; the paired lift with a bootstrap CI, predictions fixed and "
                              "broken (overall and per class), an exact McNemar test, cost and "
                              "throughput, plots of lift against views and calibration, accuracy and NLL against forward "
                              "passes per input (the policy's view prefixes and adaptive versions; an adaptive "
                              "policy is run stage by stage). A policy with a "
                              "temperature or learned weights is also compared with no TTA and the plain "
                              "policy, each temperature-scaled (fair baselines). On a table "
                              "(--data FILE.csv|.parquet --target COLUMN, a scikit-learn MODEL): accuracy, "
                              "log-loss, AUC, Brier (classification) or RMSE, MAE, coverage (regression) "
                              "with and without the row views, paired CIs and fixed/broken rows.")
