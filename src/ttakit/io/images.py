"""Find image files and read them into uint8 arrays.

This is the part of ``ttakit predict`` that a server or a batch job needs
too, so it lives in the library, free of argparse: errors are ttakit errors
naming the Python parameters (the command line translates them to its flags).

Every image becomes an ``(H, W, C)`` uint8 array (``C`` = 3 for ``RGB``, 1
for ``L``), so a batch is ``(N, H, W, C)``: pass ``data_layout="NHWC"`` to
the :class:`~ttakit.Classifier`. Folders given as inputs expand to the image
files they hold (by extension). A file that cannot be read is recorded as a
failure ``(path, reason)`` and skipped; the other images are still read.

Two ways to read:

* :func:`load_images` reads everything into one array (simple, for small sets);
* :class:`ImageStream` yields batches of at most ``chunk`` images, so memory
  is bounded by the chunk, not the number of files. The Classifier accepts it
  directly (it takes an iterable of batches); ``stream.good`` and
  ``stream.failures`` fill up as it is consumed.

All images of one batch must have the same size. :func:`plan_size` decides
it before anything is decoded: the size asked for, else the model's expected
size, else the images' common size (an :class:`~ttakit.InputError` naming the
files when they differ).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError

#: file extensions (lower case, with the dot) taken from folders
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
#: Pillow modes images are read in
MODES = ("RGB", "L")
#: images decoded per batch by :class:`ImageStream`
CHUNK = 256

Failure = tuple[str, str]  # (path, reason)


# -- finding files -------------------------------------------------------------
def find_images(inputs: Iterable[str | Path], recursive: bool = False) -> list[Path]:
    """Expand ``inputs`` into image files, in order.

    A file is kept whatever its extension (it is reported later if it cannot
    be read). A folder contributes its files with an image extension, sorted
    by name, skipping hidden files; sub-folders only when ``recursive``. A
    path that does not exist is kept too, and fails when read. Raises
    :class:`~ttakit.InputError` when nothing is found.
    """
    found: list[Path] = []
    empty_dirs: list[Path] = []
    inputs = [Path(p) for p in inputs]
    for p in inputs:
        if p.is_dir():
            pattern = p.rglob("*") if recursive else p.iterdir()
            files = sorted(
                f for f in pattern
                if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not files:
                empty_dirs.append(p)
            found.extend(files)
        else:
            found.append(p)
    if not found:
        where = ", ".join(str(d) for d in empty_dirs) or "the arguments"
        hint = "" if recursive else "; pass recursive=True to search sub-folders"
        raise InputError(f"no image files found in {where} (looked for "
                         f"{', '.join(e[1:] for e in IMAGE_EXTENSIONS)}{hint})")
    return found


# -- reading one image ---------------------------------------------------------
def _reason(e: Exception) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):
        return "not an image Pillow can read (unknown format or corrupt header)"
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, IsADirectoryError):
        return "is a directory"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` from the file's header, without decoding the pixels."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
    return h, w


def read_image(path: str | Path, mode: str = "RGB", size: tuple[int, int] | None = None) -> np.ndarray:
    """One image as a uint8 ``(H, W, C)`` array in ``mode`` (``RGB`` or
    ``L``), resized to ``size = (H, W)`` with bilinear filtering when it
    differs. Raises what Pillow raises for unreadable files."""
    from PIL import Image

    if mode not in MODES:
        raise InputError(f"image mode must be one of {', '.join(MODES)}, got {mode!r}")
    with Image.open(path) as im:
        im = im.convert(mode)  # decodes the pixels: truncated files fail here
        if size is not None and (im.height, im.width) != tuple(size):
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def parse_size(values: Sequence[str | int] | str | None) -> tuple[int, int] | None:
    """``H W``, ``HxW`` or ``N`` (square) as ``(H, W)``."""
    if values is None:
        return None
    if isinstance(values, (str, int)):
        values = [values]
    parts: list[str] = []
    for v in values:
        parts.extend(str(v).lower().replace("x", " ").replace(",", " ").split())
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) == 1:
        nums = nums * 2
    if len(nums) != 2 or min(nums) < 1:
        raise InputError(f"size must be H W, HxW or N with positive integers, got {' '.join(map(str, values))!r}")
    return nums[0], nums[1]


# -- deciding the size -------------------------------------------------------------
def plan_size(paths: Sequence[str | Path], size: tuple[int, int] | None = None,
              expected_size: tuple[int, int] | None = None) -> tuple[tuple[int, int] | None, list[Failure]]:
    """The size every image is read at, and the files whose header cannot be read.

    ``size`` wins; else the model's ``expected_size``; else the
    images' own size when they all agree. Returns ``(None, failures)`` when
    no header could be read. Raises :class:`~ttakit.InputError` naming the
    files when the sizes differ and neither is given.
    """
    sizes: dict[tuple[int, int], list[str]] = {}
    failures: list[Failure] = []
    for p in paths:
        try:
            hw = image_size(p)
        except Exception as e:  # Pillow raises many types for bad files
            failures.append((str(p), _reason(e)))
            continue
        sizes.setdefault(hw, []).append(str(p))
    if size is not None:
        return tuple(size), failures
    if expected_size is not None:
        return tuple(expected_size), failures
    if len(sizes) > 1:
        groups = sorted(sizes.items(), key=lambda kv: -len(kv[1]))
        lines = []
        for (h, w), files in groups[:5]:
            more = f" and {len(files) - 3} more" if len(files) > 3 else ""
            lines.append(f"  {h}x{w}: {', '.join(files[:3])}{more}")
        if len(groups) > 5:
            lines.append(f"  ... {len(groups) - 5} more sizes")
        raise InputError("the images have different sizes (HxW) and the model does not say which it expects:\n"
                         + "\n".join(lines)
                         + f"\npass size=(H, W) to resize them all (e.g. size=({groups[0][0][0]}, {groups[0][0][1]}))")
    return (next(iter(sizes)) if sizes else None), failures


# -- reading many images ---------------------------------------------------------
class ImageStream:
    """Iterate over batches ``(n, H, W, C)`` uint8 of the readable images,
    ``n <= chunk`` (default :data:`CHUNK`).

    ``good`` lists the paths read, in the order their rows come out;
    ``failures`` lists ``(path, reason)`` for the others. Both are complete
    once the stream is exhausted. Every image is resized to ``size`` when
    given (else all must already share one size: see :func:`plan_size`).
    Iterating again reads the files again.
    """

    def __init__(self, paths: Sequence[str | Path], mode: str = "RGB", size: tuple[int, int] | None = None,
                 chunk: int | None = None, failures: Iterable[Failure] = (), on_read=None):
        if mode not in MODES:
            raise InputError(f"image mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.paths = [str(p) for p in paths]
        self.mode = mode
        self.size = tuple(size) if size is not None else None
        self.chunk = max(1, int(chunk if chunk is not None else CHUNK))
        self._known = list(failures)  # failures found before streaming (e.g. by plan_size)
        skip = {p for p, _ in self._known}
        self._todo = [p for p in self.paths if p not in skip]
        self.on_read = on_read  # called with each path once it is read or has failed (progress bars)
        self.good: list[str] = []
        self.failures: list[Failure] = list(self._known)

    def __len__(self) -> int:
        """Upper bound of the images that come out (files not known to fail)."""
        return len(self._todo)

    def __iter__(self) -> Iterator[np.ndarray]:
        self.good, self.failures = [], list(self._known)
        size = self.size
        batch: list[np.ndarray] = []
        for p in self._todo:
            if self.on_read is not None:
                self.on_read(p)
            try:
                arr = read_image(p, self.mode, size)
            except Exception as e:  # Pillow raises many types for bad files
                self.failures.append((p, _reason(e)))
                continue
            if size is None:
                size = arr.shape[:2]
            elif arr.shape[:2] != tuple(size):  # a header that lied about the size
                self.failures.append((p, f"decoded size {arr.shape[0]}x{arr.shape[1]} differs from "
                                         f"{size[0]}x{size[1]}; pass size= to resize"))
                continue
            batch.append(arr)
            self.good.append(p)
            if len(batch) == self.chunk:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)
        order = {p: i for i, p in reversed(list(enumerate(self.paths)))}
        self.failures.sort(key=lambda f: order.get(f[0], len(order)))


def load_images(paths: Sequence[str | Path], mode: str = "RGB", size: tuple[int, int] | None = None,
                expected_size: tuple[int, int] | None = None) -> tuple[np.ndarray, list[str], list[Failure]]:
    """Read ``paths`` into one uint8 array ``(N, H, W, C)``.

    Returns ``(array, good_paths, failures)``: the rows of ``array`` are the
    images of ``good_paths``; ``failures`` lists ``(path, reason)`` for the
    files that could not be read. Raises :class:`~ttakit.InputError` when the
    sizes differ and neither ``size`` nor ``expected_size`` is given.
    """
    target, failures = plan_size(paths, size, expected_size)
    stream = ImageStream(paths, mode, target, failures=failures)
    batches = list(stream)
    channels = 1 if mode == "L" else 3
    if batches:
        arr = np.concatenate(batches) if len(batches) > 1 else batches[0]
    else:
        h, w = target or (0, 0)
        arr = np.zeros((0, h, w, channels), dtype=np.uint8)
    return arr, stream.good, stream.failures


__all__ = ["IMAGE_EXTENSIONS", "MODES", "CHUNK", "find_images", "read_image", "image_size", "parse_size",
           "plan_size", "ImageStream", "load_images"]
