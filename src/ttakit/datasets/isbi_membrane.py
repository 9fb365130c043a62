"""ISBI 2012 EM membrane segmentation: 30 serial-section electron
microscopy slices (512x512 greyscale PNG) with binary masks
(``../shared/data/isbi2012-membrane``; see its README).

The published masks are 255 for cell interior and 0 for membrane;
:func:`load_isbi_membrane` returns them as class maps with **1 = membrane**
(the thin structure segmentation is scored on) and 0 = interior.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError

ISBI_SLICES = 30


def load_isbi_membrane(root, slices=range(ISBI_SLICES)) -> tuple[np.ndarray, np.ndarray]:
    """``images`` (N, 512, 512) uint8 and ``masks`` (N, 512, 512) int64
    (1 = membrane) of the given slice indices, in that order."""
    from PIL import Image

    root = Path(root)
    slices = list(slices)
    bad = [s for s in slices if not 0 <= int(s) < ISBI_SLICES]
    if bad:
        raise DatasetError(f"ISBI 2012 slices are 0-{ISBI_SLICES - 1}, got {bad[0]}")
    images, masks = [], []
    for s in slices:
        img, lab = root / "image" / f"{int(s)}.png", root / "label" / f"{int(s)}.png"
        if not (img.exists() and lab.exists()):
            raise DatasetError(f"no {img} or {lab}: pass the ISBI 2012 folder "
                               "(../shared/data/isbi2012-membrane, see its README)")
        x = np.asarray(Image.open(img).convert("L"))
        y = np.asarray(Image.open(lab).convert("L"))
        if x.shape != y.shape:
            raise DatasetError(f"slice {s}: image {x.shape} and mask {y.shape} differ in size")
        images.append(x)
        masks.append((y < 128).astype(np.int64))
    return np.stack(images), np.stack(masks)
