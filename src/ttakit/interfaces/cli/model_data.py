"""The MODEL argument and the labelled-data options that ``ttakit tune`` and
``ttakit evaluate`` share: both measure a model on labelled data, and must
read the same data the same way for a tuned policy to be judged on the
held-out part of the data it was tuned on."""

from __future__ import annotations

import argparse
import sys

from ...errors import UsageError
from ...io import labelled
from ...io.images import printable
from ...models.loading import load_model_file
from ...zoo.named import ZOO, is_zoo_name, load_zoo_model, zoo_options
from .common import add_model_options, add_runtime_option, fraction, normalize, read_classes, warn


def check_zoo_layout(args: argparse.Namespace) -> None:
    """Refuse a --model-layout the zoo ResNets do not consume."""
    if is_zoo_name(args.model) and args.model_layout not in (None, "NCHW"):
        raise UsageError(f"--model-layout {args.model_layout}: the zoo ResNets consume NCHW")


def add_model_and_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="model file (.onnx, TorchScript .pt/.pth/.ts, .keras) or zoo:resnet20 / zoo:resnet32 "
                        "(the published CIFAR ResNets, from --weights or $TTAKIT_MODELS, normalised for you); "
                        "with a table --data, a scikit-learn model (.skops)")
    d = p.add_argument_group("data")
    d.add_argument("--data", required=True, metavar="SPEC",
                   help="labelled data: cifar10[:test|train], a .npz with x and y, a folder with one "
                        "sub-folder of images per class, or a table (.csv, .tsv, .parquet) with --target")
    d.add_argument("--data-root", metavar="PATH", default=None,
                   help="where CIFAR-10 is (the binary release). Default: $TTAKIT_DATA, then the user cache")
    d.add_argument("--classes", metavar="FILE", default=None,
                   help="the model's class names, one per line, in its output order: the sub-folders of a "
                        "class-folder --data are labelled by them (a sub-folder naming no class is an error). "
                        "Default: the zoo models' CIFAR-10 names; else the sorted sub-folder names (with a "
                        "warning)")
    d.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download CIFAR-10 when it is not found. Default: on")
    d.add_argument("--data-layout", choices=("NHWC", "NCHW"), type=str.upper, default="NHWC",
                   help="layout of the arrays in a .npz file (image folders and CIFAR-10 are NHWC). "
                        "Default: NHWC")
    d.add_argument("--subset", choices=labelled.SUBSETS, default="all",
                   help="use all the data, or the tune or holdout part of a seeded split. Default: all")
    d.add_argument("--holdout-fraction", type=fraction, default=0.5, metavar="F",
                   help="share of the data in the holdout part. Default: 0.5")
    d.add_argument("--split-seed", type=int, default=0, metavar="S", help="seed of the split. Default: 0")
    m = p.add_argument_group("model")
    m.add_argument("--weights", metavar="DIR", default=None,
                   help="folder of the zoo ResNet checkpoints. Default: $TTAKIT_MODELS")
    add_model_options(m, normalize_default="none (the zoo ResNets use their own)")
    add_runtime_option(m)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show progress bars on stderr (forward passes, with a rate and an ETA). Default: on when "
                        "stderr is a terminal, off in logs and pipes")


def wants_progress(args: argparse.Namespace) -> bool:
    """``--progress``/``--no-progress``, else whether stderr is a terminal."""
    given = getattr(args, "progress", None)
    return sys.stderr.isatty() if given is None else bool(given)


def load_model(args: argparse.Namespace):
    """``(model, options)``: the model MODEL names and the keyword arguments
    for :func:`ttakit.tune` / :func:`ttakit.evaluate` that the options ask for."""
    from ...models import as_model
    from ...models.runtime import with_runtime

    options: dict = {"output": args.output_kind, "batch_size": args.batch_size, "progress": wants_progress(args)}
    norm = normalize(args.mean, args.std)
    if norm is not None:
        options["preprocess"] = norm
    if is_zoo_name(args.model):
        check_zoo_layout(args)
        model = load_zoo_model(args.model, args.weights)
        if args.runtime != "eager":
            model = with_runtime(as_model(model), args.runtime)
        zoo = zoo_options(args.model, preprocess=options.get("preprocess"), output=args.output_kind)
        options.update(preprocess=zoo["preprocess"], output=zoo["output"])
        return model, options
    return with_runtime(load_model_file(args.model, layout=args.model_layout), args.runtime), options


def model_classes(args: argparse.Namespace, policy=None) -> list[str] | None:
    """The model's class names: ``--classes``, else those a tuned policy
    carries, else the zoo models' CIFAR-10 names, else None."""
    if args.classes:
        return read_classes(args.classes)
    if policy is not None and policy.inputs is not None and policy.inputs.classes:
        return list(policy.inputs.classes)
    if args.model in ZOO:
        return zoo_options(args.model)["classes"]
    return None


def load_data(args: argparse.Namespace, policy=None) -> labelled.Labelled:
    """The labelled data ``--data`` names, cut to ``--subset``, labelled by
    the model's class names (:func:`model_classes`); files that could not
    be read are reported on stderr (the command then exits with 3)."""
    data = labelled.load_labelled(args.data, root=args.data_root, layout=args.data_layout, progress=wants_progress(args),
                                  download=args.download, classes=model_classes(args, policy))
    for path, why in data.failures:
        warn(f"cannot read {printable(path)}: {why}")
    if len(data.y) == 0:
        raise UsageError(f"--data {args.data}: no image could be read")
    return labelled.subset(data, args.subset, args.holdout_fraction, args.split_seed)
