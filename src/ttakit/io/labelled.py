"""Labelled image data from a short spec, for tuning and evaluation.

``ttakit tune`` and ``ttakit evaluate`` take their data as one string, and a
batch job or a notebook wants the same: so the parsing lives here, not in
the command line. :func:`load_labelled` takes

* ``cifar10`` or ``cifar10:test`` / ``cifar10:train``: the CIFAR-10 binary
  release (``root``, ``$TTAKIT_DATA`` or the user cache);
* a ``.npz`` file with arrays ``x`` (or ``images``) and ``y`` (or
  ``labels``), images in the given ``layout`` (NHWC by default), optional
  ``classes``;
* a folder with one sub-folder of images per class (the sorted sub-folder
  names are the classes). Files that cannot be read are skipped and listed in
  :attr:`Labelled.failures`.

:func:`subset` takes one part of a seeded split, so tuning and evaluation
can use disjoint parts of one labelled set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
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
                  progress: bool = False) -> Labelled:
    """The labelled data ``spec`` names (see the module docstring).

    ``root`` is where CIFAR-10 is; ``download`` fetches it when missing;
    ``layout`` is the layout of a ``.npz`` file's images (the others are
    NHWC). Raises :class:`~ttakit.InputError` for a spec that names nothing
    usable, :class:`~ttakit.errors.DatasetError` when CIFAR-10 cannot be had.
    """
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
        return _load_npz(path, layout)
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InputError(f"{spec!r} has no sub-folders: a data folder must hold one sub-folder of images per class")
    xs, ys, failed = [], [], []
    for i, c in enumerate(classes):
        arr, _good, failures = load_images(find_images([path / c]))
        failed.extend(failures)
        xs.append(arr)
        ys.append(np.full(len(arr), i, dtype=np.int64))
    return Labelled(np.concatenate(xs), np.concatenate(ys), classes, "NHWC", str(path), failed)


def _load_npz(path: Path, layout: str) -> Labelled:
    if path.suffix.lower() != ".npz":
        raise InputError(f"{str(path)!r}: a data file must be .npz with arrays x and y")
    with np.load(path, allow_pickle=False) as f:
        names = set(f.files)
        xk = next((k for k in ("x", "images", "X") if k in names), None)
        yk = next((k for k in ("y", "labels", "Y") if k in names), None)
        if xk is None or yk is None:
            raise InputError(f"{path} has arrays {sorted(names)}; it needs x (or images) and y (or labels)")
        x, y = f[xk], f[yk]
        classes = [str(c) for c in f["classes"]] if "classes" in names else None
    if len(x) != len(y):
        raise InputError(f"{path}: {len(x)} inputs but {len(y)} labels")
    return Labelled(x, y, classes, layout, str(path))


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
