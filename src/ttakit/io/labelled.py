"""Labelled image data from a short spec, for tuning and evaluation.

``ttakit tune`` and ``ttakit evaluate`` take their data as one string, and a
batch job or a notebook wants the same: so the parsing lives here, not in
the command line. :func:`load_labelled` takes

* ``cifar10`` or ``cifar10:test`` / ``cifar10:train``: the CIFAR-10 binary
  release (``root``, ``$TTAKIT_DATA`` or the user cache);
* a ``.npz`` file with arrays ``x`` (or ``images``) and ``y`` (or
  ``labels``), images in the given ``layout`` (NHWC by default), optional
  ``classes``;
* a folder with one sub-folder of images per class. With ``classes`` (the
  model's class names, in its output order) each sub-folder's label is the
  index of its name among them, and a sub-folder that names no class is an
  error; without, the sorted sub-folder names are the classes (a
  :class:`~ttakit.errors.TTAKitWarning` says so: a model trained on other
  classes would be scored against the wrong labels). Files that cannot be
  read are skipped and listed in :attr:`Labelled.failures`.

:func:`subset` takes one part of a seeded split, so tuning and evaluation
can use disjoint parts of one labelled set.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, TTAKitWarning
from .images import Failure, find_images, load_images

#: the parts :func:`subset` can take
SUBSETS = ("all", "tune", "holdout")


@dataclass
class Labelled:
    """Inputs ``x`` (in ``layout``), integer labels ``y``, optional class names."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str] | None
    layout: str
    description: str                                          #: one line saying where the data came from
    failures: list[Failure] = field(default_factory=list)     #: ``(path, reason)`` of files not read


def load_labelled(spec: str, *, root: str | None = None, layout: str = "NHWC", download: bool = True,
                  progress: bool = False, classes: Sequence[str] | None = None) -> Labelled:
    """The labelled data ``spec`` names (see the module docstring).

    ``root`` is where CIFAR-10 is; ``download`` fetches it when missing;
    ``layout`` is the layout of a ``.npz`` file's images (the others are
    NHWC). ``classes`` are the model's class names, in its output order:
    class folders are labelled by them, and a ``.npz`` holding names (as
    labels or ``classes``) must agree. Raises :class:`~ttakit.InputError`
    for a spec that names nothing usable or data that does not match
    ``classes``, :class:`~ttakit.errors.DatasetError` when CIFAR-10 cannot
    be had.
    """
    classes = [str(c) for c in classes] if classes is not None else None
    if spec.split(":")[0].lower() == "cifar10":
        from ..datasets import cifar10

        split = spec.split(":", 1)[1] if ":" in spec else "test"
        ds = cifar10(root, split=split, download=download, progress=progress)
        return Labelled(ds.images, ds.labels, list(ds.classes), "NHWC", f"CIFAR-10 {split}")
    path = Path(spec)
    if not path.exists():
        raise InputError(f"no such file or folder: {spec!r} (labelled data is cifar10[:split], a .npz file "
                         "with x and y, or a folder with one sub-folder of images per class)")
    if path.is_file():
        return _load_npz(path, layout, classes)
    try:
        folders = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise InputError(f"cannot list the data folder {spec!r}: {e.strerror or e}") from None
    if not folders:
        raise InputError(f"{spec!r} has no sub-folders: a data folder must hold one sub-folder of images per class")
    if classes is None:
        warnings.warn(TTAKitWarning(
            f"{spec}: no class names given, so the labels are the sorted sub-folder names' positions "
            f"({', '.join(f'{c}={i}' for i, c in enumerate(folders[:5]))}{', ...' if len(folders) > 5 else ''}); "
            "pass classes= with the model's class names when it was trained on other classes"), stacklevel=2)
        classes = folders
    unknown = [c for c in folders if c not in classes]
    if unknown:
        raise InputError(f"{spec!r}: the sub-folders {', '.join(map(repr, unknown))} name no class of the model; "
                         f"its classes are {', '.join(classes)} and the sub-folders are {', '.join(folders)}")
    xs, ys, failed = [], [], []
    for c in folders:
        arr, _good, failures = load_images(find_images([path / c], failures=failed))
        failed.extend(failures)
        xs.append(arr)
        ys.append(np.full(len(arr), classes.index(c), dtype=np.int64))
    sizes = {a.shape[1:] for a in xs if len(a)}
    if len(sizes) > 1:
        raise InputError(f"{spec!r}: the class folders hold images of different sizes "
                         f"({', '.join('x'.join(map(str, s[:2])) for s in sorted(sizes))})")
    xs = [a for a in xs if len(a)] or xs[:1]
    return Labelled(np.concatenate(xs), np.concatenate(ys), list(classes), "NHWC", str(path), failed)


def _load_npz(path: Path, layout: str, model_classes: list[str] | None = None) -> Labelled:
    if path.suffix.lower() != ".npz":
        raise InputError(f"{str(path)!r}: a data file must be .npz with arrays x and y")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"PK\x03\x04":
            raise InputError(f"{path} is not a .npz file ({'it is empty' if not magic else 'no zip header'}); "
                             "save the arrays with np.savez(path, x=..., y=...)")
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise InputError(f"{path} holds one array, not named arrays x and y (save it with np.savez)")
            names = set(f.files)
            xk = next((k for k in ("x", "images", "X") if k in names), None)
            yk = next((k for k in ("y", "labels", "Y") if k in names), None)
            if xk is None or yk is None:
                raise InputError(f"{path} has arrays {sorted(names)}; it needs x (or images) and y (or labels)")
            x, y = f[xk], f[yk]
            classes = [str(c) for c in f["classes"]] if "classes" in names else None
    except InputError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        pickled = "pickle" in str(e).lower()
        why = ("it holds Python objects (pickled data), which ttakit does not load: save plain numeric arrays"
               if pickled else f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}")
        raise InputError(f"cannot read {path} as a .npz file of arrays x and y ({why})") from None
    if x.ndim != 4 or x.dtype.kind not in "uif" or x.size == 0:
        raise InputError(f"{path}: {xk} must be a non-empty numeric array of images (N, H, W, C) or (N, C, H, W), "
                         f"got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(x) != len(y):
        raise InputError(f"{path}: {len(x)} inputs but labels of shape {y.shape}")
    names = model_classes or classes
    if model_classes and classes and list(classes) != model_classes:
        raise InputError(f"{path} names its classes {', '.join(classes)}; the model's are {', '.join(model_classes)}")
    if y.dtype.kind in "US":
        labels = [str(v) for v in y]
        if not names:
            raise InputError(f"{path}: labels are names ({y.dtype}) but no class names are given to turn them "
                             "into indices: add an array 'classes' to the file or pass classes=")
        unknown = sorted(set(labels) - set(names))
        if unknown:
            raise InputError(f"{path}: labels {', '.join(unknown[:5])} name no class; the classes are {', '.join(names)}")
        index = {c: i for i, c in enumerate(names)}
        y = np.array([index[v] for v in labels], dtype=np.int64)
    elif y.dtype.kind not in "iu":
        raise InputError(f"{path}: labels must be integer class indices, got dtype {y.dtype}")
    return Labelled(x, y, names, layout, str(path))


def subset(data: Labelled, which: str, holdout_fraction: float = 0.5, seed: int = 0) -> Labelled:
    """``data`` itself (``which="all"``), or the ``tune`` or ``holdout`` part
    of a split seeded by ``seed``; the holdout part has
    ``round(n * holdout_fraction)`` items. The two parts are disjoint and
    together are all of ``data``."""
    if which not in SUBSETS:
        raise InputError(f"subset must be one of {', '.join(SUBSETS)}, got {which!r}")
    if which == "all":
        return data
    if not 0 < holdout_fraction < 1:
        raise InputError(f"holdout_fraction={holdout_fraction} is not in (0, 1)")
    n = len(data.y)
    order = np.random.default_rng(seed).permutation(n)
    n_hold = int(round(n * holdout_fraction))
    idx = np.sort(order[n - n_hold:] if which == "holdout" else order[:n - n_hold])
    return Labelled(data.x[idx], data.y[idx], data.classes, data.layout,
                    f"{data.description}, {which} part ({len(idx)} of {n}, seed {seed})", data.failures)


__all__ = ["SUBSETS", "Labelled", "load_labelled", "subset"]
