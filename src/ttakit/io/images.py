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

import contextlib
import errno
import os
import warnings
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


# -- limits ----------------------------------------------------------------------
#: default of ``max_pixels``: the most pixels (H x W) an image may have, checked
#: from its header before it is decoded (also the most a ``size=`` may ask for)
MAX_PIXELS = 40_000_000
#: bytes of decoded pixels per :class:`ImageStream` batch, at most (a batch
#: always holds at least one image)
CHUNK_BYTES = 64 * 2**20


def check_size(size: tuple[int, int] | None, max_pixels: int = MAX_PIXELS) -> None:
    """Raise :class:`~ttakit.InputError` when ``size = (H, W)`` has more
    than ``max_pixels`` pixels."""
    if size is not None and size[0] * size[1] > max_pixels:
        raise InputError(f"size=({size[0]}, {size[1]}) is {size[0] * size[1]:,} pixels, over the limit of "
                         f"max_pixels={max_pixels} ({max_pixels:,}); pass a smaller size= or raise max_pixels=")


class ImageTooLarge(InputError):
    """An image has more pixels than ``max_pixels`` (found from its header)."""


def printable(text: str) -> str:
    """``text`` (a path) with what UTF-8 cannot encode written as backslash
    escapes: a file name that is not valid UTF-8 comes back from the
    file system with lone surrogates, which no UTF-8 writer accepts."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


# -- finding files -------------------------------------------------------------
def _walk(folder: Path, recursive: bool, files: list[Path], failures: list[Failure], seen: frozenset) -> None:
    """The image files under ``folder`` into ``files``; what cannot be read
    (the folder itself, dangling links, link loops) into ``failures``."""
    try:
        st = folder.stat()
        if (st.st_dev, st.st_ino) in seen:
            failures.append((str(folder), "symbolic link loop (a folder that contains itself)"))
            return
        seen = seen | {(st.st_dev, st.st_ino)}
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        failures.append((str(folder), f"cannot list the folder: {failure_reason(e)}"))
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        path = Path(e.path)
        try:
            is_dir, is_file = e.is_dir(), e.is_file()
            if not (is_dir or is_file) and e.is_symlink():
                os.stat(path)  # raises for a dangling link or a loop: reported below
        except OSError as err:
            if path.suffix.lower() in IMAGE_EXTENSIONS or recursive:
                failures.append((str(path), failure_reason(err)))
            continue
        if is_dir:
            if recursive:
                _walk(path, True, files, failures, seen)
        elif is_file and path.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(path)


def find_images(inputs: Iterable[str | Path], recursive: bool = False,
                failures: list[Failure] | None = None) -> list[Path]:
    """Expand ``inputs`` into image files, in order.

    A file is kept whatever its extension (it is reported later if it cannot
    be read). A folder contributes its files with an image extension, sorted
    by path, skipping hidden files; sub-folders only when ``recursive``. A
    path that does not exist is kept too, and fails when read. What cannot
    be listed (an unreadable sub-folder, a dangling link or a link loop with
    an image extension) is appended to ``failures`` as ``(path, reason)``
    when a list is given. Raises :class:`~ttakit.InputError` when nothing is
    found and nothing failed.
    """
    found: list[Path] = []
    empty_dirs: list[Path] = []
    failed: list[Failure] = [] if failures is None else failures
    before = len(failed)
    for p in (Path(p) for p in inputs):
        try:
            is_dir = p.is_dir()
        except OSError:  # a name too long, a folder we may not enter: fails (by name) when read
            is_dir = False
        if is_dir:
            files: list[Path] = []
            _walk(p, recursive, files, failed, frozenset())
            files.sort()
            if not files:
                empty_dirs.append(p)
            found.extend(files)
        else:
            found.append(p)
    if not found and len(failed) == before:
        where = ", ".join(str(d) for d in empty_dirs) or "the arguments"
        hint = "" if recursive else "; pass recursive=True to search sub-folders"
        raise InputError(f"no image files found in {where} (looked for "
                         f"{', '.join(e[1:] for e in IMAGE_EXTENSIONS)}{hint})")
    return found


# -- reading one image ---------------------------------------------------------
def failure_reason(e: BaseException) -> str:
    """Why an image could not be read, in one line, from the exception that
    reading it raised (Pillow's, the system's or ttakit's)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(e, InputError):
        return str(e)
    if isinstance(e, Image.DecompressionBombError):
        return f"too many pixels to decode safely ({e})"
    if isinstance(e, UnidentifiedImageError):
        return "not an image Pillow can read (unknown format or corrupt header)"
    if isinstance(e, FileNotFoundError):
        return "no such file (or a dangling symbolic link)"
    if isinstance(e, IsADirectoryError):
        return "is a directory"
    if isinstance(e, OSError) and e.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if isinstance(e, MemoryError):
        return "not enough memory to decode it"
    text = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


_reason = failure_reason  # its former name, for code in this package written against it


@contextlib.contextmanager
def _open(path: str | Path, max_pixels: int):
    """The Pillow image at ``path``, its header checked against ``max_pixels``
    (:class:`ImageTooLarge`) before anything is decoded; Pillow's own
    warnings are silenced (the caller reports problems itself)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageTooLarge(f"{w}x{h} is {w * h / 1e6:.1f} megapixels, over the limit of "
                                    f"{max_pixels / 1e6:g} megapixels (max_pixels={max_pixels}; pass a larger "
                                    "max_pixels= to read it)")
            if w < 1 or h < 1:
                raise InputError(f"the image is {w}x{h} pixels")
            yield im


def image_size(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """``(H, W)`` from the file's header, without decoding the pixels;
    raises :class:`ImageTooLarge` above ``max_pixels``."""
    with _open(path, max_pixels) as im:
        w, h = im.size
    return h, w


def _to_uint8(im) -> np.ndarray:
    """A 16-bit, 32-bit integer or float image as uint8 (H, W): integers
    scaled from 0-65535, floats from [0, 1]; other ranges refused."""
    arr = np.asarray(im)
    if im.mode == "F":
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0 and hi <= 1):
            raise InputError(f"a floating-point image (mode F) must hold values in [0, 1]; this one has "
                             f"{lo:g} to {hi:g}")
        return np.round(arr.astype(np.float64) * 255).astype(np.uint8)
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise InputError(f"a 32-bit integer image (mode {im.mode}) is read as 16-bit (0 to 65535); this one "
                         f"has {arr.min()} to {arr.max()}")
    return ((arr * 255 + 32767) // 65535).astype(np.uint8)


#: Pillow modes with an alpha channel (dropped when read)
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def read_image(path: str | Path, mode: str = "RGB", size: tuple[int, int] | None = None, *,
               max_pixels: int = MAX_PIXELS, notes: list[tuple[str, int]] | None = None) -> np.ndarray:
    """One image as a uint8 ``(H, W, C)`` array in ``mode`` (``RGB`` or
    ``L``), resized to ``size = (H, W)`` with bilinear filtering when it
    differs.

    16-bit images are scaled from 0-65535, floating-point ones (mode F) from
    [0, 1] (other values are refused); an image over ``max_pixels`` is
    refused from its header, before decoding (:class:`ImageTooLarge`).
    Conversions that lose something are appended to ``notes`` as ``(kind,
    frames)``: ``("alpha", 1)`` (the alpha channel is dropped), ``("cmyk",
    1)`` (converted), ``("animated", n)`` (the first of ``n`` frames is
    used). Raises what Pillow raises for unreadable files.
    """
    from PIL import Image

    if mode not in MODES:
        raise InputError(f"image mode must be one of {', '.join(MODES)}, got {mode!r}")
    with _open(path, max_pixels) as im:
        frames = int(getattr(im, "n_frames", 1) or 1) if getattr(im, "is_animated", False) else 1
        src = im.mode
        found = []
        if src in ALPHA_MODES or (src == "P" and "transparency" in im.info):
            found.append(("alpha", 1))
        elif src == "CMYK":
            found.append(("cmyk", 1))
        if frames > 1:
            im.seek(0)
            found.append(("animated", frames))
        if src == "F" or src == "I" or src.startswith("I;16"):
            im = Image.fromarray(_to_uint8(im), "L").convert(mode)
        else:
            im = im.convert(mode)  # decodes the pixels: truncated files fail here
        if size is not None and (im.height, im.width) != tuple(size):
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    if notes is not None:
        notes.extend(found)
    return arr[:, :, None] if arr.ndim == 2 else arr


def describe_notes(notes: dict[str, list[tuple[str, int]]], mode: str = "RGB") -> str:
    """One line saying what was converted, from :attr:`ImageStream.notes`
    (kind -> ``(path, frames)``): ``3 images had an alpha channel
    (dropped), 1 CMYK (converted to RGB), 2 animated (first frame of up to
    12 used)``; '' when nothing was."""
    parts = []
    if notes.get("alpha"):
        n = len(notes["alpha"])
        parts.append(f"{n} image{'s' if n > 1 else ''} had an alpha channel (dropped)")
    if notes.get("cmyk"):
        parts.append(f"{len(notes['cmyk'])} CMYK (converted to {mode})")
    if notes.get("animated"):
        many = len(notes["animated"])
        most = max(f for _, f in notes["animated"])
        parts.append(f"{many} animated (first frame of {'up to ' if many > 1 else ''}{most} used)")
    return ", ".join(parts)


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
              expected_size: tuple[int, int] | None = None,
              max_pixels: int = MAX_PIXELS) -> tuple[tuple[int, int] | None, list[Failure]]:
    """The size every image is read at, and the files whose header cannot be read.

    ``size`` wins; else the model's ``expected_size``; else the
    images' own size when they all agree. Returns ``(None, failures)`` when
    no header could be read. Raises :class:`~ttakit.InputError` naming the
    files when the sizes differ and neither is given, or when ``size``
    has more than ``max_pixels`` pixels; an image with more is a failure.
    """
    check_size(size, max_pixels)
    sizes: dict[tuple[int, int], list[str]] = {}
    failures: list[Failure] = []
    for p in paths:
        try:
            hw = image_size(p, max_pixels)
        except Exception as e:  # Pillow raises many types for bad files
            failures.append((str(p), failure_reason(e)))
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
    An image over ``max_pixels`` fails from its header, before decoding; a
    batch holds at most :data:`CHUNK_BYTES` of pixels. ``notes`` maps what
    was converted with a loss (``alpha``, ``cmyk``, ``animated``) to the
    ``(path, frames)`` it was done to (:func:`describe_notes` says it in a
    line). Iterating again reads the files again.
    """

    def __init__(self, paths: Sequence[str | Path], mode: str = "RGB", size: tuple[int, int] | None = None,
                 chunk: int | None = None, failures: Iterable[Failure] = (), on_read=None,
                 max_pixels: int = MAX_PIXELS):
        if mode not in MODES:
            raise InputError(f"image mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.paths = [str(p) for p in paths]
        self.mode = mode
        self.size = tuple(size) if size is not None else None
        check_size(self.size, max_pixels)
        self.max_pixels = int(max_pixels)
        self.chunk = max(1, int(chunk if chunk is not None else CHUNK))
        self.notes: dict[str, list[tuple[str, int]]] = {}
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
        self.good, self.failures, self.notes = [], list(self._known), {}
        size = self.size
        batch: list[np.ndarray] = []
        chunk = self.chunk
        for p in self._todo:
            if self.on_read is not None:
                self.on_read(p)
            notes: list[tuple[str, int]] = []
            try:
                arr = read_image(p, self.mode, size, max_pixels=self.max_pixels, notes=notes)
            except Exception as e:  # Pillow raises many types for bad files
                self.failures.append((p, failure_reason(e)))
                continue
            if size is None or not batch:
                chunk = min(self.chunk, max(1, CHUNK_BYTES // max(1, arr.nbytes)))
            if size is None:
                size = arr.shape[:2]
            elif arr.shape[:2] != tuple(size):  # a header that lied about the size
                self.failures.append((p, f"decoded size {arr.shape[0]}x{arr.shape[1]} differs from "
                                         f"{size[0]}x{size[1]}; pass size= to resize"))
                continue
            batch.append(arr)
            self.good.append(p)
            for kind, frames in notes:
                self.notes.setdefault(kind, []).append((p, frames))
            if len(batch) >= chunk:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)
        order = {p: i for i, p in reversed(list(enumerate(self.paths)))}
        self.failures.sort(key=lambda f: order.get(f[0], len(order)))


def load_images(paths: Sequence[str | Path], mode: str = "RGB", size: tuple[int, int] | None = None,
                expected_size: tuple[int, int] | None = None,
                max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, list[str], list[Failure]]:
    """Read ``paths`` into one uint8 array ``(N, H, W, C)``.

    Returns ``(array, good_paths, failures)``: the rows of ``array`` are the
    images of ``good_paths``; ``failures`` lists ``(path, reason)`` for the
    files that could not be read. Raises :class:`~ttakit.InputError` when the
    sizes differ and neither ``size`` nor ``expected_size`` is given.
    """
    target, failures = plan_size(paths, size, expected_size, max_pixels)
    stream = ImageStream(paths, mode, target, failures=failures, max_pixels=max_pixels)
    batches = list(stream)
    channels = 1 if mode == "L" else 3
    if batches:
        arr = np.concatenate(batches) if len(batches) > 1 else batches[0]
    else:
        h, w = target or (0, 0)
        arr = np.zeros((0, h, w, channels), dtype=np.uint8)
    return arr, stream.good, stream.failures


__all__ = ["IMAGE_EXTENSIONS", "MODES", "CHUNK", "CHUNK_BYTES", "MAX_PIXELS", "ALPHA_MODES", "ImageTooLarge",
           "check_size", "printable", "find_images", "failure_reason", "read_image", "describe_notes", "image_size",
           "parse_size", "plan_size", "ImageStream", "load_images"]
