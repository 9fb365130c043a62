"""``ttakit tune``: search the views that help a model on labelled data."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import dense
from .adapt_option import adapt_value, add_adapt_option, refuse_adapt
from .dense import DENSE_CANDIDATES, add_dense_options, add_task_option
from ...errors import UsageError
from .common import (EXIT_FAILED_INPUTS, EXIT_OK, Command, at_least_one, cannot_write, check_policy_out, fraction,
                     positive_int)
from .model_data import add_model_and_data, load_data, load_model


def configure(p: argparse.ArgumentParser) -> None:
    add_model_and_data(p)
    add_task_option(p, ("classify", "detect", "segment"))
    t = p.add_argument_group("search")
    t.add_argument("--candidates", default=None, metavar="POOLS",
                   help="candidate views: pool names (standard, flips, harmful) and/or view specs, "
                        "comma-separated; identity is always included. Default: standard; with --task detect "
                        f"or segment: '{DENSE_CANDIDATES}'")
    t.add_argument("--budget", type=positive_int, default=8, metavar="K",
                   help="greedy steps (views, repeats count). Default: 8")
    t.add_argument("--objective", choices=("nll", "accuracy"), default="nll",
                   help="what the search minimises: calibrated NLL or error rate. Default: nll")
    t.add_argument("--aggregation", choices=("mean", "per_view", "per_view_class"), default="mean",
                   help="merge to calibrate: mean + temperature, or learned weights per view (or per view "
                        "and class) + temperature. Default: mean")
    t.add_argument("--guard-fraction", type=fraction, default=0.3, metavar="F",
                   help="share of the tuning data held back to check the search. Default: 0.3")
    t.add_argument("--seed", type=int, default=0, help="seed of the fit/guard split. Default: 0")
    t.add_argument("--max-forwards", type=at_least_one, default=None, metavar="F",
                   help="cost budget: mean forward passes per input. When the tuned policy has more distinct "
                        "views, save its adaptive version (views in stages; only uncertain inputs go on) that "
                        "does best on the guard split at a mean of at most F on the tuning data, chosen from "
                        "cached predictions without running the model again (--task classify). Default: no budget")
    t.add_argument("--budget-objective", choices=("nll", "accuracy"), default=None,
                   help="with --max-forwards: what the stages and thresholds are chosen for on the guard split "
                        "(accuracy: keep the full policy's predictions; nll: its calibrated probabilities). "
                        "Default: --objective")
    t.add_argument("--out", default="policy.yaml", metavar="FILE",
                   help="where to save the tuned policy (.yaml/.yml or .json). Default: policy.yaml")
    add_adapt_option(t, "tune")
    add_dense_options(p, "tune")


def run(args: argparse.Namespace) -> int:
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
               aggregation=args.aggregation, guard_fraction=args.guard_fraction, seed=args.seed,
               max_forwards=args.max_forwards, budget_objective=args.budget_objective, data_layout=data.layout,
               **options)
    save_policy(res.policy, args.out)
    print(f"Data: {data.description}")
    print(res.summary())
    print(f"\nsaved: {args.out}")
    return EXIT_FAILED_INPUTS if data.failures else EXIT_OK


def save_policy(policy, out: str) -> None:
    """``policy.save(out)`` all at once: into a temporary file beside it,
    then renamed, so that a failure leaves ``out`` as it was."""
    path = Path(out)
    tmp = path.with_name(f".{path.name[:100]}.{os.getpid()}.tmp{path.suffix}")
    try:
        policy.save(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise cannot_write(out, e) from None


COMMAND = Command("tune", "search the views that help a model on labelled data; save the policy",
                  configure=configure, run=run,
                  description="Greedy policy search on calibrated NLL (or accuracy) over a pool of "
                              "candidate views, with a guard split: the result is never worse than no "
                              "TTA on the guard data. Saves the policy with its temperature or learned "
                              "weights.",
                  epilog="example:\n  ttakit tune zoo:resnet20 --data cifar10:test --subset tune --budget 8 "
                         "--out policy.yaml\n  ttakit evaluate zoo:resnet20 --data cifar10:test --subset "
                         "holdout --policy policy.yaml --out report/")
