"""``ttakit reproduce tutorial|resnet|tuning|tabular|detection``: rerun a reference experiment.

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
                           help="tutorial: the founding Keras CNN experiment; resnet: the published ResNets; "
                                "tuning: policy search; tabular: row TTA on scikit-learn models; detection: YOLOX-nano on COCO "
                                "and Penn-Fudan")
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
    from ...experiments.tabular import CLASSIFICATION, MODELS, REGRESSION

    tb = sub.add_parser("tabular", help="does row TTA help scikit-learn models? paired, over k-fold",
                        description="For each offline data set x model family, repeated k-fold: tune "
                                    "TTAClassifier/TTARegressor on the training folds (guarded), score the test "
                                    "fold with and without TTA, report every paired difference with its CI.")
    tb.add_argument("--datasets", nargs="+", choices=CLASSIFICATION + REGRESSION, default=None, metavar="NAME",
                    help=f"data sets. Default: all ({', '.join(CLASSIFICATION + REGRESSION)})")
    tb.add_argument("--models", nargs="+", choices=MODELS, default=None, metavar="NAME",
                    help=f"model families. Default: all ({', '.join(MODELS)})")
    tb.add_argument("--folds", type=int, default=5, help="folds per repeat. Default: 5")
    tb.add_argument("--repeats", type=int, default=2, help="repeats of the k-fold split. Default: 2")
    tb.add_argument("--copies", type=int, default=4, help="copies per view. Default: 4")
    tb.add_argument("--seed", type=int, default=0, help="seed of the first repeat. Default: 0")
    tb.add_argument("--out", metavar="DIR", default=None, help="folder for report.md and results.json. "
                    "Default: results/tabular")
    dt = sub.add_parser("detection", help="YOLOX-nano on COCO val2017 and Penn-Fudan images: no TTA vs flips and "
                                          "scales, NMS, soft-NMS, WBF",
                        description="Run the YOLOX-nano ONNX detector (../shared/models/yolox-nano) on the "
                                    "COCO val2017 subset (../shared/data/coco-val2017-mini) and on Penn-Fudan "
                                    "(../shared/data/penn-fudan, persons only) with each policy and merge; mAP "
                                    "and AP50 by pycocotools, paired against no TTA.")
    dt.add_argument("--shared", metavar="DIR", default="../shared",
                    help="the folder holding models/yolox-nano, data/coco-val2017-mini and data/penn-fudan. "
                         "Default: ../shared")
    dt.add_argument("--datasets", nargs="+", choices=("coco", "penn-fudan"), default=["coco", "penn-fudan"],
                    metavar="NAME", help="data sets: coco, penn-fudan. Default: both")
    dt.add_argument("--limit", type=int, metavar="N", default=None, help="first N images only. Default: all")
    dt.add_argument("--n-boot", type=int, default=100, help="bootstrap resamples per comparison. Default: 100")
    dt.add_argument("--out", metavar="DIR", default=None, help="folder for detection.md and detection.json. "
                    "Default: results/detection")


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
    if args.experiment == "detection":
        import sys

        from ...experiments import detection

        cfg = detection.DetectionConfig(shared=args.shared, limit=args.limit, n_boot=args.n_boot,
                                        datasets=tuple(args.datasets),
                                        out=args.out or "results/detection")
        summary = detection.run(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
        print(detection.render(summary))
        print(f"report: {detection.write(summary, cfg.out)}")
        return EXIT_OK
    if args.experiment == "tabular":
        import sys

        from ...experiments import tabular

        cfg = {"folds": args.folds, "repeats": args.repeats, "n_copies": args.copies, "seed": args.seed}
        if args.datasets:
            cfg["datasets"] = tuple(args.datasets)
        if args.models:
            cfg["models"] = tuple(args.models)
        res = tabular.run(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
        print(res["verdict"] + "\n\n" + res["table"])
        print(f"\nreport: {tabular.write_report(res, args.out or 'results/tabular')}")
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


COMMAND = Command("reproduce", "rerun a reference experiment (tutorial, resnet, tuning, tabular, detection) and write a report",
                  configure=configure, run=run)
