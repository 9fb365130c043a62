"""What the ``ttakit`` commands share: the :class:`Command` record, exit
codes, printing, argument types and the options several commands take.

The library (:mod:`ttakit.io`, :mod:`ttakit.models.loading`...) raises
errors that name its Python parameters (``pass model_layout='NHWC'``); a
command-line user never wrote those, so :func:`in_flags` rewrites them into
the flags that set them (``pass --model-layout NHWC``) before printing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import UsageError

PROG = "ttakit"
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_FAILED_INPUTS = 3
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Command:
    """One ``ttakit NAME ...`` command."""

    name: str
    help: str                                             #: one line, shown in ``ttakit --help``
    configure: Callable[[argparse.ArgumentParser], None]  #: adds the command's arguments
    run: Callable[[argparse.Namespace], int]              #: does the work, returns the exit code
    description: str | None = None                        #: longer text for ``ttakit NAME --help``
    epilog: str | None = None
    descriptions: dict | None = None                      #: task -> the description of that task's help


# -- printing ---------------------------------------------------------------------------
#: Python parameter -> the flag that sets it, for rewriting the library's messages
FLAGS = {
    "model_layout": "--model-layout", "layout": "--model-layout", "data_layout": "--data-layout",
    "device": "--device", "output": "--output-kind", "output_kind": "--output-kind", "size": "--size",
    "mode": "--mode", "recursive": "--recursive", "batch_size": "--batch-size",
    "holdout_fraction": "--holdout-fraction", "guard_fraction": "--guard-fraction",
    "max_pixels": "--max-pixels", "classes": "--classes", "download": "--download", "path": "--data-root",
    "adapt": "--adapt", "runtime": "--runtime",
}
_PARAMETER = re.compile(
    r"\b(" + "|".join(sorted(FLAGS, key=len, reverse=True)) + r")="
    r"(?:'([^']*)'|\"([^\"]*)\"|\((\w+), (\w+)\)|([\w.:-]+))?"  # 'text', "text", (H, W), bare, or nothing
    r"((?: or '[^']*')*)")                                     # more choices: or 'NHWC'


def _as_flag(m: re.Match) -> str:
    flag = FLAGS[m.group(1)]
    if m.group(4) is not None:
        value = f"{m.group(4)} {m.group(5)}"
    else:
        value = next((g for g in (m.group(2), m.group(3), m.group(6)) if g is not None), "")
    more = m.group(7).replace("'", "")
    if value == "True":
        return flag + more
    return f"{flag} {value}{more}" if value else flag + more


def in_flags(message: str) -> str:
    """``message`` with ``name=value`` of the library's parameters written as
    the command line's flags: ``layout='NCHW' or 'NHWC'`` becomes
    ``--model-layout NCHW or NHWC``, ``size=(H, W)`` becomes ``--size H W``,
    ``recursive=True`` becomes ``--recursive``."""
    return _PARAMETER.sub(_as_flag, message)


def error(message: str) -> None:
    """Print ``ttakit: error: MESSAGE`` on stderr."""
    print(f"{PROG}: error: {message}", file=sys.stderr)


def warn(message: str) -> None:
    """Print ``ttakit: MESSAGE`` on stderr."""
    print(f"{PROG}: {message}", file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = " ".join(str(message).split())  # one line, no source file or line
    print(f"{PROG}: warning: {in_flags(text)}", file=sys.stderr if file is None else file)


@contextlib.contextmanager
def cli_warnings():
    """Inside: Python warnings print as one line ``ttakit: warning: ...``
    (the library's parameters written as flags), without file names and
    source lines."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        yield


def silence_stdout() -> None:
    """Point standard output at devnull (after a write to it failed), so
    that the flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def write_stdout(text: str) -> None:
    """Write ``text`` to standard output; a failure (a full disk, a closed
    pipe...) is a :class:`~ttakit.UsageError` naming it."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        silence_stdout()
        raise UsageError(f"cannot write to standard output: {e.strerror or e}; use --out FILE") from None


def pixels(text: str) -> int:
    """argparse type: a pixel count, as an integer, ``40e6`` or ``40M``."""
    t = text.strip().lower()
    scale = 1_000_000 if t.endswith("m") else 1
    try:
        v = float(t[:-1] if scale > 1 else t) * scale
    except ValueError:
        v = float("nan")
    if not (v >= 1 and v < 2**62):
        raise argparse.ArgumentTypeError(f"expected a pixel count such as 40000000, 40e6 or 40M, got {text!r}")
    return int(v)


# -- argument types -------------------------------------------------------------------
def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def at_least_one(text: str) -> float:
    """argparse type: a finite number >= 1 (forward passes per input)."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 1 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return v


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (exclusive), got {text!r}")
    return v


# -- shared options ---------------------------------------------------------------------
class Deprecated(argparse.Action):
    """An old spelling of a flag, kept working and out of the help: it
    stores into the new flag's ``dest`` and warns, naming the new one.
    ``add_argument("--old", action=Deprecated, new="--new", dest="new", ...)``."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{PROG}: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_size_option(g, *, default_help: str) -> None:
    """``--size`` (and its old spelling ``--input-size``), in the argument group ``g``."""
    g.add_argument("--size", nargs="+", default=None, metavar=("H", "W"),
                   help=f"the size images are brought to, H x W pixels: 'H W', 'HxW' or 'N' for a square. "
                        f"Default: {default_help}")
    g.add_argument("--input-size", nargs="+", dest="size", action=Deprecated, new="--size")

def add_model_options(g, *, normalize_default: str) -> None:
    """``--output-kind``, ``--model-layout``, ``--batch-size``, ``--mean`` and
    ``--std``, in the argument group ``g``."""
    from ...tasks.classification import OUTPUT_KINDS

    g.add_argument("--output-kind", choices=OUTPUT_KINDS, default="auto",
                   help="what the model returns; auto: probabilities when the first batch's rows are "
                        "distributions. Default: auto")
    g.add_argument("--model-layout", choices=("NCHW", "NHWC"), type=str.upper, default=None,
                   help="the layout the model consumes. Default: what ONNX and Keras models declare, NCHW "
                        "for TorchScript")
    g.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help="model inputs (images x views) per forward pass. Default: 512 on CPU, 1024 on GPU")
    g.add_argument("--mean", type=float, nargs="+", default=None, metavar="M",
                   help="per-channel mean subtracted after augmentation, on pixels in [0, 1] (1 value, or 3 "
                        f"for RGB). Default: {normalize_default}")
    g.add_argument("--std", type=float, nargs="+", default=None, metavar="S",
                   help="per-channel std divided by after --mean. Default: 1")


def add_runtime_option(g) -> None:
    """``--runtime``, in the argument group ``g``."""
    from ...models.runtime import RUNTIMES

    g.add_argument("--runtime", choices=RUNTIMES, default="eager",
                   help="how a PyTorch model runs: as it is (eager), exported to ONNX Runtime, or through "
                        "torch.compile; checked against eager on the first batch. Default: eager")


def normalize(mean: list[float] | None, std: list[float] | None, mode: str = "RGB"):
    """The :class:`~ttakit.Normalize` that ``--mean``/``--std`` ask for on
    ``mode`` images, or None when neither is given."""
    if mean is None and std is None:
        return None
    from ...models import Normalize

    c = 1 if mode == "L" else 3
    mean = mean if mean is not None else [0.0]
    std = std if std is not None else [1.0]
    for name, vals in (("--mean", mean), ("--std", std)):
        if len(vals) not in (1, c):
            want = "1 value" if c == 1 else f"1 or {c} values"
            raise UsageError(f"{name} takes {want} for {mode} images, got {len(vals)}")
    if any(not np.isfinite(v) for v in mean + std):
        raise UsageError("--mean and --std must be finite numbers")
    if any(s <= 0 for s in std):
        raise UsageError(f"--std values must be positive, got {' '.join(map(str, std))}")
    return Normalize(mean, std)


POLICY_SUFFIXES = (".yaml", ".yml", ".json")


def load_policy(spec_or_file: str):
    """A policy from a spec string, or from a file when the argument ends in
    .yaml, .yml or .json; a warning when it has no identity view."""
    from ...errors import TTAKitWarning
    from ...policy import Policy
    from ...policy.policy import NO_IDENTITY

    if Path(spec_or_file).suffix.lower() in POLICY_SUFFIXES:
        policy = Policy.load(spec_or_file)
    else:
        policy = Policy.parse(spec_or_file)
    if not policy.has_identity:
        warnings.warn(f"{spec_or_file}: {NO_IDENTITY}", TTAKitWarning, stacklevel=2)
    return policy


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


def check_inputs(inputs: list[str]) -> None:
    """Refuse, before any work, IMAGES arguments that cannot be what was
    meant: a missing path without an image extension (a mistyped folder,
    ``phots/``), or every argument missing. A missing image file among
    others is not refused here: it is reported by name and the others are
    still predicted (exit 3)."""
    from ...errors import did_you_mean
    from ...io.images import IMAGE_EXTENSIONS

    missing = [p for p in inputs if not os.path.lexists(p)]
    bad = [p for p in missing if Path(p).suffix.lower() not in IMAGE_EXTENSIONS]
    if not bad and missing and len(missing) == len(inputs):
        bad = missing
    if bad:
        p = Path(bad[0])
        try:
            siblings = [c.name for c in (p.parent if str(p.parent) else Path(".")).iterdir()]
        except OSError:
            siblings = []
        hint = did_you_mean(p.name, siblings)
        raise UsageError(f"no such file or folder: {bad[0]}.{hint}" +
                         (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))


def cannot_write(path, e: OSError) -> UsageError:
    """The error for an output file that could not be written."""
    return UsageError(f"cannot write {path}: {e.strerror or e}")


def check_policy_out(path: str | Path, flag: str = "--out") -> None:
    """Refuse, before any work, a policy output that ``--policy`` could not
    read back (a suffix other than .yaml, .yml or .json)."""
    if Path(path).suffix.lower() not in POLICY_SUFFIXES:
        raise UsageError(f"{flag} {path}: a policy file must end in {', '.join(POLICY_SUFFIXES)} "
                         "(what --policy reads back)")


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


__all__ = ["PROG", "EXIT_OK", "EXIT_INTERNAL", "EXIT_USAGE", "EXIT_FAILED_INPUTS", "EXIT_INTERRUPTED", "Command",
           "FLAGS", "in_flags", "error", "warn", "cli_warnings", "silence_stdout", "write_stdout", "pixels",
           "positive_int", "fraction", "Deprecated", "add_size_option", "add_model_options", "add_runtime_option",
           "normalize", "POLICY_SUFFIXES", "load_policy",
           "read_classes", "check_inputs", "cannot_write", "check_policy_out", "save_policy"]
