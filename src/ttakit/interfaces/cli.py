"""The ``ttakit`` command line.

    ttakit predict model.onnx images/ --policy "d4" --out preds.csv
    ttakit policy "random(7, seed=0, horizontal_flip=true)"
    ttakit views

Subcommands live in the :data:`SUBCOMMANDS` registry. Each is a
:class:`Subcommand`: a name, a one-line help, a ``configure(parser)`` that
adds its arguments, and a ``run(args) -> int`` that returns the exit code.
To add one from another module::

    from ttakit.interfaces.cli import Subcommand, register

    register(Subcommand("demo", "run the tutorial demo", configure=_args, run=_run))

and list that module in :data:`COMMAND_MODULES` so the parser imports it.

Exit codes: 0 success; 2 usage or configuration error (bad option, bad
policy, missing model...: the message is printed as ``ttakit: error: ...``,
without a traceback); 3 some input images could not be read (the others are
still predicted and written).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import inspect
import io
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import ModelRunError, TTAKitError, UsageError
from . import images as _images

PROG = "ttakit"
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_FAILED_INPUTS = 3

#: modules imported when the parser is built, so that their register() calls run
COMMAND_MODULES: list[str] = ["ttakit.interfaces.reproduce", "ttakit.interfaces.tuning_cli"]


# -- the registry ------------------------------------------------------------------
@dataclass(frozen=True)
class Subcommand:
    """One ``ttakit NAME ...`` command."""

    name: str
    help: str                                          #: one line, shown in ``ttakit --help``
    configure: Callable[[argparse.ArgumentParser], None]  #: adds the command's arguments
    run: Callable[[argparse.Namespace], int]           #: does the work, returns the exit code
    description: str | None = None                     #: longer text for ``ttakit NAME --help``
    epilog: str | None = None


SUBCOMMANDS: dict[str, Subcommand] = {}


def register(command: Subcommand, *, replace: bool = False) -> Subcommand:
    """Add ``command`` to :data:`SUBCOMMANDS` (an error if the name is taken,
    unless ``replace``)."""
    if command.name in SUBCOMMANDS and not replace:
        raise UsageError(f"subcommand {command.name!r} is already registered")
    SUBCOMMANDS[command.name] = command
    return command


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' line breaks and shows defaults given in help."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=30)


def build_parser() -> argparse.ArgumentParser:
    for mod in COMMAND_MODULES:
        importlib.import_module(mod)
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_Formatter,
        description="Test-time augmentation for any image classifier: fast, deduplicated, measured.",
        epilog="Run 'ttakit COMMAND --help' for a command's options.\n"
               "Exit codes: 0 success, 2 usage or configuration error, 3 some images could not be read.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the ttakit version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    for cmd in SUBCOMMANDS.values():
        description = cmd.description or cmd.help
        if "\n" not in description.strip():  # one paragraph: wrap it (the formatter keeps line breaks)
            description = textwrap.fill(description, 79)
        p = sub.add_parser(cmd.name, help=cmd.help, description=description,
                           epilog=cmd.epilog, formatter_class=_Formatter)
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (also for ``--help`` and
    argument errors, which argparse reports by exiting)."""
    from ..engine import tune_allocator

    tune_allocator()  # our own process: keep big tensors in the heap (see BENCHMARKS.md)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or an argparse usage error (already printed)
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    try:
        return int(args._run(args))
    except TTAKitError as e:
        _error(str(e))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `ttakit views | head`: the reader left, which is fine
        try:  # point stdout at devnull so that the flush at exit does not fail again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_OK


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


# -- shared helpers ------------------------------------------------------------------
POLICY_SUFFIXES = (".yaml", ".yml", ".json")


def load_policy(spec_or_file: str):
    """A policy from a spec string, or from a file when the argument ends in
    .yaml, .yml or .json."""
    from ..policy import Policy

    if Path(spec_or_file).suffix.lower() in POLICY_SUFFIXES:
        return Policy.load(spec_or_file)
    return Policy.parse(spec_or_file)


def read_classes(path: str | Path) -> list[str]:
    """Class names, one per line (surrounding blanks stripped; empty lines
    at the end ignored)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise UsageError(f"cannot read classes file {path}: {e.strerror or e}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if not names:
        raise UsageError(f"classes file {path} is empty")
    if any(not n for n in names):
        raise UsageError(f"classes file {path} has an empty line (line {names.index('') + 1})")
    return names


def _num(v: float) -> float:
    """A float rounded to float32 precision, for output."""
    return float(f"{float(v):.7g}")


# -- predict -------------------------------------------------------------------------
PREDICT_DESCRIPTION = """\
Classify image files with test-time augmentation.

Each image is read with Pillow (RGB by default), scaled from 0-255 to [0, 1],
augmented with every distinct view of the policy, normalised (--mean/--std),
run through the model, and the views' predictions are merged.

Output, one row per image: path, label (class index), class (with --classes),
confidence (merged probability of the label), entropy (nats), spread (std over
views of the label's probability), agreement (weighted share of views whose top
class is the label), and the probabilities (CSV: one column p_<class> each;
JSON: a list, plus a summary). Images that cannot be read are reported on
stderr and skipped; the exit code is then 3.
"""

PREDICT_EPILOG = """\
examples:
  ttakit predict model.onnx photos/ --policy d4 --out preds.csv
  ttakit predict model.pt a.png b.jpg --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 --size 224 224
  ttakit predict model.keras photos/ --policy policy.yaml --classes classes.txt --format json
"""


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _configure_predict(p: argparse.ArgumentParser) -> None:
    from ..merge import MERGES
    from ..tasks.classification import OUTPUT_KINDS

    p.add_argument("model", metavar="MODEL",
                   help="model file: ONNX (.onnx), TorchScript (.pt, .pth, .ts, .torchscript) or Keras (.keras)")
    p.add_argument("images", metavar="IMAGES", nargs="+",
                   help="image files, or folders of them (png, jpg, jpeg, bmp, gif, tif, tiff, webp, ppm)")
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
    g.add_argument("--output-kind", choices=OUTPUT_KINDS, default="auto",
                   help="what the model returns: probs, logits, or auto (probabilities when the first "
                        "batch's rows are non-negative and sum to 1). Default: auto")
    g.add_argument("--layout", choices=("NCHW", "NHWC"), type=str.upper, default=None,
                   help="the model's input layout. Default: read from the model for ONNX and Keras, "
                        "NCHW for TorchScript")
    g.add_argument("--device", default=None, metavar="DEVICE",
                   help="where to run: cpu, cuda or cuda:N, for TorchScript and ONNX models. "
                        "Default: TorchScript on cpu, ONNX on CUDA when available, else cpu")
    g.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                   help="model inputs (images x views) per forward pass. Default: 512 on CPU (the command tunes the allocator for it), 1024 on GPU")
    g.add_argument("--mean", type=float, nargs="+", default=None, metavar="M",
                   help="per-channel mean subtracted after augmentation, on pixels in [0, 1] "
                        "(3 values for RGB, 1 for L, or 1 for all). Default: 0, no normalisation")
    g.add_argument("--std", type=float, nargs="+", default=None, metavar="S",
                   help="per-channel std divided by after subtracting --mean, on pixels in [0, 1]. Default: 1")
    g = p.add_argument_group("images")
    g.add_argument("--size", nargs="+", default=None, metavar=("H", "W"),
                   help="resize every image to H x W pixels (bilinear), given as 'H W', 'HxW' or 'N' "
                        "for square. Default: the size the model expects (ONNX, Keras) when it says, else "
                        "the images' own size, which must then be the same for all")
    g.add_argument("--mode", choices=_images.MODES, default="RGB", type=str.upper,
                   help="read images as RGB (3 channels) or L (grayscale, 1 channel). Default: RGB")
    g.add_argument("--recursive", "-r", action="store_true",
                   help="also take images from the sub-folders of folders in IMAGES. Default: top level only")
    g = p.add_argument_group("output")
    g.add_argument("--classes", default=None, metavar="FILE",
                   help="text file of class names, one per line, in the model's output order; adds a "
                        "'class' column and names the probability columns. Default: class indices")
    g.add_argument("--top-k", type=_positive_int, default=None, metavar="K",
                   help="include only the K largest probabilities per image (CSV: columns top1_label, "
                        "top1_prob, ...; JSON: a 'top_k' list). Default: all classes")
    g.add_argument("--format", "-f", choices=("csv", "json"), default=None,
                   help="output format. Default: json when --out ends in .json, else csv")
    g.add_argument("--out", "-o", default=None, metavar="FILE",
                   help="write the results to FILE. Default: standard output")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar on stderr. Default: on when stderr is a terminal")


def _channels(mode: str) -> int:
    return 1 if mode == "L" else 3


def _normalize_from_args(args):
    if args.mean is None and args.std is None:
        return None
    from ..models import Normalize

    c = _channels(args.mode)
    mean = args.mean if args.mean is not None else [0.0]
    std = args.std if args.std is not None else [1.0]
    for name, vals in (("--mean", mean), ("--std", std)):
        if len(vals) not in (1, c):
            want = "1 value" if c == 1 else f"1 or {c} values"
            raise UsageError(f"{name} takes {want} for {args.mode} images, got {len(vals)}")
    if any(not np.isfinite(v) for v in mean + std):
        raise UsageError("--mean and --std must be finite numbers")
    if any(s <= 0 for s in std):
        raise UsageError(f"--std values must be positive, got {' '.join(map(str, std))}")
    return Normalize(mean, std)


def load_model_file(path: str, layout: str | None = None, device: str | None = None):
    """The model adapter for a model file, with the CLI's --layout/--device."""
    from ..models.loading import SUFFIXES, load_model

    kind = SUFFIXES.get(Path(path).suffix.lower())
    kwargs: dict = {}
    if layout is not None:
        kwargs["layout"] = layout
    if device is not None:
        dev = device.lower()
        if not (dev == "cpu" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise UsageError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
        if kind == "torchscript":
            import torch

            if dev.startswith("cuda") and not torch.cuda.is_available():
                raise UsageError(f"--device {device}: CUDA is not available to PyTorch here")
            kwargs["device"] = dev
        elif kind == "onnx":
            import onnxruntime as ort

            provider = "CPUExecutionProvider" if dev == "cpu" else "CUDAExecutionProvider"
            if provider not in ort.get_available_providers():
                raise UsageError(f"--device {device}: ONNX Runtime here has no {provider} "
                                 f"(it has {', '.join(ort.get_available_providers())})")
            kwargs["providers"] = ([(provider, {"device_id": int(dev[5:])})] if ":" in dev else [provider])
        elif kind == "keras":
            raise UsageError("--device applies to TorchScript and ONNX models; Keras picks its own device "
                             "(use CUDA_VISIBLE_DEVICES to choose)")
    try:
        return load_model(path, **kwargs)
    except TTAKitError as e:
        if layout is None and "layout=" in str(e):
            raise type(e)(f"{e} (on the command line: --layout NCHW or --layout NHWC)") from None
        raise


@dataclass
class Predictions:
    """What ``ttakit predict`` computed, ready to write."""

    paths: list[str]
    result: object              #: the ClassificationResult
    failures: list[tuple[str, str]]
    policy: object              #: the Policy as given (before dedupe)
    merge: str
    classes: list[str] | None
    model: str
    seconds: float              #: wall time, reading included


def predict_files(model: str, inputs: Sequence[str], policy="identity + hflip", merge=None, *,
                  output_kind: str = "auto", model_layout: str | None = None, device: str | None = None,
                  batch_size: int | None = None, preprocess=None, size=None, mode: str = "RGB",
                  recursive: bool = False, classes: Sequence[str] | None = None,
                  progress: bool = False) -> Predictions:
    """Everything ``ttakit predict`` does but writing: find and read the
    images (in chunks), run the Classifier, collect failures."""
    from ..policy import Policy
    from ..tasks import Classifier

    t0 = time.perf_counter()
    pol = load_policy(policy) if isinstance(policy, str) else Policy.coerce(policy)
    paths = _images.find_images(inputs, recursive=recursive)
    adapter = load_model_file(model, layout=model_layout, device=device)
    clf = Classifier(adapter, pol, merge, data_layout="NHWC", output=output_kind, preprocess=preprocess,
                     batch_size=batch_size, classes=classes, progress=False)
    expected = getattr(adapter, "expected_size", None)
    target, failures = _images.plan_size(paths, _images.parse_size(size) if size is not None else None, expected)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths) - len(failures), unit="img", desc=PROG, file=sys.stderr)
    stream = _images.ImageStream(paths, mode, target, failures=failures,
                                 on_read=(lambda _p: bar.update(1)) if bar is not None else None)
    try:
        result = clf.run(stream)
    except TTAKitError:
        raise
    except Exception as e:  # the model itself failed: usually a wrong --layout, --size or --mode
        if os.environ.get("TTAKIT_TRACEBACK"):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:500]
        raise ModelRunError(
            f"the model failed on the images ({type(e).__name__}: {first}). Check --layout "
            f"(now {adapter.layout}), --size and --mode (now {mode}); set TTAKIT_TRACEBACK=1 for the "
            "full traceback") from None
    finally:
        if bar is not None:
            bar.close()
    return Predictions(paths=stream.good, result=result, failures=stream.failures, policy=pol,
                       merge=repr(clf.merge), classes=clf.classes, model=str(model),
                       seconds=time.perf_counter() - t0)


def _class_name(pred: Predictions, i: int) -> str:
    return pred.classes[i] if pred.classes is not None else str(i)


def _top_k(probs: np.ndarray, k: int) -> np.ndarray:
    k = min(k, probs.shape[-1])
    return np.argsort(-probs, axis=-1, kind="stable")[:, :k]


def write_csv(pred: Predictions, out, top_k: int | None = None) -> None:
    r = pred.result
    n_classes = r.probs.shape[-1] if r.probs.ndim == 2 else 0
    w = csv.writer(out, lineterminator="\n")
    head = ["path", "label"] + (["class"] if pred.classes else []) + ["confidence", "entropy", "spread", "agreement"]
    if top_k is None:
        head += [f"p_{_class_name(pred, j)}" for j in range(n_classes)]
    else:
        for j in range(1, min(top_k, n_classes) + 1):
            head += [f"top{j}_label"] + ([f"top{j}_class"] if pred.classes else []) + [f"top{j}_prob"]
    w.writerow(head)
    tops = _top_k(r.probs, top_k) if top_k is not None else None
    for i, path in enumerate(pred.paths):
        label = int(r.labels[i])
        row = [path, label] + ([pred.classes[label]] if pred.classes else [])
        row += [f"{v:.7g}" for v in (r.probs[i, label], r.entropy[i], r.spread[i], r.agreement[i])]
        if tops is None:
            row += [f"{v:.7g}" for v in r.probs[i]]
        else:
            for j in tops[i]:
                row += [int(j)] + ([pred.classes[j]] if pred.classes else []) + [f"{r.probs[i, j]:.7g}"]
        w.writerow(row)


def to_json(pred: Predictions, top_k: int | None = None) -> dict:
    r = pred.result
    unique = pred.policy.unique()
    tops = _top_k(r.probs, top_k) if top_k is not None else None
    rows = []
    for i, path in enumerate(pred.paths):
        label = int(r.labels[i])
        row: dict = {"path": path, "label": label}
        if pred.classes:
            row["class"] = pred.classes[label]
        row.update(confidence=_num(r.probs[i, label]), entropy=_num(r.entropy[i]),
                   spread=_num(r.spread[i]), agreement=_num(r.agreement[i]))
        if tops is None:
            row["probs"] = [_num(v) for v in r.probs[i]]
        else:
            row["top_k"] = [{"label": int(j), **({"class": pred.classes[j]} if pred.classes else {}),
                             "prob": _num(r.probs[i, j])} for j in tops[i]]
        rows.append(row)
    summary = {
        "ttakit": __version__,
        "model": pred.model,
        "policy": pred.policy.spec,
        "policy_source": pred.policy.source,
        "policy_distinct": unique.spec,
        "views": len(pred.policy),
        "distinct_views": len(unique),
        "merge": pred.merge,
        "output_kind": r.output_kind,
        "classes": pred.classes,
        "n_classes": int(r.probs.shape[-1]) if r.probs.ndim == 2 else 0,
        "images": len(pred.paths),
        "failed": len(pred.failures),
        "forward_passes": int(r.forward_passes),
        "seconds": round(pred.seconds, 4),
        "model_seconds": round(float(r.seconds), 4),
    }
    return {"results": rows, "failures": [{"path": p, "reason": why} for p, why in pred.failures],
            "summary": summary}


def _run_predict(args: argparse.Namespace) -> int:
    fmt = args.format or ("json" if args.out and Path(args.out).suffix.lower() == ".json" else "csv")
    classes = read_classes(args.classes) if args.classes else None
    preprocess = _normalize_from_args(args)
    size = _images.parse_size(args.size) if args.size is not None else None
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    pred = predict_files(args.model, args.images, args.policy, args.merge, output_kind=args.output_kind,
                         model_layout=args.layout, device=args.device, batch_size=args.batch_size,
                         preprocess=preprocess, size=size, mode=args.mode, recursive=args.recursive,
                         classes=classes, progress=progress)
    for path, why in pred.failures:
        _warn(f"cannot read {path}: {why}")
    buf = io.StringIO()
    if fmt == "json":
        json.dump(to_json(pred, args.top_k), buf, indent=2)
        buf.write("\n")
    else:
        write_csv(pred, buf, args.top_k)
    if args.out:
        try:
            Path(args.out).write_text(buf.getvalue(), encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot write {args.out}: {e.strerror or e}") from None
        r = pred.result
        _warn(f"wrote {len(pred.paths)} predictions to {args.out} ({r.forward_passes} forward passes, "
              f"{pred.seconds:.2f} s)")
    else:
        sys.stdout.write(buf.getvalue())
        sys.stdout.flush()
    if pred.failures:
        _warn(f"{len(pred.failures)} of {len(pred.failures) + len(pred.paths)} images could not be read")
        return EXIT_FAILED_INPUTS
    return EXIT_OK


# -- policy --------------------------------------------------------------------------
def _configure_policy(p: argparse.ArgumentParser) -> None:
    p.add_argument("policy", metavar="SPEC_OR_FILE",
                   help="a policy spec such as 'd4' or 'random(7, seed=0, horizontal_flip=true)', or a "
                        "policy file (.yaml, .yml, .json)")
    p.add_argument("--format", "-f", choices=("table", "yaml", "json"), default="table",
                   help="table: the distinct views with weights and shares; yaml or json: the deduplicated "
                        "policy as a policy file. Default: table")
    p.add_argument("--save", default=None, metavar="FILE",
                   help="also write the deduplicated policy to FILE (YAML for .yaml/.yml, else JSON), "
                        "for --policy FILE")


def _run_policy(args: argparse.Namespace) -> int:
    pol = load_policy(args.policy)
    unique = pol.unique()
    counts = f"{len(pol)} views, {len(unique)} distinct"
    if args.format == "table":
        print(f"policy: {pol.source or pol.spec}")
        if pol.source and pol.source != pol.spec:
            print(f"spec:   {unique.spec}")
        print(pol.describe())
    elif args.format == "yaml":
        import yaml

        print(f"# {pol.source or pol.spec}\n# {counts}")
        sys.stdout.write(yaml.safe_dump(unique.to_dict(), sort_keys=False))
    else:
        d = unique.to_dict()
        d.update(expanded_views=len(pol), distinct_views=len(unique))
        print(json.dumps(d, indent=2))
    if args.save:
        try:
            unique.save(args.save)
        except OSError as e:
            raise UsageError(f"cannot write {args.save}: {e.strerror or e}") from None
        _warn(f"saved the policy ({counts}) to {args.save}")
    return EXIT_OK


# -- views ---------------------------------------------------------------------------
def _signature(factory) -> str:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return ""
    parts = []
    for name, prm in sig.parameters.items():
        parts.append(name if prm.default is inspect.Parameter.empty else f"{name}={prm.default!r}")
    return f"({', '.join(parts)})" if parts else ""


VIEWS_COLUMN = 26


def _configure_views(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", "-f", choices=("text", "json"), default="text",
                   help="text: aligned lists; json: names, parameters and summaries. Default: text")


def _first_line(obj) -> str:
    """The docstring's first sentence, on one line."""
    doc = " ".join((inspect.getdoc(obj) or "").split("\n\n")[0].replace("``", "").split())
    end = doc.find(". ")
    return doc[: end + 1] if end >= 0 else doc


def _run_views(args: argparse.Namespace) -> int:
    from ..merge import MERGES
    from ..views.registry import GROUPS, VIEWS

    sections = [
        ("views", [(n, _signature(e.factory), e.summary) for n, e in VIEWS.items()]),
        ("groups (several views each)", [(n, _signature(e.factory), e.summary) for n, e in GROUPS.items()]),
        ("merges (--merge)", [(n, _signature(cls.__init__) if "__init__" in vars(cls) else "",
                               _first_line(cls)) for n, cls in MERGES.items()]),
    ]
    # the merges' signatures start with self
    sections[2] = (sections[2][0], [(n, s.replace("(self, ", "(").replace("(self)", ""), d)
                                    for n, s, d in sections[2][1]])
    if args.format == "json":
        out = {title.split()[0]: [{"name": n, "parameters": s, "summary": d} for n, s, d in rows]
               for title, rows in sections}
        print(json.dumps(out, indent=2))
        return EXIT_OK
    for k, (title, rows) in enumerate(sections):
        if k:
            print()
        print(f"{title}:")
        width = min(max(len(n + s) for n, s, _ in rows), VIEWS_COLUMN)
        for n, s, d in rows:
            if len(n + s) > width:  # long signatures get their own line
                print(f"  {n + s}\n  {'':<{width}}  {d}")
            else:
                print(f"  {n + s:<{width}}  {d}")
    print("\nCombine them in a policy spec: 'identity + hflip', 'd4 * scale(0.9, 1.1)', '0.5 * hflip'.")
    return EXIT_OK


# -- built-in commands ----------------------------------------------------------------
register(Subcommand("predict", "classify image files with test-time augmentation",
                    configure=_configure_predict, run=_run_predict,
                    description=PREDICT_DESCRIPTION, epilog=PREDICT_EPILOG))
register(Subcommand("policy", "show a policy's distinct views, weights and cost",
                    configure=_configure_policy, run=_run_policy,
                    description="Expand a policy spec or file into its views, merge equal views (summing "
                                "their weights: the same merged result for fewer forward passes) and show "
                                "them, with the expanded and distinct counts."))
register(Subcommand("views", "list the view, group and merge names usable in policies",
                    configure=_configure_views, run=_run_views,
                    description="List every view and group name with its parameters and defaults, and "
                                "the merges, for use in --policy and --merge."))


__all__ = ["main", "build_parser", "Subcommand", "SUBCOMMANDS", "register", "COMMAND_MODULES", "UsageError",
           "predict_files", "load_policy", "load_model_file", "read_classes", "write_csv", "to_json",
           "Predictions", "EXIT_OK", "EXIT_USAGE", "EXIT_FAILED_INPUTS"]
