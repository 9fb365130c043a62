"""The ``--task detect|segment|keypoints`` options of ``ttakit predict``,
``ttakit evaluate`` and ``ttakit tune``, and what each command does with
them. The commands' own modules add :func:`add_task_option` and one
argument group from here, and hand over to :func:`predict`,
:func:`evaluate` or :func:`tune` when ``--task`` is not ``classify``; the
work is in :mod:`ttakit.io.dense`, :mod:`ttakit.io.dense_eval` and
:mod:`ttakit.io.dense_tune`.

How a detector's raw output becomes boxes is always named: ``--decode
yolox`` (the zoo's YOLOX decode, which also declares the model's input:
416 x 416, letterboxed, BGR 0-255), ``--decode none`` (the model returns
boxes), or ``--decode module:function``, which imports that module and so
runs its code: only ever when you name it.
"""

from __future__ import annotations

import argparse
import sys

from ...errors import UsageError
from .common import (EXIT_FAILED_INPUTS, EXIT_OK, add_size_option, cannot_write, check_inputs, check_policy_out,
                     in_flags, normalize, pixels, positive_int, save_policy, warn)

TASK_CHOICES = ("classify", "detect", "segment", "keypoints")
#: the candidate views of ``ttakit tune --task detect|segment`` unless --candidates says
DENSE_CANDIDATES = "hflip, scale(0.83, 1.2)"


def add_task_option(p: argparse.ArgumentParser, tasks=TASK_CHOICES) -> None:
    p.add_argument("--task", choices=tasks, default="classify",
                   help="what the model does: classify (default), or "
                        f"{', '.join(t for t in tasks if t != 'classify')}: see the 'dense tasks' options")


def add_dense_options(p: argparse.ArgumentParser, command: str) -> None:
    """The argument group of the dense tasks for ``command`` (predict, evaluate, tune)."""
    from ...io.dense_eval import NO_MERGE
    from ...zoo.decoders import DECODERS, FITS

    g = p.add_argument_group(
        "dense tasks (--task detect, segment, keypoints)",
        "For evaluate and tune, --data is then a folder of images. The merge (--merge) is a box merge spec for "
        "detect: wbf (the default), nms or soft_nms, with parameters as wbf(iou_thr=0.6, conf_type=max); a "
        "class merge for segment: mean (the default), gmean, max or vote.")
    g.add_argument("--decode", default="none", metavar="NAME",
                   help="how a detector's raw output becomes boxes: "
                        + "; ".join(f"{n}: {d.summary}" for n, d in DECODERS.items())
                        + "; or module:function, your function of the raw output (imports it). Default: none")
    if command != "predict":  # predict has --size among its image options
        add_size_option(g, default_help="the decoder's (yolox: 416), else what the model declares")
    g.add_argument("--fit", choices=FITS, default=None,
                   help="letterbox (aspect kept, padded) or stretch. Default: the decoder's (yolox: letterbox), "
                        "else stretch")
    g.add_argument("--pad-value", type=int, default=None, metavar="V",
                   help="letterbox padding, 0-255. Default: the decoder's (yolox: 114), else 0")
    g.add_argument("--box-format", choices=("xyxy", "xywh", "cxcywh"), default="xyxy",
                   help="how the model (or the decode function) writes boxes. Default: xyxy")
    g.add_argument("--normalized-boxes", action="store_true",
                   help="the model's boxes are fractions of its input's width and height")
    if command != "tune":  # tune takes detect and segment
        g.add_argument("--flip-pairs", default=None, metavar="PAIRS",
                       help="keypoints: left/right index pairs swapped under mirroring views, as '1-2,3-4'; "
                            "'coco' for COCO's 17 keypoints. Default: none")
    if command == "predict":
        g.add_argument("--annotations", default=None, metavar="FILE",
                       help="a COCO JSON giving the image ids (by file name) and, for detect, the categories "
                            "(label k is the k-th by id): results.json then loads into COCO.loadRes against it. "
                            "Default: ids from numeric file names (000000010764.jpg: 10764), else 1, 2, ...")
        g.add_argument("--draw", default=None, metavar="DIR",
                       help="also draw each image's predictions (boxes scoring 0.3 or more, masks, skeletons) "
                            "into DIR/<name>.png; --classes FILE names the labels. Default: none")
        g.add_argument("--category-ids", type=int, nargs="+", default=None, metavar="ID",
                       help="the COCO category id of each model label, in label order (labels past the list are "
                            "left out). Default: --annotations' categories, else the label")
        g.add_argument("--score-threshold", type=float, default=None, metavar="T",
                       help="leave out boxes scoring below T (COCO's mAP wants them all). Default: keep all")
    else:
        g.add_argument("--annotations", default=None, metavar="FILE_OR_DIR",
                       help="detect: a COCO instances JSON; keypoints: a COCO person-keypoints JSON (the "
                            "images are its file_name under --data); segment: a folder of label-map PNGs "
                            "named like the images (see --mask-suffix). Required with --task")
        g.add_argument("--category-ids", type=int, nargs="+", default=None, metavar="ID",
                       help="detect: the COCO category id of each model label, in label order. Default: the "
                            "annotation file's categories sorted by id (label k is the k-th); labels past the "
                            "list are left out")
        g.add_argument("--mask-suffix", default="", metavar="S",
                       help="segment: the mask of image X.jpg is X<S>.png in --annotations. Default: ''")
        g.add_argument("--binary-masks", action="store_true",
                       help="segment: every nonzero mask value is class 1 (e.g. instance ids of one class)")
        g.add_argument("--limit", type=positive_int, default=None, metavar="N",
                       help="use the first N images only. Default: all")
        g.add_argument("--mode", choices=("RGB", "L"), default="RGB", type=str.upper,
                       help="read images as RGB or L. Default: RGB")
        g.add_argument("--max-pixels", type=pixels, default=None, metavar="N",
                       help="refuse images with more than N pixels. Default: 40M")
    if command == "evaluate":
        g.add_argument("--baseline-merge", default=NO_MERGE, metavar="SPEC",
                       help=f"detect: the baseline's box merge. Default: {NO_MERGE}, which suppresses nothing "
                            "(the model's own boxes); segment uses --merge for both")
        g.add_argument("--n-boot", type=positive_int, default=200, metavar="N",
                       help="bootstrap resamples of the CI. Default: 200")
    if command == "tune":
        g.add_argument("--merges", default=None, metavar="SPECS",
                       help="detect: box merges to try, separated by ';' (e.g. 'nms(iou_thr=0.65); wbf(iou_thr=0.6, "
                            "conf_type=max)'). Default: NMS 0.65, Gaussian soft-NMS, WBF iou_thr 0.55/0.7 x "
                            "conf_type avg/max; segment: mean, gmean, max, vote")
        g.add_argument("--dense-objective", choices=("map", "ap50"), default="map",
                       help="detect: what the search maximises, COCO AP@[.5:.95] or AP@.5 (segment: mean IoU). "
                            "Default: map")
        g.add_argument("--dense-budget", type=positive_int, default=3, metavar="K",
                       help="views added at most (each step tries every candidate view with every merge). "
                            "Default: 3")
        g.add_argument("--cache-bytes", type=pixels, default=None, metavar="B",
                       help="segment: the most bytes of cached per-view score maps. Default: 1 GiB")


# -- from options to library arguments --------------------------------------------

COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def flip_pairs(text: str | None):
    if not text:
        return ()
    if text.strip().lower() == "coco":
        return COCO_FLIP_PAIRS
    try:
        return tuple(tuple(int(v) for v in item.split("-")) for item in text.split(","))
    except ValueError:
        raise UsageError(f"--flip-pairs takes pairs as '1-2,3-4' or 'coco', got {text!r}") from None


def model_setup(args: argparse.Namespace) -> tuple[object, dict, dict]:
    """``(adapter, task options, fitting)`` for the dense task ``args.task``:
    the model, what the Detector/Segmenter/KeypointDetector takes, and
    ``size``/``fit``/``pad_value``."""
    from ...models.loading import load_model_file
    from ...zoo.decoders import get_decoder

    if args.model.startswith("zoo:"):
        raise UsageError(f"{args.model} is an image classifier (--task classify); --task {args.task} takes a model file")
    spec = get_decoder(args.decode) if args.task == "detect" else None  # before the model: fail fast
    if args.task != "detect" and args.decode != "none":
        raise UsageError(f"--decode is for --task detect, not {args.task}")
    adapter = load_model_file(args.model, layout=args.model_layout, device=getattr(args, "device", None))
    from ...io.images import parse_size

    size = parse_size(args.size)
    if size is not None:
        pass
    elif spec is not None and spec.size:
        size = (spec.size, spec.size)
    else:
        size = getattr(adapter, "expected_size", None)
    if size is None:
        raise UsageError(f"--task {args.task} needs the model's input size: pass --size H W")
    options: dict = {"batch_size": args.batch_size}
    pre = normalize(args.mean, args.std, getattr(args, "mode", "RGB"))
    if spec is not None:
        if spec.preprocess is not None and pre is not None:
            raise UsageError(f"--decode {spec.name} declares its own preprocessing; --mean/--std do not apply")
        options.update(decode=spec.make(size[0]), box_format=args.box_format, normalized=args.normalized_boxes)
        pre = spec.preprocess or pre
    if args.task == "segment":
        options["output"] = args.output_kind
    if args.task == "keypoints":
        options.update(flip_pairs=flip_pairs(args.flip_pairs), normalized=args.normalized_boxes)
    if pre is not None:
        options["preprocess"] = pre
    if getattr(args, "adapt", "none") != "none":  # predict and evaluate (checked by refuse_dense_adapt)
        options["adapt"] = args.adapt
    fit = args.fit or (spec.fit if spec is not None else "stretch")
    pad = args.pad_value if args.pad_value is not None else (spec.pad_value if spec is not None else 0)
    return adapter, options, {"size": size, "fit": fit, "pad_value": pad}


def box_merge(text: str | None, default: str = "wbf") -> tuple[str, dict]:
    from ...io.dense_eval import parse_merge_spec

    return parse_merge_spec(text or default)


# -- the commands ------------------------------------------------------------------

def predict(args: argparse.Namespace) -> int:
    from ...io import images
    from ...io.dense import predict_dense_files, write_dense

    given = [flag for flag, v in (("--top-k", args.top_k), ("--format", args.format)) if v is not None]
    if args.task != "detect":
        given += [flag for flag, v in (("--classes", None if args.draw else args.classes),
                                       ("--score-threshold", args.score_threshold)) if v is not None]
    if given:
        raise UsageError(f"{given[0]} does not apply to --task {args.task}, which writes COCO JSON (and PNG masks)")
    if not args.out:
        raise UsageError(f"--task {args.task} writes a folder (results.json, index.json, masks/): pass --out DIR")
    check_inputs(args.images)
    image_ids, cats, names = _coco_names(args)
    adapter, options, fitting = model_setup(args)
    policy = _policy(args.policy)
    merge = None
    if args.task == "detect":
        name, opts = box_merge(args.merge)
        merge, options["merge_options"] = name, opts
    elif args.task == "segment":
        merge = args.merge or "mean"
    elif args.merge:
        raise UsageError("--task keypoints merges by the confidence-weighted mean; --merge does not apply")
    pred = predict_dense_files(args.task, adapter, args.images, policy, merge, mode=args.mode,
                               recursive=args.recursive, max_pixels=args.max_pixels, image_ids=image_ids,
                               **fitting, **options)
    for path, why in pred.failures:
        why = why.replace("the annotation file", f"--annotations {args.annotations}")
        warn(f"cannot read or predict {images.printable(path)}: {in_flags(why)}")
    try:
        written = write_dense(pred, args.out, cats, model=args.model, names=names,
                              score_threshold=args.score_threshold)
    except OSError as e:
        raise cannot_write(args.out, e) from None
    warn(f"wrote {len(pred.paths)} images' results to {written} ({pred.forward_passes} forward passes, "
         f"{pred.seconds:.2f} s)")
    if args.draw:
        from ...report import draw_predictions
        from .common import read_classes

        names = read_classes(args.classes) if args.classes else None
        try:
            drawn = draw_predictions(pred, args.draw, names)
        except OSError as e:
            raise cannot_write(args.draw, e) from None
        warn(f"drew {len(drawn)} images in {args.draw}")
    return EXIT_FAILED_INPUTS if pred.failures else EXIT_OK


def _coco_names(args: argparse.Namespace) -> tuple[dict | None, list | None, dict | None]:
    """``(image ids, category ids, category names)`` for predict: from
    ``--annotations``, ``--category-ids`` and ``--classes``."""
    from ...io.dense import coco_file_ids
    from .common import read_classes

    image_ids, cats, names = None, args.category_ids, None
    if args.annotations:
        image_ids, names = coco_file_ids(args.annotations)
        if cats is None and args.task == "detect" and names:
            cats = sorted(names)
    if args.classes:
        classes = read_classes(args.classes)
        ids = cats if cats is not None else range(len(classes))
        names = {**(names or {}), **{int(c): n for c, n in zip(ids, classes)}}
    return image_ids, cats, names


def _policy(spec):
    from .common import load_policy

    return load_policy(spec)


def _common(args: argparse.Namespace) -> dict:
    from ...io.images import MAX_PIXELS

    if args.subset != "all":
        raise UsageError(f"--subset is for --task classify; use --limit N with --task {args.task}")
    if not args.annotations:
        raise UsageError(f"--task {args.task} needs --annotations (a COCO JSON, or for segment a mask folder)")
    return {"mode": args.mode, "max_pixels": args.max_pixels or MAX_PIXELS, "limit": args.limit}


def evaluate(args: argparse.Namespace) -> int:
    from ...io.dense_eval import evaluate_detection_files, evaluate_keypoint_files, evaluate_segmentation_files, \
        merge_spec

    common = _common(args)
    adapter, options, fitting = model_setup(args)
    policy, baseline = _policy(args.policy), _policy(args.baseline)
    if args.task == "detect":
        spec = merge_spec(*box_merge(args.merge))
        report = evaluate_detection_files(adapter, args.data, args.annotations, policy, spec, baseline,
                                          args.baseline_merge, category_ids=args.category_ids, n_boot=args.n_boot,
                                          **fitting, **common, **options)
    elif args.task == "segment":
        report = evaluate_segmentation_files(adapter, [args.data], args.annotations, policy, args.merge or "mean",
                                             baseline, mask_suffix=args.mask_suffix, binary_masks=args.binary_masks,
                                             n_boot=args.n_boot, **fitting, **common, **options)
    else:
        report = evaluate_keypoint_files(adapter, args.data, args.annotations, policy, baseline, n_boot=args.n_boot,
                                         **fitting, **common, **options)
    if "adapt" in options:
        report.settings["adapt"] = options["adapt"]
    if report.absent:
        warn(f"{report.absent} images of {args.annotations} are not in {args.data}; evaluated the "
             f"{report.n_images + len(report.failures)} there")
    for path, why in report.failures:
        warn(f"cannot read or predict {path}: {in_flags(why)}")
    print(report.to_markdown())
    if args.out:
        from ...report import write_dense

        try:
            md = report.write(args.out)
            print(f"report: {write_dense(report, args.out)} ({md})", file=sys.stderr)
        except OSError as e:
            raise cannot_write(args.out, e) from None
    return EXIT_FAILED_INPUTS if report.failures else EXIT_OK


def tune(args: argparse.Namespace) -> int:
    from ...io.dense_eval import parse_merge_spec
    from ...io.dense_tune import tune_detection_files, tune_segmentation_files

    check_policy_out(args.out)
    common = _common(args)
    adapter, options, fitting = model_setup(args)
    merges = None
    if args.merges:
        merges = [parse_merge_spec(m) for m in args.merges.split(";") if m.strip()]
    if args.task == "detect":
        res = tune_detection_files(adapter, args.data, args.annotations, args.candidates or DENSE_CANDIDATES,
                                   *([merges] if merges else []), objective=args.dense_objective,
                                   budget=args.dense_budget, guard_folds=args.guard_folds,
                                   guard_alpha=args.guard_alpha, seed=args.seed,
                                   category_ids=args.category_ids, **fitting, **common, **options)
    elif args.task == "segment":
        res = tune_segmentation_files(adapter, [args.data], args.annotations, args.candidates or DENSE_CANDIDATES,
                                      *([merges] if merges else []), budget=args.dense_budget,
                                      guard_folds=args.guard_folds, guard_alpha=args.guard_alpha, seed=args.seed,
                                      mask_suffix=args.mask_suffix, binary_masks=args.binary_masks,
                                      max_bytes=args.cache_bytes, **fitting, **common, **options)
    else:
        raise UsageError("ttakit tune takes --task classify, detect or segment")
    save_policy(res.policy, args.out)
    print(res.summary())
    name, opts = res.merge
    from ...io.dense_eval import merge_spec

    print(f"\nsaved: {args.out}; use it with --policy {args.out} --merge '{merge_spec(name, opts)}'")
    return EXIT_OK


__all__ = ["TASK_CHOICES", "add_task_option", "add_dense_options", "flip_pairs", "model_setup", "predict",
           "evaluate", "tune"]
