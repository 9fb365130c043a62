"""Labelled data for ``ttakit tune`` and ``ttakit evaluate``.

``--data`` takes:

* ``cifar10`` or ``cifar10:test`` / ``cifar10:train``: the CIFAR-10 binary
  release (``--data-root``, ``$TTAKIT_DATA`` or the user cache);
* a ``.npz`` file with arrays ``x`` (or ``images``) and ``y`` (or ``labels``),
  images in NHWC unless ``--data-layout NCHW``;
* a folder with one sub-folder of images per class (sorted names are the
  classes).

``--subset tune|holdout`` takes one part of a seeded split of the data
(``--holdout-fraction``, ``--split-seed``), so ``tune`` and ``evaluate`` can
use disjoint halves of one labelled set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

SUBSETS = ("all", "tune", "holdout")


@dataclass
class Labelled:
    x: np.ndarray
    y: np.ndarray
    classes: list[str] | None
    layout: str
    description: str


def load(spec: str, *, root: str | None = None, layout: str = "NHWC") -> Labelled:
    if spec.split(":")[0].lower() == "cifar10":
        from ..datasets import cifar10

        split = spec.split(":", 1)[1] if ":" in spec else "test"
        ds = cifar10(root, split=split, download=True, progress=True)
        return Labelled(ds.images, ds.labels, list(ds.classes), "NHWC", f"CIFAR-10 {split}")
    path = Path(spec)
    if not path.exists():
        raise InputError(f"--data {spec!r}: no such file or folder (use cifar10[:split], a .npz file "
                         "with x and y, or a folder with one sub-folder per class)")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise InputError(f"--data {spec!r}: a data file must be .npz with arrays x and y")
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
    from .images import find_images, load_images

    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InputError(f"--data {spec!r}: a folder must hold one sub-folder of images per class")
    xs, ys = [], []
    for i, c in enumerate(classes):
        arr, good, failures = load_images(find_images([path / c]))
        for p, why in failures:
            print(f"ttakit: cannot read {p}: {why}")
        xs.append(arr)
        ys.append(np.full(len(arr), i, dtype=np.int64))
    return Labelled(np.concatenate(xs), np.concatenate(ys), classes, "NHWC", str(path))


def subset(data: Labelled, which: str, holdout_fraction: float = 0.5, seed: int = 0) -> Labelled:
    if which not in SUBSETS:
        raise InputError(f"--subset must be one of {', '.join(SUBSETS)}, got {which!r}")
    if which == "all":
        return data
    if not 0 < holdout_fraction < 1:
        raise InputError(f"--holdout-fraction must be in (0, 1), got {holdout_fraction}")
    n = len(data.y)
    order = np.random.default_rng(seed).permutation(n)
    n_hold = int(round(n * holdout_fraction))
    idx = np.sort(order[n - n_hold:] if which == "holdout" else order[:n - n_hold])
    return Labelled(data.x[idx], data.y[idx], data.classes, data.layout,
                    f"{data.description}, {which} part ({len(idx)} of {n}, seed {seed})")
