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
from .adapt_option import adapt_value, add_adapt_option, refuse_adapt
from .dense import add_dense_options, add_task_option
from .common import (
    EXIT_FAILED_INPUTS,
    EXIT_OK,
    Command,
    add_model_options,
    add_runtime_option,
    cannot_write,
    in_flags,
    load_policy,
    normalize,
    pixels,
    positive_int,
    read_classes,
    warn,
    write_stdout,
)
from .tables import add_table_options, run_predict, wants_table

DESCRIPTION = """\
Classify image files with test-time augmentation.

Each image is read with Pillow (RGB by default), scaled from 0-255 to [0, 1],
augmented with every distinct view of the policy, normalised (--mean/--std),
run through the model, and the views' predictions are merged.

Output, one row per image: path, label (class index), class (with --classes),
confidence (merged probability of the label), entropy (nats), spread (std over
views of the label's probability), agreement (weighted share of views whose top
class is the label), and the probabilities (CSV: one column p_<class> each;
JSON: a list, plus a summary). Images that cannot be found or read (unreadable
folders, dangling links, images over --max-pixels, unsupported modes) and
images the model returns inf or NaN for are reported by name on stderr and
left out; the others are still predicted and written, and the exit code is 3.
16-bit images are scaled from 0-65535, float images (TIFF mode F) from [0, 1];
alpha channels are dropped, CMYK converted and animated images cut to their
first frame, said in one summary line on stderr. --out is written all at
once (a temporary file renamed), never over one of the inputs.

Tables: with --data TABLE.csv|.parquet and a scikit-learn MODEL (.skops),
each row is predicted with the row views of --views (see 'tables' below)
and written as one row: row (position in the table), prediction, and
p_<class> per class (classification) or std, the spread across the copies
(regression); CSV on standard output, or --out FILE.csv|.parquet.

With --engine ray the same prediction runs as a batch job on Ray (local, or a
cluster with --address): IMAGES may also be .txt lists of files and Parquet or
NPZ shards, and --out is a folder of Parquet files (part-NNNNNN.parquet: id,
label, scores, probs, policy_id), with _manifest.json (the blocks committed)
and _failures.csv (id, reason). Killed at any moment, the same command run
again finishes the job, every input exactly once. See docs/scale-out.md.
"""

EPILOG = """\
examples:
  ttakit predict model.onnx photos/ --policy d4 --out preds.csv
  ttakit predict model.pt a.png b.jpg --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 --size 224 224
  ttakit predict model.keras photos/ --policy policy.yaml --classes classes.txt --format json
  ttakit predict model.onnx photos/ --model-layout NHWC --device cuda
  ttakit predict model.skops --data new.csv --views policy.json --out preds.parquet
  ttakit predict model.pt shards/ -r --policy d4 --engine ray --out preds/
  ttakit predict model.pt shards/ -r --policy d4 --engine ray --address auto --gpus-per-actor 1 --out /nfs/preds/
  ttakit predict yolox_nano.onnx photos/ --task detect --decode yolox --policy hflips --merge "wbf(iou_thr=0.6)" --out dets/
  ttakit predict unet.pt scans/ --task segment --input-size 256 256 --policy d4 --out masks/
"""


def configure(p: argparse.ArgumentParser) -> None:
    from ...merge import MERGES

    p.add_argument("model", metavar="MODEL",
                   help="model file: ONNX (.onnx), TorchScript (.pt, .pth, .ts, .torchscript) or Keras (.keras); "
                        "for --data TABLE a scikit-learn model (.skops)")
    p.add_argument("images", metavar="IMAGES", nargs="*",
                   help="image files, or folders of them (png, jpg, jpeg, bmp, gif, tif, tiff, webp, ppm); with "
                        "--engine ray also .txt lists of files and .parquet/.npz shards (in folders too); "
                        "or none, with --data TABLE (see 'tables')")
    add_task_option(p)
    g = p.add_argument_group("augmentation")
    g.add_argument("--policy", "-p", default="identity + hflip", metavar="SPEC_OR_FILE",
                   help="the views to run: a spec such as 'd4' or 'identity + hflip + scale(0.9, 1.1)', "
                        "or a policy file (.yaml, .yml, .json). Default: 'identity + hflip'. "
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
    g = p.add_argument_group("images")
    g.add_argument("--size", nargs="+", default=None, metavar=("H", "W"),
                   help="resize every image to H x W pixels (bilinear), given as 'H W', 'HxW' or 'N' "
                        "for square. Default: the size the model expects (ONNX, Keras) when it says, else "
                        "the images' own size, which must then be the same for all")
    g.add_argument("--mode", choices=images.MODES, default="RGB", type=str.upper,
                   help="read images as RGB (3 channels) or L (grayscale, 1 channel). Default: RGB")
    g.add_argument("--max-pixels", type=pixels, default=images.MAX_PIXELS, metavar="N",
                   help="refuse (by name, from the file header, before decoding) images with more than N "
                        "pixels, and a --size larger than that; 40e6 and 40M are accepted. "
                        f"Default: {images.MAX_PIXELS:,}")
    g.add_argument("--recursive", "-r", action="store_true",
                   help="also take images from the sub-folders of folders in IMAGES. Default: top level only")
    g = p.add_argument_group("output")
    g.add_argument("--classes", default=None, metavar="FILE",
                   help="text file of class names, one per line, in the model's output order; adds a "
                        "'class' column and names the probability columns. Default: class indices")
    g.add_argument("--top-k", type=positive_int, default=None, metavar="K",
                   help="include only the K largest probabilities per image (CSV: columns top1_label, "
                        "top1_prob, ...; JSON: a 'top_k' list). Default: all classes")
    g.add_argument("--format", "-f", choices=tuple(writers.WRITERS), default=None,
                   help="output format. Default: json when --out ends in .json, else csv")
    g.add_argument("--out", "-o", default=None, metavar="FILE",
                   help="write the results to FILE (with --engine ray, or --task detect/segment/keypoints: to "
                        "the folder FILE, required). Default: standard output")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar on stderr (Ray's own with --engine ray). Default: on when stderr "
                        "is a terminal")
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
    if args.runtime != "eager" and (wants_table(args) or args.engine == "ray"):
        raise UsageError(f"--runtime {args.runtime} is for image files predicted here; it does not apply to "
                         "--data TABLE or --engine ray")
    if wants_table(args):
        refuse_adapt(args, "tables")
        return run_predict(args)
    if not args.images:
        raise UsageError("give IMAGES (files or folders), or --data TABLE with a scikit-learn MODEL")
    if args.task != "classify":
        refuse_adapt(args, f"--task {args.task}")
        if args.engine == "ray":
            raise UsageError(f"--engine ray runs classification only; --task {args.task} runs locally")
        return dense.predict(args)
    if args.engine == "ray":
        refuse_adapt(args, "--engine ray (each Ray batch would adapt on its own)")
        if args.progress is None:
            args.progress = sys.stderr.isatty()
        return predict_ray.run(args)
    predict_ray.check_options(args)
    fmt = writers.format_for(args.out, args.format)
    if args.out:
        check_out(args.out, args.images, args.recursive)
    classes = read_classes(args.classes) if args.classes else None
    preprocess = normalize(args.mean, args.std, args.mode)
    size = images.parse_size(args.size)
    images.check_size(size, args.max_pixels)
    policy = load_policy(args.policy)
    adapter = with_runtime(load_model_file(args.model, layout=args.model_layout, device=args.device), args.runtime)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    pred = predict_files(adapter, args.images, policy, args.merge, output_kind=args.output_kind,
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
                  description=DESCRIPTION, epilog=EPILOG)
