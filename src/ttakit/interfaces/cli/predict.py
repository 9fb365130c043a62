"""``ttakit predict``: classify image files with test-time augmentation.

Parses the options and prints; the work is :func:`ttakit.io.predict_files`
and the writers of :mod:`ttakit.io.writers`, which a server or a batch job
can call the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ...errors import UsageError
from ...io import images, writers
from ...io.prediction import predict_files
from ...models.loading import load_model_file
from ...models.runtime import with_runtime
from . import predict_ray
from . import dense
from .adapt_option import adapt_value, add_adapt_option, refuse_adapt, refuse_dense_adapt
from .dense import add_dense_options, add_task_option
from .common import (
    EXIT_FAILED_INPUTS,
    EXIT_OK,
    Command,
    add_model_options,
    add_runtime_option,
    add_size_option,
    cannot_write,
    check_inputs,
    in_flags,
    load_policy,
    normalize,
    pixels,
    positive_int,
    read_classes,
    warn,
    write_stdout,
)
from .model_data import check_zoo_layout, load_model, model_classes
from .tables import add_table_options, run_predict, take_policy

DESCRIPTION = """\
Classify image files with test-time augmentation.

Each image is read with Pillow, scaled from 0-255 to [0, 1], augmented with
every distinct view of the policy, normalised (--mean/--std), run through the
model, and the views' predictions are merged. One row per image: path, label,
class (with --classes), confidence, entropy, spread and agreement over views,
and the probabilities. Images that cannot be read, or that the model returns
inf or NaN for, are named on stderr and left out (exit 3).
"""

DESCRIPTIONS = {
    "table": """\
Predict the rows of a table with a fitted scikit-learn model and row views.

With --data TABLE.csv|.parquet and a scikit-learn MODEL (.skops), each row is
predicted with the row views of --policy (a row policy file, or a spec with
--fit-data) and written as one row: row (position in the table), prediction,
and p_<class> per class (classification) or std, the spread across the copies
(regression); CSV on standard output, or --out FILE.csv|.parquet.
""",
    "ray": """\
Classify image files with test-time augmentation, as a batch job on Ray.

With --engine ray the prediction runs on Ray (local, or a cluster with
--address): IMAGES may also be .txt lists of files and Parquet or NPZ shards,
and --out is a folder of Parquet files (part-NNNNNN.parquet: id, label,
scores, probs, policy_id), with _manifest.json (the blocks committed) and
_failures.csv (id, reason). Killed at any moment, the same command run again
finishes the job, every input exactly once. See docs/scale-out.md.
""",
}
_DENSE = """\
{what} in image files with test-time augmentation.

Each image is fitted into the model's input (--size, --fit), augmented with
every distinct view of the policy, and the views' outputs are mapped back to
the image's own pixels and merged (--merge). --out DIR receives results.json
(COCO's result format{coco}), index.json (each image's id, file and size, the
failures, the settings){masks}. Images that cannot be read are named on stderr
and left out (exit 3).
"""
DESCRIPTIONS["detect"] = _DENSE.format(
    what="Detect objects", masks="",
    coco=": image_id, category_id, category_name with --classes or --annotations, bbox x y w h, score; "
         "it loads into pycocotools' COCO.loadRes against the --annotations file")
DESCRIPTIONS["segment"] = _DENSE.format(
    what="Segment", coco=", RLE per class when pycocotools is installed",
    masks=", and masks/NAME.png, the labels as a palette PNG (background\nblack, class 1 white, others in "
          "colour), with masks/NAME.prob.png, the label's\nprobability x 255, beside it")
DESCRIPTIONS["keypoints"] = _DENSE.format(what="Find keypoints", masks="", coco=": keypoints as x, y, v, score")

EPILOG = """\
examples:
  ttakit predict model.onnx photos/ --policy d4 --out preds.csv
  ttakit predict model.pt a.png b.jpg --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 --size 224 224
  ttakit predict model.keras photos/ --policy policy.yaml --classes classes.txt --format json
  ttakit predict model.onnx photos/ --model-layout NHWC --device cuda
  ttakit predict model.skops --data new.csv --policy policy.json --out preds.parquet
  ttakit predict model.pt shards/ -r --policy d4 --engine ray --out preds/
  ttakit predict model.pt shards/ -r --policy d4 --engine ray --address auto --gpus-per-actor 1 --out /nfs/preds/
  ttakit predict yolox_nano.onnx photos/ --task detect --decode yolox --policy hflips --merge "wbf(iou_thr=0.6)" --out dets/
  ttakit predict unet.pt scans/ --task segment --size 256 256 --policy d4 --out masks/
"""


def configure(p: argparse.ArgumentParser) -> None:
    from ...merge import MERGES

    p.add_argument("model", metavar="MODEL",
                   help="model file (.onnx, TorchScript .pt/.pth/.ts, .keras), or zoo:resnet20 / zoo:resnet32 "
                        "(normalised for you); with --data TABLE a scikit-learn model (.skops)")
    p.add_argument("images", metavar="IMAGES", nargs="*",
                   help="image files or folders of them; with --engine ray also .txt lists of files and "
                        ".parquet/.npz shards")
    add_task_option(p)
    g = p.add_argument_group("augmentation")
    g.add_argument("--policy", "-p", default=None, metavar="SPEC_OR_FILE",
                   help="the views to run: a spec such as 'd4' or 'identity + hflip + scale(0.9, 1.1)', "
                        "or a policy file (.yaml, .yml, .json); for a table, a row policy file, or a row spec "
                        "such as 'noise(0.1)' with --fit-data. Default: 'identity + hflip' (images). "
                        "See 'ttakit views' and 'ttakit policy'")
    g.add_argument("--merge", "-m", default=None, metavar="NAME",
                   help=f"how to merge the views' predictions: {', '.join(MERGES)} "
                        "(sharpen(T) and weighted(w1, w2, ...) take parameters). Default: the policy "
                        "file's own aggregation (from ttakit tune), else mean")
    g = p.add_argument_group("model")
    add_model_options(g, normalize_default="0, no normalisation")
    add_adapt_option(g, "predict")
    g.add_argument("--device", default=None, metavar="DEVICE",
                   help="where to run: cpu, cuda or cuda:N, for TorchScript and ONNX models. "
                        "Default: TorchScript on cpu, ONNX on CUDA when available, else cpu")
    add_runtime_option(g)
    g.add_argument("--weights", metavar="DIR", default=None,
                   help="folder of the zoo ResNet checkpoints. Default: $TTAKIT_MODELS")
    g = p.add_argument_group("images")
    add_size_option(g, default_help="what the model declares (the decoder's with --decode: yolox 416), else "
                                    "the images' own (one size for all)")
    g.add_argument("--mode", choices=images.MODES, default="RGB", type=str.upper,
                   help="read images as RGB (3 channels) or L (grayscale, 1 channel). Default: RGB")
    g.add_argument("--max-pixels", type=pixels, default=images.MAX_PIXELS, metavar="N",
                   help="refuse images of more than N pixels (40e6 and 40M are accepted), from their header. "
                        f"Default: {images.MAX_PIXELS:,}")
    g.add_argument("--recursive", "-r", action="store_true",
                   help="also take images from the sub-folders of folders in IMAGES. Default: top level only")
    g = p.add_argument_group("output")
    g.add_argument("--classes", default=None, metavar="FILE",
                   help="class names, one per line, in the model's output order. Default: class indices")
    g.add_argument("--top-k", type=positive_int, default=None, metavar="K",
                   help="write only the K largest probabilities per image. Default: all classes")
    g.add_argument("--format", "-f", choices=tuple(writers.WRITERS), default=None,
                   help="output format. Default: json when --out ends in .json, else csv")
    g.add_argument("--out", "-o", default=None, metavar="FILE",
                   help="write the results to FILE (a folder, required, with --engine ray or --task detect, "
                        "segment, keypoints). Default: standard output")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar on stderr. Default: on when stderr is a terminal")
    add_table_options(p, command="predict")
    add_dense_options(p, "predict")
    predict_ray.add_options(p)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except (OSError, RuntimeError, ValueError):
        return False


def check_out(out: str, inputs: list[str], recursive: bool) -> None:
    """Refuse an ``--out`` that is one of the inputs, or an image file the
    input folders would give: the predictions would overwrite it."""
    o = Path(out)
    for given in map(Path, inputs):
        inside = o.suffix.lower() in images.IMAGE_EXTENSIONS and (
            _same_file(o.parent, given) or (recursive and _is_under(o, given)))
        if _same_file(o, given) or inside:
            raise UsageError(f"--out {out} is one of the input images (from {given}); the predictions "
                             "would overwrite it. Write them to a .csv or .json file elsewhere")


def _is_under(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError, ValueError):
        return False


def run(args: argparse.Namespace) -> int:
    if args.runtime != "eager" and (take_policy(args) or args.engine == "ray"):
        raise UsageError(f"--runtime {args.runtime} is for image files predicted here; it does not apply to "
                         "--data TABLE or --engine ray")
    if take_policy(args):
        refuse_adapt(args, "tables")
        return run_predict(args)
    if not args.images:
        raise UsageError("give IMAGES (files or folders), or --data TABLE with a scikit-learn MODEL")
    if args.task != "classify":
        refuse_dense_adapt(args)
        if args.engine == "ray":
            raise UsageError(f"--engine ray runs classification only; --task {args.task} runs locally")
        return dense.predict(args)
    if args.engine == "ray":
        check_zoo_layout(args)
        refuse_adapt(args, "--engine ray (each Ray batch would adapt on its own)")
        if args.progress is None:
            args.progress = sys.stderr.isatty()
        return predict_ray.run(args)
    predict_ray.check_options(args)
    check_inputs(args.images)
    fmt = writers.format_for(args.out, args.format)
    if args.out:
        check_out(args.out, args.images, args.recursive)
    classes = read_classes(args.classes) if args.classes else None
    preprocess = normalize(args.mean, args.std, args.mode)
    size = images.parse_size(args.size)
    images.check_size(size, args.max_pixels)
    policy = load_policy(args.policy)
    output_kind = args.output_kind
    if args.model.startswith("zoo:"):  # the published CIFAR ResNets, with their normalisation and class names
        adapter, options = load_model(args)
        preprocess, output_kind = options.get("preprocess"), options["output"]
        classes = classes or model_classes(args)
        size = size or (32, 32)
    else:
        adapter = with_runtime(load_model_file(args.model, layout=args.model_layout, device=args.device),
                               args.runtime)
        if preprocess is None and not _normalisation_known(args.model, policy):
            warn("warning: no --mean/--std: the model sees pixels scaled to [0, 1] and nothing else. If it was trained on "
                 "normalised images, pass the same normalisation (for example --mean 0.485 0.456 0.406 --std "
                 "0.229 0.224 0.225), or its predictions are wrong without any error; zoo: models and graphs "
                 "written by 'ttakit export' carry theirs")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    pred = predict_files(adapter, args.images, policy, args.merge, output_kind=output_kind,
                         batch_size=args.batch_size, preprocess=preprocess, size=size, mode=args.mode,
                         recursive=args.recursive, classes=classes, progress=progress, model_name=args.model,
                         max_pixels=args.max_pixels, adapt=adapt_value(args))
    for path, why in pred.failures:
        warn(f"cannot read {images.printable(path)}: {in_flags(why)}")
    if pred.notes:
        warn(pred.describe_notes())
    written = len(pred.paths) - len(pred.failed_rows)
    if args.out:
        try:
            writers.write_predictions(pred, args.out, fmt, args.top_k)
        except OSError as e:
            raise cannot_write(args.out, e) from None
        warn(f"wrote {written} predictions to {args.out} ({pred.result.forward_passes} forward passes, "
             f"{pred.seconds:.2f} s)")
    else:
        write_stdout(writers.render(pred, fmt, args.top_k))
    if pred.failures:
        warn(f"{len(pred.failures)} of {len(pred.failures) + written} images could not be read or predicted")
        return EXIT_FAILED_INPUTS
    return EXIT_OK


COMMAND = Command("predict", "classify image files with test-time augmentation", configure=configure, run=run,
                  description=DESCRIPTION, epilog=EPILOG, descriptions=DESCRIPTIONS)


def _normalisation_known(model: str, policy) -> bool:
    """Whether the normalisation is said without --mean/--std: by a tuned
    policy's input contract, or inside a graph ``ttakit export`` wrote (its
    ONNX metadata names the views it holds)."""
    contract = getattr(policy, "inputs", None)
    if contract is not None and getattr(contract, "mean", None) is not None:
        return True
    if str(model).lower().endswith(".onnx"):
        try:
            import onnx

            meta = onnx.load(str(model), load_external_data=False).metadata_props
            return any(p.key.startswith("ttakit.") for p in meta)
        except Exception:  # noqa: BLE001 - an unreadable file was refused before this point
            return False
    return False
