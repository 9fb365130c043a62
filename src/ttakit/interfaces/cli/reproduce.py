"""``ttakit reproduce EXPERIMENT``: rerun a reference experiment (tutorial, resnet, shift, tuning, conformal, tabular,
detection, segmentation, keypoints, blood-cells, membranes).

The experiments themselves are :mod:`ttakit.experiments`; this module only
maps options to their configurations."""

from __future__ import annotations

import argparse
import os
import sys

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
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty(),
                   help="progress bars on stderr. Default: on when stderr is a terminal, off in logs and pipes "
                        "(training then prints one line per epoch)")


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


def add_shared_args(p: argparse.ArgumentParser, holding: str, items: str, n_boot: int, files: str,
                    out: str) -> None:
    """--shared, --limit, --n-boot and --out of the experiments on ../shared models and data."""
    p.add_argument("--shared", metavar="DIR", default="../shared",
                   help=f"the folder holding {holding}. Default: ../shared")
    p.add_argument("--limit", type=int, metavar="N", default=None, help=f"first N {items} only. Default: all")
    p.add_argument("--n-boot", type=int, default=n_boot,
                   help=f"bootstrap resamples per comparison. Default: {n_boot}")
    p.add_argument("--out", metavar="DIR", default=None, help=f"folder for {files}. Default: {out}")


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", title="experiments",
                           help="tutorial: the founding Keras CNN experiment; resnet: the published ResNets; "
                                "shift: the same under corruptions, with test-time adaptation; "
                                "tuning: policy search; tuning-panel: the search on many cases and splits; "
                                "conformal: prediction sets with and without TTA; "
                                "tabular: row TTA on scikit-learn models; "
                                "detection: YOLOX-nano on COCO and Penn-Fudan; segmentation: MediaPipe on Penn-Fudan; "
                                "keypoints: MediaPipe Pose on COCO persons; "
                                "blood-cells, membranes: models trained here, D4 where orientation does not matter")
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
    sh = sub.add_parser("shift", help="the published ResNets under CIFAR-10-C corruptions: views, test-time "
                                      "adaptation, both",
                        description="Corrupt N seeded CIFAR-10 test images (ttakit.shift) and compare no TTA, "
                                    "views, test-time batch-norm statistics, both, Tent and MEMO, paired against "
                                    "no TTA with bootstrap CIs; writes a report and a plot of error against "
                                    "severity.")
    sh.add_argument("--weights", metavar="DIR", default=None,
                    help="folder with resnet20-*.th and resnet32-*.th. Default: $TTAKIT_MODELS")
    sh.add_argument("--depth", type=int, action="append", choices=(20, 32), default=None,
                    help="which ResNet (repeatable). Default: 20 and 32")
    sh.add_argument("--corruptions", metavar="LIST", default=None,
                    help="comma-separated corruption names. Default: the nine of the protocol")
    sh.add_argument("--severities", metavar="LIST", default="1,3,5", help="comma-separated severities. Default: 1,3,5")
    sh.add_argument("--methods", metavar="LIST", default=None,
                    help="comma-separated methods: none, views, norm, norm+views, tent, tent+views, memo. "
                         "Default: none,views,norm,norm+views,tent,memo")
    sh.add_argument("--n-images", type=int, default=2000, help="test images (seeded draw). Default: 2000")
    sh.add_argument("--memo-images", type=int, default=200, help="images MEMO runs on (it is slow). Default: 200")
    sh.add_argument("--batch-size", type=int, default=200, help="images per chunk of the stream. Default: 200")
    sh.add_argument("--seed", type=int, default=0, help="seed of the draw and the corruptions. Default: 0")
    sh.add_argument("--data", metavar="PATH", default=None,
                    help="CIFAR-10 binary release. Default: $TTAKIT_DATA, then the user cache")
    sh.add_argument("--out", metavar="DIR", default=None, help="folder for shift.md, .json, .png. "
                                                               "Default: results/shift")
    sh.add_argument("--docs", metavar="FILE", default=None,
                    help="also write the report there (e.g. docs/results/shift.md)")
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
    tp = sub.add_parser("tuning-panel", help="does tune keep the gain and never lose? many models, sizes, splits",
                        description="Tune on random splits of several (model, data) cases and score each tuned "
                                    "policy on the rest: the oracle gain, the gain kept, splits worse than no TTA, "
                                    "fall-back rate; adaptive policies at 1.5 forwards; tables with and without "
                                    "the guard; conformal coverage with default arguments. Writes "
                                    "tuning-panel.md and tuning-panel/panel.json.")
    tp.add_argument("--cases", nargs="+", default=None, metavar="CASE",
                    choices=("resnet20", "resnet32", "tutorial", "digits", "tables", "segmentation", "detection"),
                    help="cases to run (resnet20, resnet32, tutorial, digits, tables, segmentation, detection). "
                         "Default: all")
    tp.add_argument("--splits", type=int, default=20, help="random splits per image case and test folds per "
                                                            "table case. Default: 20")
    tp.add_argument("--digits-splits", type=int, default=300, help="random splits of the digits case. Default: 300")
    tp.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000], metavar="N",
                    help="tuning images per split of the CIFAR cases. Default: 500 1000 2000")
    tp.add_argument("--pool-images", type=int, default=5000, metavar="N",
                    help="CIFAR-10 test images in each CIFAR case's pool (seeded). Default: 5000")
    tp.add_argument("--cache-dir", metavar="DIR", default=None,
                    help="where the per-view predictions are kept between runs. Default: ~/.cache/ttakit/panel")
    tp.add_argument("--weights", metavar="DIR", default=None,
                    help="folder with the ResNet checkpoints. Default: $TTAKIT_MODELS")
    tp.add_argument("--seed", type=int, default=0, help="seed of the pool and the splits. Default: 0")
    tp.add_argument("--data", metavar="PATH", default=None,
                    help="CIFAR-10 binary release (the cifar-10-batches-bin folder or its parent). "
                         "Default: $TTAKIT_DATA, then the user cache")
    tp.add_argument("--shared", metavar="DIR", default="../shared",
                    help="the folder holding data/isbi2012-membrane, data/penn-fudan and models/yolox-nano "
                         "(the dense cases). Default: ../shared")
    tp.add_argument("--out", metavar="DIR", default=None,
                    help="folder for panel.json; the report DIR.md is written beside it. "
                         "Default: results/tuning-panel")
    cf = sub.add_parser("conformal", help="conformal prediction sets (LAC, APS, RAPS) with and without TTA",
                        description="Split CIFAR-10's test set by a seed into a tuning half (policy search, "
                                    "temperatures) and a held-out half; split the held-out half at random "
                                    "--splits times into calibration and test parts; report coverage, mean "
                                    "set size, coverage by set size and worst-class coverage for no TTA, "
                                    "{identity, hflip} and the tuned policy. Each view runs once per image.")
    cf.add_argument("--model", choices=("resnet20", "resnet32"), action="append", default=None,
                    help="which ResNet (repeatable). Default: resnet20 and resnet32")
    cf.add_argument("--weights", metavar="DIR", default=None,
                    help="folder with the ResNet checkpoints. Default: $TTAKIT_MODELS")
    cf.add_argument("--alpha", type=float, default=0.1, help="allowed miscoverage (0.1 = 90%% target). Default: 0.1")
    cf.add_argument("--splits", type=int, default=20, help="random calibration/test splits. Default: 20")
    cf.add_argument("--budget", type=int, default=8, help="greedy search steps. Default: 8")
    cf.add_argument("--seed", type=int, default=0, help="seed of the tuning/held-out split and of the "
                                                       "calibration/test splits. Default: 0")
    cf.add_argument("--n-tune", type=int, default=5000, metavar="N",
                    help="images in the tuning half (the rest are held out). Default: 5000")
    cf.add_argument("--policy", metavar="SPEC_OR_FILE", default=None,
                    help="use this policy instead of searching one on the tuning half (its views merged by the "
                         "mean, a temperature fitted on the tuning half): only its views run, not the 38 "
                         "candidates. Default: search (standard pool, --budget)")
    cf.add_argument("--save-probs", action="store_true",
                    help="also write the held-out probabilities of every predictor to OUT/probs-MODEL.npz")
    add_data_args(cf)
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
    tb.add_argument("--guard-alpha", type=float, default=0.05,
                    help="error level of the guard (one-sided paired t-tests on cross-fitted per-row loss, "
                         "in a fixed sequence over the prefixes); 1 is the weakest test. Default: 0.05")
    tb.add_argument("--out", metavar="DIR", default=None, help="folder for report.md and results.json. "
                    "Default: results/tabular")
    dt = sub.add_parser("detection", help="YOLOX-nano on COCO val2017 and Penn-Fudan images: no TTA vs flips and "
                                          "scales, NMS, soft-NMS, WBF",
                        description="Run the YOLOX-nano ONNX detector (../shared/models/yolox-nano) on the "
                                    "COCO val2017 subset (../shared/data/coco-val2017-mini) and on Penn-Fudan "
                                    "(../shared/data/penn-fudan, persons only) with each policy and merge; mAP "
                                    "and AP50 by pycocotools, paired against no TTA.")
    add_shared_args(dt, "models/yolox-nano, data/coco-val2017-mini and data/penn-fudan", "images", 100,
                    "detection.md and detection.json", "results/detection")
    dt.add_argument("--datasets", nargs="+", choices=("coco", "penn-fudan"), default=["coco", "penn-fudan"],
                    metavar="NAME", help="data sets: coco, penn-fudan. Default: both")
    from ...experiments.segmentation import SECTIONS

    sg = sub.add_parser("segmentation", help="MediaPipe selfie segmentation on Penn-Fudan: no TTA vs flips and "
                                             "scales, person IoU and Dice",
                        description="Run each segmentation section: MediaPipe's selfie segmentation (needs "
                                    "mediapipe 0.10.14, see make mediapipe) on the Penn-Fudan person masks "
                                    "(../shared/data/penn-fudan) with no TTA, hflip, scales and hflip x scales; "
                                    "person IoU and Dice paired against no TTA, time per image, and a figure of "
                                    "one image's per-pixel uncertainty.")
    sg.add_argument("--sections", nargs="+", choices=tuple(SECTIONS), default=None, metavar="NAME",
                    help=f"sections to run. Default: all ({', '.join(SECTIONS)})")
    add_shared_args(sg, "data/penn-fudan", "images", 1000, "segmentation.md, segmentation.json and the figure",
                    "results/segmentation")
    kp = sub.add_parser("keypoints", help="MediaPipe Pose on the COCO val2017 persons: no TTA vs hflip and "
                                          "scales, OKS AP",
                        description="Run MediaPipe Pose (needs mediapipe 0.10.14, see make mediapipe) on the "
                                    "ground-truth boxes of the COCO persons with keypoints in "
                                    "../shared/data/coco-val2017-mini, BlazePose's landmarks mapped to COCO's 17, "
                                    "with and without flip (left/right swapped back) and scale TTA; OKS AP by "
                                    "pycocotools, per-person OKS and PCK paired against no TTA.")
    add_shared_args(kp, "data/coco-val2017-mini", "people", 1000, "keypoints.md and keypoints.json",
                    "results/keypoints")

    add_trained_args(sub)


def add_trained_args(sub) -> None:
    from ...experiments.blood_cells import BloodCellsConfig
    from ...experiments.membranes import MembranesConfig

    bc = sub.add_parser("blood-cells", help="a CenterNet trained here on BCCD: no TTA vs flips vs D4, NMS, "
                                            "soft-NMS, WBF",
                        description="Train (or load from the cache) a small CenterNet on BCCD's train split "
                                    "(../shared/data/bccd, images at 320x240), then evaluate it through "
                                    "ttakit.Detector on the test split: no TTA, flips and D4, each merged by NMS, "
                                    "soft-NMS and WBF; mAP and AP50 by pycocotools, paired against no TTA.")
    mb = sub.add_parser("membranes", help="a U-Net trained here on ISBI 2012 slices 0-19: no TTA vs flips vs D4 "
                                          "on slices 20-29",
                        description="Train (or load from the cache) a small U-Net on ISBI 2012 EM slices 0-19 "
                                    "(../shared/data/isbi2012-membrane), then evaluate it through "
                                    "ttakit.Segmenter on slices 20-29: no TTA, hflip, flips and D4; membrane IoU "
                                    "and Dice, paired against no TTA.")
    for p, cfg, what in ((bc, BloodCellsConfig(), "blood-cells"), (mb, MembranesConfig(), "membranes")):
        p.add_argument("--shared", metavar="DIR", default="../shared",
                       help="the folder holding data/bccd and data/isbi2012-membrane. Default: ../shared")
        p.add_argument("--cache", metavar="DIR", default=None,
                       help="folder of the trained weights (a state_dict per configuration, reused when present). "
                            "Default: ~/.cache/ttakit/trained ($XDG_CACHE_HOME/ttakit/trained)")
        p.add_argument("--steps", type=int, default=cfg.steps,
                       help=f"training steps (a new configuration trains anew). Default: {cfg.steps}")
        p.add_argument("--max-minutes", type=float, default=cfg.max_minutes,
                       help=f"stop training after this many minutes even if steps remain. Default: {cfg.max_minutes:g}")
        p.add_argument("--seed", type=int, default=cfg.seed, help=f"seed of weights and batches. Default: {cfg.seed}")
        p.add_argument("--threads", type=int, default=cfg.threads,
                       help=f"torch threads for training and evaluation. Default: {cfg.threads}")
        p.add_argument("--test-limit", type=int, metavar="N", default=None,
                       help="evaluate on the first N held-out images only. Default: all")
        p.add_argument("--n-boot", type=int, default=cfg.n_boot,
                       help=f"bootstrap resamples per comparison. Default: {cfg.n_boot}")
        p.add_argument("--quick", action="store_true",
                       help="a seconds-long smoke run: a tiny net, a few steps, a few images (not a result)")
        p.add_argument("--out", metavar="DIR", default=None,
                       help=f"folder for {what}.md and {what}.json. Default: results/{what}")


def run_trained(args: argparse.Namespace) -> int:
    from ...experiments import blood_cells, membranes

    module, cls = ((blood_cells, blood_cells.BloodCellsConfig) if args.experiment == "blood-cells"
                   else (membranes, membranes.MembranesConfig))
    given = {"shared": args.shared, "cache": args.cache, "seed": args.seed, "threads": args.threads,
             "out": args.out or f"results/{args.experiment}"}
    if args.test_limit is not None:
        given["test_limit"] = args.test_limit
    if args.quick:
        cfg = cls.quick(**given)
    else:
        cfg = cls(steps=args.steps, max_minutes=args.max_minutes, n_boot=args.n_boot, **given)
    return run_reported(module, cfg)


def run_reported(experiment, cfg) -> int:
    """Run an experiment module (``run``, ``render``, ``write``), logging to
    stderr, print its report and write it to ``cfg.out``."""
    import sys

    summary = experiment.run(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(experiment.render(summary))
    print(f"report: {experiment.write(summary, cfg.out)}")
    return EXIT_OK


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
        from ...experiments import detection

        cfg = detection.DetectionConfig(shared=args.shared, limit=args.limit, n_boot=args.n_boot,
                                        datasets=tuple(args.datasets),
                                        out=args.out or "results/detection")
        return run_reported(detection, cfg)
    if args.experiment == "segmentation":
        from ...experiments import segmentation

        cfg = segmentation.SegmentationConfig(shared=args.shared, limit=args.limit, n_boot=args.n_boot,
                                              sections=tuple(args.sections or segmentation.SECTIONS),
                                              out=args.out or "results/segmentation")
        return run_reported(segmentation, cfg)
    if args.experiment == "keypoints":
        from ...experiments import keypoints

        cfg = keypoints.KeypointsConfig(shared=args.shared, limit=args.limit, n_boot=args.n_boot,
                                        out=args.out or "results/keypoints")
        return run_reported(keypoints, cfg)
    if args.experiment == "shift":
        from ...experiments import shift

        def listed(text, kind=str):
            return tuple(kind(v) for v in text.split(",") if v.strip()) if text else ()

        cfg = shift.ShiftConfig(depths=tuple(args.depth or (20, 32)), corruptions=listed(args.corruptions),
                                severities=listed(args.severities, int),
                                methods=listed(args.methods) or shift.DEFAULT_METHODS, n_images=args.n_images,
                                memo_images=args.memo_images, batch_size=args.batch_size, seed=args.seed,
                                weights=args.weights, data=args.data, out=args.out or "results/shift",
                                docs=args.docs)
        import sys

        res = shift.run(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
        print(shift.render(res))
        print(f"report: {shift.write(res, cfg.out, cfg.docs)}")
        return EXIT_OK
    if args.experiment in ("blood-cells", "membranes"):
        return run_trained(args)
    if args.experiment == "tabular":
        import sys

        from ...experiments import tabular

        cfg = {"folds": args.folds, "repeats": args.repeats, "n_copies": args.copies, "seed": args.seed,
               "guard_alpha": args.guard_alpha}
        if args.datasets:
            cfg["datasets"] = tuple(args.datasets)
        if args.models:
            cfg["models"] = tuple(args.models)
        res = tabular.run(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
        print(res["verdict"] + "\n\n" + res["table"])
        print(f"\nreport: {tabular.write_report(res, args.out or 'results/tabular')}")
        return EXIT_OK
    if args.experiment == "conformal":
        import sys

        from ...experiments import conformal

        cfg = conformal.ConformalConfig(models=tuple(args.model or ("resnet20", "resnet32")), weights=args.weights,
                                        data=args.data, alpha=args.alpha, splits=args.splits, budget=args.budget,
                                        seed=args.seed, n_tune=args.n_tune, test_limit=args.test_limit,
                                        out=args.out or "results/conformal", progress=args.progress,
                                        policy=args.policy, save_probs=args.save_probs)
        summary = conformal.run(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
        print(conformal.render(summary))
        return EXIT_OK
    if args.experiment == "tuning-panel":
        import sys

        from ...experiments import tuning_panel

        cfg = tuning_panel.PanelConfig(splits=args.splits, digits_splits=args.digits_splits, sizes=tuple(args.sizes),
                                       pool_images=args.pool_images, seed=args.seed, data=args.data,
                                       weights=args.weights, cache_dir=args.cache_dir, shared=args.shared,
                                       out=args.out or "results/tuning-panel",
                                       **({"cases": tuple(args.cases)} if args.cases else {}))
        result = tuning_panel.run(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
        out = tuning_panel.write(result, cfg.out)
        print(tuning_panel.render(result))
        print(f"report: {out.parent / (out.name + '.md')}")
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


COMMAND = Command("reproduce", "rerun a reference experiment (tutorial, resnet, shift, tuning, tuning-panel, conformal, tabular, "
                  "detection, segmentation, keypoints, blood-cells, membranes) and write a report",
                  configure=configure, run=run)
