"""``ttakit tune`` and ``ttakit evaluate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import Subcommand, UsageError, _normalize_from_args, load_model_file, load_policy, register
from . import data as _data

ZOO = ("zoo:resnet20", "zoo:resnet32")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="model file (.onnx, TorchScript .pt/.pth/.ts, .keras) or zoo:resnet20 / zoo:resnet32 "
                        "(the published CIFAR ResNets, from --weights or $TTAKIT_MODELS, normalised for you)")
    d = p.add_argument_group("data")
    d.add_argument("--data", required=True, metavar="SPEC",
                   help="labelled data: cifar10[:test|train], a .npz with x and y, or a folder with one "
                        "sub-folder of images per class")
    d.add_argument("--data-root", metavar="PATH", default=None,
                   help="where CIFAR-10 is (the binary release). Default: $TTAKIT_DATA, then the user cache")
    d.add_argument("--data-layout", choices=("NHWC", "NCHW"), default="NHWC",
                   help="layout of the arrays in a .npz file. Default: NHWC")
    d.add_argument("--subset", choices=_data.SUBSETS, default="all",
                   help="use all the data, or the tune or holdout part of a seeded split. Default: all")
    d.add_argument("--holdout-fraction", type=float, default=0.5, metavar="F",
                   help="share of the data in the holdout part. Default: 0.5")
    d.add_argument("--split-seed", type=int, default=0, metavar="S", help="seed of the split. Default: 0")
    m = p.add_argument_group("model")
    m.add_argument("--weights", metavar="DIR", default=None,
                   help="folder of the zoo ResNet checkpoints. Default: $TTAKIT_MODELS")
    m.add_argument("--layout", choices=("NCHW", "NHWC"), default=None,
                   help="the model's input layout. Default: read from ONNX/Keras models, NCHW for TorchScript")
    m.add_argument("--mean", type=float, nargs="+", metavar="M", default=None,
                   help="per-channel mean subtracted after augmentation, on pixels in [0, 1]. Default: none "
                        "(the zoo ResNets use their own)")
    m.add_argument("--std", type=float, nargs="+", metavar="S", default=None,
                   help="per-channel std divided by after --mean. Default: 1")
    m.add_argument("--output-kind", choices=("auto", "probs", "logits"), default="auto",
                   help="what the model returns. Default: auto")
    m.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="model inputs per forward pass. Default: 512 on CPU (the command tunes the allocator for it), 1024 on GPU")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    p.set_defaults(mode="RGB")  # images are RGB here; lets --mean/--std share predict's checks


def _model_and_kwargs(args):
    from ..models import Normalize

    kwargs: dict = {"output": args.output_kind, "batch_size": args.batch_size, "progress": args.progress}
    norm = _normalize_from_args(args)
    if norm is not None:
        kwargs["preprocess"] = norm
    if args.model in ZOO:
        from ..zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet

        model = load_cifar_resnet(int(args.model.split("resnet")[1]), root=args.weights)
        kwargs.setdefault("preprocess", Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD))
        if args.output_kind == "auto":
            kwargs["output"] = "logits"
        return model, kwargs
    if args.model.startswith("zoo:"):
        raise UsageError(f"unknown zoo model {args.model!r}; available: {', '.join(ZOO)}")
    return load_model_file(args.model, layout=args.layout), kwargs


def _labelled(args):
    data = _data.load(args.data, root=args.data_root, layout=args.data_layout)
    return _data.subset(data, args.subset, args.holdout_fraction, args.split_seed)


def _configure_tune(p: argparse.ArgumentParser) -> None:
    _common(p)
    t = p.add_argument_group("search")
    t.add_argument("--candidates", default="standard", metavar="POOLS",
                   help="candidate views: pool names (standard, flips, harmful) and/or view specs, "
                        "comma-separated; identity is always included. Default: standard")
    t.add_argument("--budget", type=int, default=8, metavar="K", help="greedy steps (views, repeats count). Default: 8")
    t.add_argument("--objective", choices=("nll", "accuracy"), default="nll",
                   help="what the search minimises: calibrated NLL or error rate. Default: nll")
    t.add_argument("--aggregation", choices=("mean", "per_view", "per_view_class"), default="mean",
                   help="merge to calibrate: mean + temperature, or learned weights per view (or per view "
                        "and class) + temperature. Default: mean")
    t.add_argument("--guard-fraction", type=float, default=0.3, metavar="F",
                   help="share of the tuning data held back to check the search. Default: 0.3")
    t.add_argument("--seed", type=int, default=0, help="seed of the fit/guard split. Default: 0")
    t.add_argument("--out", default="policy.yaml", metavar="FILE",
                   help="where to save the tuned policy (.yaml/.yml or .json). Default: policy.yaml")


def _run_tune(args) -> int:
    from ..tuning import tune

    model, kwargs = _model_and_kwargs(args)
    data = _labelled(args)
    res = tune(model, data.x, data.y, candidates=args.candidates, budget=args.budget, objective=args.objective,
               aggregation=args.aggregation, guard_fraction=args.guard_fraction, seed=args.seed,
               data_layout=data.layout, **kwargs)
    res.policy.save(args.out)
    print(f"Data: {data.description}")
    print(res.summary())
    print(f"\nsaved: {args.out}")
    return 0


def _configure_evaluate(p: argparse.ArgumentParser) -> None:
    _common(p)
    e = p.add_argument_group("evaluation")
    e.add_argument("--policy", default="identity + hflip", metavar="SPEC_OR_FILE",
                   help="policy to evaluate: a spec or a policy file (e.g. from ttakit tune). "
                        "Default: 'identity + hflip'")
    e.add_argument("--baseline", default="identity", metavar="SPEC_OR_FILE",
                   help="what to compare against. Default: identity (no TTA)")
    e.add_argument("--merge", default=None, metavar="NAME",
                   help="merge for the policy. Default: the policy file's own aggregation, else mean")
    e.add_argument("--out", default=None, metavar="DIR",
                   help="write report.md, report.json, lift_vs_views.png and reliability.png here")


def _run_evaluate(args) -> int:
    from ..evaluation import evaluate

    model, kwargs = _model_and_kwargs(args)
    data = _labelled(args)
    report = evaluate(model, data.x, data.y, load_policy(args.policy), baseline=load_policy(args.baseline),
                      merge=args.merge, classes=data.classes, out=args.out, data_layout=data.layout, **kwargs)
    print(f"Data: {data.description}\n")
    print(report.to_markdown())
    if args.out:
        print(f"report: {Path(args.out) / 'report.md'}", file=sys.stderr)
    return 0


register(Subcommand("tune", "search the views that help a model on labelled data; save the policy",
                    configure=_configure_tune, run=_run_tune,
                    description="Greedy policy search on calibrated NLL (or accuracy) over a pool of "
                                "candidate views, with a guard split: the result is never worse than no "
                                "TTA on the guard data. Saves the policy with its temperature or learned "
                                "weights.",
                    epilog="example:\n  ttakit tune zoo:resnet20 --data cifar10:test --subset tune --budget 8 "
                           "--out policy.yaml\n  ttakit evaluate zoo:resnet20 --data cifar10:test --subset "
                           "holdout --policy policy.yaml --out report/"))
register(Subcommand("evaluate", "does a policy help this model? a paired report on labelled data",
                    configure=_configure_evaluate, run=_run_evaluate,
                    description="Accuracy, top-5, NLL, ECE, Brier of the policy and the baseline on the "
                                "same inputs; the paired lift with a bootstrap CI, predictions fixed and "
                                "broken (overall and per class), an exact McNemar test, cost and "
                                "throughput, plots of lift against views and calibration."))
