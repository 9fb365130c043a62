"""``ttakit tune``: search the views that help a model on labelled data."""

from __future__ import annotations

import argparse

from . import dense
from .adapt_option import adapt_value, add_adapt_option, refuse_adapt
from .dense import DENSE_CANDIDATES, add_dense_options, add_task_option
from ...errors import UsageError
from .common import (EXIT_FAILED_INPUTS, EXIT_OK, Command, at_least_one, check_policy_out, positive_int,
                     save_policy)
from .model_data import add_model_and_data, load_data, load_model
from ...tuning.guard import GUARD_ALPHA, GUARD_FOLDS


def configure(p: argparse.ArgumentParser) -> None:
    add_model_and_data(p)
    add_task_option(p, ("classify", "detect", "segment"))
    t = p.add_argument_group("search")
    t.add_argument("--candidates", default=None, metavar="POOLS",
                   help="candidate views: pool names (standard, flips, harmful) and/or view specs, "
                        "comma-separated; identity is always included. Default: standard; with --task detect "
                        f"or segment: '{DENSE_CANDIDATES}'")
    t.add_argument("--budget", type=positive_int, default=8, metavar="K",
                   help="most views in the policy, the original included (a repeat raises a view's weight); "
                        "the search stops earlier when none improves it. Default: 8")
    t.add_argument("--objective", choices=("nll", "accuracy"), default="nll",
                   help="what the search minimises: calibrated NLL or error rate. Default: nll")
    t.add_argument("--aggregation", choices=("mean", "per_view", "per_view_class"), default="mean",
                   help="merge to calibrate: mean + temperature, or learned weights per view (or per view "
                        "and class) + temperature. Default: mean")
    t.add_argument("--guard-folds", type=positive_int, default=GUARD_FOLDS, metavar="K",
                   help="the guard's cross-fitting folds: the search runs without each fold and is checked "
                        f"on it; views are kept only if that evidence passes. Default: {GUARD_FOLDS}")
    t.add_argument("--guard-alpha", type=float, default=GUARD_ALPHA, metavar="A",
                   help="the guard's error level: the chance of keeping views when none truly helps is at "
                        f"most A. Default: {GUARD_ALPHA}")
    t.add_argument("--seed", type=int, default=0, help="seed of the guard's folds. Default: 0")
    t.add_argument("--max-forwards", type=at_least_one, default=None, metavar="F",
                   help="cost budget: mean forward passes per input. Save the adaptive version of the tuned "
                        "policy (only uncertain inputs go on to more views) that does best at a mean of at most F, "
                        "chosen from cached predictions. Default: no budget")
    t.add_argument("--budget-objective", choices=("nll", "accuracy"), default=None,
                   help="with --max-forwards: choose the stages for accuracy or calibrated NLL. Default: accuracy")
    t.add_argument("--out", default="policy.yaml", metavar="FILE",
                   help="where to save the tuned policy (.yaml/.yml or .json). Default: policy.yaml")
    add_adapt_option(t, "tune")
    add_dense_options(p, "tune")


def run(args: argparse.Namespace) -> int:
    if args.guard_folds < 2:
        raise UsageError(f"--guard-folds must be at least 2, got {args.guard_folds}")
    if not 0 < args.guard_alpha <= 1:
        raise UsageError(f"--guard-alpha must be in (0, 1], got {args.guard_alpha}")
    if args.task != "classify":
        if args.max_forwards is not None or args.budget_objective is not None:
            raise UsageError("--max-forwards and --budget-objective (adaptive policies) are for --task classify only")
        refuse_adapt(args, f"--task {args.task}")
        return dense.tune(args)
    from ...tuning import tune

    check_policy_out(args.out)
    model, options = load_model(args)
    if adapt_value(args):
        options["adapt"] = adapt_value(args)
    data = load_data(args)
    res = tune(model, data.x, data.y, candidates=args.candidates or "standard", budget=args.budget, objective=args.objective,
               aggregation=args.aggregation, guard_folds=args.guard_folds, guard_alpha=args.guard_alpha, seed=args.seed,
               max_forwards=args.max_forwards, budget_objective=args.budget_objective, data_layout=data.layout,
               **options)
    save_policy(res.policy, args.out)
    print(f"Data: {data.description}")
    print(res.summary())
    print(f"\nsaved: {args.out}")
    return EXIT_FAILED_INPUTS if data.failures else EXIT_OK


COMMAND = Command("tune", "search the views that help a model on labelled data; save the policy",
                  configure=configure, run=run,
                  description="Greedy policy search on calibrated NLL (or accuracy) over a pool of "
                              "candidate views, with a cross-fitted guard: views are kept only when the "
                              "evidence of inputs the search did not see says they beat no TTA. Saves the policy with its temperature or learned "
                              "weights.",
                  epilog="example:\n  ttakit tune zoo:resnet20 --data cifar10:test --subset tune --budget 8 "
                         "--out policy.yaml\n  ttakit evaluate zoo:resnet20 --data cifar10:test --subset "
                         "holdout --policy policy.yaml --out report/")
