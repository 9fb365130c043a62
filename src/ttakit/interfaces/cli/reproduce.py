"""``ttakit reproduce tutorial|resnet|tuning``: rerun a reference experiment.

The experiments themselves are :mod:`ttakit.experiments`; this module only
maps options to their configurations."""

from __future__ import annotations

import argparse
import os

from .common import EXIT_OK, Command

def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="PATH", default=None,
                   help="CIFAR-10 binary release: the cifar-10-batches-bin folder, its parent, or "
                        "cifar-10-binary.tar.gz. Default: $TTAKIT_DATA, then the user cache; "
                        "downloaded there when missing and online")
    p.add_argument("--test-limit", type=int, metavar="N", default=None,
                   help="evaluate on the first N test images only (quick runs). Default: all 10,000")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for report.md, results.json and the plot")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="hide progress bars")


def add_tutorial_args(p: argparse.ArgumentParser, repeats: int, runtime: str = "keras") -> None:
    p.add_argument("--repeats", type=int, default=repeats, metavar="R",
                   help=f"how many models to train (seeds SEED..SEED+R-1). Default: {repeats}")
    p.add_argument("--epochs", type=int, default=3, help="training epochs per model, as the tutorial. Default: 3")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size. Default: 128")
    p.add_argument("--seed", type=int, default=0, help="seed of the first model. Default: 0")
    p.add_argument("--train-limit", type=int, metavar="N", default=None,
                   help="train on the first N training images only (quick runs). Default: all 50,000")
    p.add_argument("--runtime", choices=("keras", "onnx"), default=runtime,
                   help="evaluate each trained model with Keras itself, or with Keras' own ONNX export of it "
                        f"run by ONNX Runtime (same weights, about 4x faster on CPU). Default: {runtime}")
    add_data_args(p)


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", title="experiments",
                           help="tutorial: the founding Keras CNN experiment; resnet: the published ResNets")
    sub.required = True
    t = sub.add_parser("tutorial", help="the founding Keras CNN experiment, paired (trains R models)",
                       description="Train the tutorial's Keras CNN R times and evaluate every policy on "
                                   "every model: paired lifts, CIs, fixed/broken counts, McNemar tests.")
    add_tutorial_args(t, repeats=10)
    r = sub.add_parser("resnet", help="published CIFAR ResNet-20/32 with and without TTA",
                       description="Evaluate the published CIFAR ResNets (weights not trained by ttakit) "
                                   "with no TTA, hflip, small shifts and D4, paired.")
    r.add_argument("--weights", metavar="DIR", default=None,
                   help="folder with resnet20-*.th and resnet32-*.th. Default: $TTAKIT_MODELS")
    r.add_argument("--depth", type=int, action="append", choices=(20, 32), default=None,
                   help="which ResNet (repeatable). Default: 20 and 32")
    add_data_args(r)
    g = sub.add_parser("tuning", help="policy search targets: tune on half the test set, report on the other half",
                       description="Split CIFAR-10's test set by a seed into a tuning and a held-out half; "
                                   "tune policies (standard pool, with harmful views added, with learned "
                                   "weights) on the first; report them against no TTA and {identity, hflip} "
                                   "on the second.")
    g.add_argument("--model", choices=("resnet20", "resnet32", "tutorial"), default="resnet20",
                   help="the published ResNet-20/32, or the tutorial CNN trained here. Default: resnet20")
    g.add_argument("--weights", metavar="DIR", default=None,
                   help="folder with the ResNet checkpoints. Default: $TTAKIT_MODELS")
    g.add_argument("--budget", type=int, default=8, help="greedy search steps. Default: 8")
    g.add_argument("--seed", type=int, default=0, help="seed of the tuning/held-out split. Default: 0")
    g.add_argument("--n-tune", type=int, default=5000, metavar="N",
                   help="images in the tuning half (the rest are held out). Default: 5000")
    add_data_args(g)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    if args.experiment == "tutorial":
        from ...experiments import tutorial

        cfg = tutorial.TutorialConfig(repeats=args.repeats, epochs=args.epochs, batch_size=args.batch_size,
                                      seed=args.seed, data=args.data, out=args.out or "results/tutorial",
                                      train_limit=args.train_limit, test_limit=args.test_limit,
                                      progress=args.progress, runtime=args.runtime)
        res = tutorial.run(cfg)
        print(res["table"])
        print(f"\nreport: {res['out']}/report.md")
        return EXIT_OK
    if args.experiment == "tuning":
        from ...experiments import tuning

        cfg = tuning.TuningConfig(model=args.model, weights=args.weights, data=args.data, budget=args.budget,
                                  seed=args.seed, n_tune=args.n_tune, out=args.out or "results/tuning",
                                  progress=args.progress, test_limit=args.test_limit)
        summary = tuning.run(cfg)
        print(tuning.render(cfg, summary))
        return EXIT_OK
    from ...experiments import resnet

    cfg = resnet.ResNetConfig(depths=tuple(args.depth or (20, 32)), weights=args.weights, data=args.data,
                              out=args.out or "results/resnet", test_limit=args.test_limit, progress=args.progress)
    res = resnet.run(cfg)
    print(f"report: {res['out']}/report.md")
    return EXIT_OK


COMMAND = Command("reproduce", "rerun a reference experiment (tutorial, resnet, tuning) and write a report",
                  configure=configure, run=run)
