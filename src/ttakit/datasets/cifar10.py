"""Loader for the CIFAR-10 *binary* release (``cifar-10-binary.tar.gz``).

The binary release is a folder ``cifar-10-batches-bin/`` holding
``data_batch_1.bin`` ... ``data_batch_5.bin`` (training set, 10,000 records
each), ``test_batch.bin`` (10,000 records) and ``batches.meta.txt`` (the ten
class names, one a line, in label order). A record is 3,073 bytes: one label
byte (0-9) followed by 3,072 pixel bytes, the 1,024 red values, then green,
then blue, each plane row-major. No pickle is involved anywhere.

Where the data is looked for, in order:

1. ``path=`` when given (and nowhere else): the ``cifar-10-batches-bin``
   folder itself, a folder that contains it, or the tarball (``.tar.gz`` /
   ``.tar``), which is read in place without extracting it.
2. ``$TTAKIT_DATA``: any of the forms above, or a folder containing the
   tarball.
3. The user cache, ``$XDG_CACHE_HOME/ttakit`` (default ``~/.cache/ttakit``).

With ``download=True`` and nothing found, the official tarball is downloaded
into the cache, its MD5 checked, and the binary files extracted there.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DatasetError, InputError

__all__ = [
    "CIFAR10",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "cache_dir",
    "cifar10",
    "download_cifar10",
]

# Module-level so tests (and mirrors) can point them elsewhere.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
DOWNLOAD_TIMEOUT_S = 30.0

FOLDER_NAME = "cifar-10-batches-bin"
TARBALL_NAME = "cifar-10-binary.tar.gz"
META_FILE = "batches.meta.txt"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
ALL_FILES = TRAIN_FILES + TEST_FILES + (META_FILE,)

IMAGE_SHAPE = (32, 32, 3)
PIXEL_BYTES = 32 * 32 * 3
RECORD_BYTES = 1 + PIXEL_BYTES  # 3073
RECORDS_PER_FILE = 10_000
FILE_BYTES = RECORD_BYTES * RECORDS_PER_FILE  # 30,730,000
NUM_CLASSES = 10
#: the class names in label order (as ``batches.meta.txt`` lists them)
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

SPLITS = {
    "train": TRAIN_FILES,
    "test": TEST_FILES,
    "all": TRAIN_FILES + TEST_FILES,
}

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True, eq=False)
class CIFAR10:
    """CIFAR-10 images and labels, in memory.

    Attributes:
        images: ``uint8`` array of shape ``(N, 32, 32, 3)`` (NHWC, RGB).
        labels: ``int64`` array of shape ``(N,)``, values in ``0..9``.
        classes: the ten class names, in label order (from ``batches.meta.txt``).
        split: ``"train"``, ``"test"`` or ``"all"`` (train then test).
        source: where the data was read from (a folder or a tarball).
    """

    images: np.ndarray
    labels: np.ndarray
    classes: Tuple[str, ...]
    split: str
    source: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (
            f"CIFAR10(split={self.split!r}, n={len(self)}, "
            f"images={self.images.dtype}{tuple(self.images.shape)}, "
            f"source={self.source!r})"
        )


# ----------------------------------------------------------------------------
# Locating the data
# ----------------------------------------------------------------------------


def cache_dir() -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/ttakit`` or ``~/.cache/ttakit``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "ttakit"


def _is_batches_folder(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in ALL_FILES)


def _resolve(candidate: Path, looked: List[str]) -> Optional[Tuple[str, Path]]:
    """Return ("dir", folder) or ("tar", tarball) if ``candidate`` holds CIFAR-10.

    Every place examined is appended to ``looked`` (for error messages).
    """
    candidate = candidate.expanduser()
    if candidate.is_file():
        if _is_tarball(candidate):
            looked.append(str(candidate))
            return "tar", candidate
        looked.append(f"{candidate} (a file, but not a tar archive)")
        return None
    looked.append(f"{candidate}/")
    if _is_batches_folder(candidate):
        return "dir", candidate
    for sub, kind in ((candidate / FOLDER_NAME, "dir"), (candidate / TARBALL_NAME, "tar")):
        looked.append(str(sub) + ("/" if kind == "dir" else ""))
        if kind == "dir" and _is_batches_folder(sub):
            return kind, sub
        if kind == "tar" and sub.is_file():
            return kind, sub
    return None


def _is_tarball(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _how_to_fix() -> str:
    return (
        "To fix: pass path= (the cifar-10-batches-bin folder, its parent, or "
        f"{TARBALL_NAME}), set TTAKIT_DATA to one of those, or call with "
        f"download=True to fetch {CIFAR10_URL} (into {cache_dir()}, or into "
        "the folder path= names)."
    )


def _locate(path: Optional[PathLike]) -> Tuple[Optional[Tuple[str, Path]], List[str]]:
    looked: List[str] = []
    if path is not None:
        return _resolve(Path(os.fspath(path)), looked), looked
    sources = []
    env = os.environ.get("TTAKIT_DATA")
    if env:
        sources.append(("$TTAKIT_DATA", Path(env)))
    else:
        looked.append("$TTAKIT_DATA (not set)")
    sources.append(("cache", cache_dir()))
    for origin, base in sources:
        tried: List[str] = []
        found = _resolve(base, tried)
        looked.append(f"[{origin}] " + ", ".join(tried))
        if found:
            return found, looked
    return None, looked


# ----------------------------------------------------------------------------
# Reading and validating
# ----------------------------------------------------------------------------


def _check_size(name: str, size: int) -> None:
    if size == FILE_BYTES:
        return
    if size % RECORD_BYTES:
        what = f"not a whole number of {RECORD_BYTES:,}-byte records"
    else:
        what = f"{size // RECORD_BYTES:,} records instead of {RECORDS_PER_FILE:,}"
    raise DatasetError(
        f"{name} is {size:,} bytes, expected {FILE_BYTES:,} "
        f"({RECORDS_PER_FILE:,} records of {RECORD_BYTES:,} bytes): {what}. "
        "The file is truncated or corrupt; re-extract it from "
        f"{TARBALL_NAME} or re-download (delete it and call with download=True)."
    )


def _decode(name: str, raw: np.ndarray, images_out: np.ndarray, labels_out: np.ndarray) -> None:
    """Decode one file's bytes into preallocated NHWC / label arrays."""
    _check_size(name, raw.size)
    records = raw.reshape(RECORDS_PER_FILE, RECORD_BYTES)
    labels = records[:, 0]
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DatasetError(
            f"{name} is corrupt: {bad.size:,} record(s) have a label byte outside "
            f"0..9 (first at record {int(bad[0]):,}, byte offset "
            f"{int(bad[0]) * RECORD_BYTES:,}, value {int(labels[bad[0]])}). "
            "Re-extract the file or re-download the dataset."
        )
    labels_out[:] = labels
    pixels = records[:, 1:].reshape(RECORDS_PER_FILE, 3, 32, 32)
    np.copyto(images_out, pixels.transpose(0, 2, 3, 1))


def _parse_meta(name: str, text: bytes) -> Tuple[str, ...]:
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{name} is not valid UTF-8 text: {exc}") from None
    classes = tuple(line.strip() for line in decoded.splitlines() if line.strip())
    if len(classes) != NUM_CLASSES:
        raise DatasetError(
            f"{name} should list {NUM_CLASSES} class names (one a line) but has "
            f"{len(classes)}. Re-extract it from {TARBALL_NAME} or re-download."
        )
    return classes


def _read_folder(folder: Path, files: Sequence[str], images: np.ndarray, labels: np.ndarray) -> Tuple[str, ...]:
    needed = list(files) + [META_FILE]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise DatasetError(
            f"CIFAR-10 folder {folder} is incomplete: missing "
            + ", ".join(missing)
            + f". Re-extract {TARBALL_NAME} there, or re-download."
        )
    classes = _parse_meta(str(folder / META_FILE), (folder / META_FILE).read_bytes())
    for i, name in enumerate(files):
        file = folder / name
        _check_size(str(file), file.stat().st_size)
        try:
            raw = np.fromfile(file, dtype=np.uint8)
        except OSError as exc:
            raise DatasetError(f"could not read {file}: {exc}") from None
        sl = slice(i * RECORDS_PER_FILE, (i + 1) * RECORDS_PER_FILE)
        _decode(str(file), raw, images[sl], labels[sl])
    return classes


def _iter_tar(tarball: Path, wanted: Iterable[str]) -> Iterator[Tuple[str, tarfile.TarInfo, tarfile.TarFile]]:
    """Yield (basename, member, tar) for the wanted regular files, in one pass.

    The archive is read as a stream, so a ``.tar.gz`` is decompressed once.
    If a name occurs twice, a member under ``cifar-10-batches-bin/`` wins over
    one elsewhere (it is yielded after, and callers let later ones overwrite).
    """
    wanted = set(wanted)
    in_folder_seen = set()
    with tarfile.open(tarball, "r|*") as tf:
        for member in tf:
            if not member.isfile():
                continue
            parts = member.name.replace("\\", "/").split("/")
            base = parts[-1]
            if base not in wanted:
                continue
            in_folder = len(parts) >= 2 and parts[-2] == FOLDER_NAME
            if base in in_folder_seen and not in_folder:
                continue
            if in_folder:
                in_folder_seen.add(base)
            yield base, member, tf


def _tar_error(tarball: Path, exc: BaseException) -> DatasetError:
    return DatasetError(
        f"could not read tarball {tarball}: {exc}. It is truncated or corrupt; "
        "re-download it (delete it and call with download=True)."
    )


def _missing_in_tar(tarball: Path, missing: Sequence[str]) -> DatasetError:
    return DatasetError(
        f"tarball {tarball} does not contain "
        + ", ".join(f"{FOLDER_NAME}/{m}" for m in missing)
        + ". It is not the CIFAR-10 binary release or it is incomplete; "
        "re-download it (delete it and call with download=True)."
    )


def _read_tar(tarball: Path, files: Sequence[str], images: np.ndarray, labels: np.ndarray) -> Tuple[str, ...]:
    needed = list(files) + [META_FILE]
    index = {name: i for i, name in enumerate(files)}
    classes: Tuple[str, ...] = ()
    done = set()
    try:
        for base, member, tf in _iter_tar(tarball, needed):
            label = f"{tarball}:{member.name}"
            if base != META_FILE:
                _check_size(label, member.size)
            handle = tf.extractfile(member)
            assert handle is not None
            data = handle.read()
            if base == META_FILE:
                classes = _parse_meta(label, data)
            else:
                sl = slice(index[base] * RECORDS_PER_FILE, (index[base] + 1) * RECORDS_PER_FILE)
                _decode(label, np.frombuffer(data, dtype=np.uint8), images[sl], labels[sl])
            done.add(base)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _tar_error(tarball, exc) from None
    missing = [name for name in needed if name not in done]
    if missing:
        raise _missing_in_tar(tarball, missing)
    return classes


def _load(kind: str, where: Path, split: str) -> CIFAR10:
    files = SPLITS[split]
    n = len(files) * RECORDS_PER_FILE
    images = np.empty((n,) + IMAGE_SHAPE, dtype=np.uint8)
    labels = np.empty((n,), dtype=np.int64)
    reader = _read_folder if kind == "dir" else _read_tar
    classes = reader(where, files, images, labels)
    return CIFAR10(images=images, labels=labels, classes=classes, split=split, source=str(where))


# ----------------------------------------------------------------------------
# Downloading
# ----------------------------------------------------------------------------


def download_cifar10(
    root: Optional[PathLike] = None,
    *,
    progress: bool = True,
    url: Optional[str] = None,
    md5: Optional[str] = None,
) -> Path:
    """Download the CIFAR-10 binary tarball, verify its MD5 and extract it.

    The tarball is fetched into ``root`` (default: :func:`cache_dir`), checked
    against ``md5`` (default :data:`CIFAR10_MD5`), and its binary files are
    extracted to ``root/cifar-10-batches-bin``; the tarball is then removed.
    Returns the extracted folder. Raises :class:`DatasetError` on any failure,
    leaving no partial files behind.
    """
    url = CIFAR10_URL if url is None else url
    md5 = CIFAR10_MD5 if md5 is None else md5
    root = cache_dir() if root is None else Path(os.fspath(root)).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create the download folder {root}: {exc}") from None

    fd, tmp_name = tempfile.mkstemp(prefix=TARBALL_NAME + ".", suffix=".part", dir=root)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                total = resp.headers.get("Content-Length")
                bar = _progress_bar(int(total) if total and total.isdigit() else None, progress, url)
                try:
                    while True:
                        chunk = resp.read(1 << 20)
                        if not chunk:
                            break
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
                finally:
                    bar.close()
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DatasetError(f"downloading {url} failed: {reason}") from None
        got = digest.hexdigest()
        if got != md5:
            raise DatasetError(
                f"downloaded file from {url} has MD5 {got}, expected {md5}: the "
                "download is corrupt or not the CIFAR-10 binary release. It was "
                "deleted; try again, or fetch it by hand and pass path=."
            )
        return _extract(tmp, root)
    finally:
        tmp.unlink(missing_ok=True)


def _progress_bar(total: Optional[int], enabled: bool, url: str):
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=f"Downloading {url.rsplit('/', 1)[-1]}")
        except ImportError:  # pragma: no cover - tqdm is a dependency
            pass
    return _NullBar()


class _NullBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _extract(tarball: Path, root: Path) -> Path:
    """Extract the known binary files (only those, never arbitrary paths)."""
    target = root / FOLDER_NAME
    staging = Path(tempfile.mkdtemp(prefix=FOLDER_NAME + ".", suffix=".part", dir=root))
    try:
        done = set()
        try:
            for base, member, tf in _iter_tar(tarball, ALL_FILES):
                if base != META_FILE:
                    _check_size(f"{tarball.name}:{member.name}", member.size)
                handle = tf.extractfile(member)
                assert handle is not None
                with open(staging / base, "wb") as out:
                    shutil.copyfileobj(handle, out, 1 << 20)
                done.add(base)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise _tar_error(tarball, exc) from None
        missing = [name for name in ALL_FILES if name not in done]
        if missing:
            raise _missing_in_tar(tarball, missing)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
        return target
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------


def cifar10(
    path: Optional[PathLike] = None,
    split: str = "test",
    download: bool = False,
    progress: bool = True,
) -> CIFAR10:
    """Load CIFAR-10 from the official binary release.

    Args:
        path: the ``cifar-10-batches-bin`` folder, a folder containing it (or
            the tarball), or ``cifar-10-binary.tar.gz`` itself. When omitted,
            ``$TTAKIT_DATA`` and then the user cache (:func:`cache_dir`) are tried.
        split: ``"test"`` (10,000 images), ``"train"`` (50,000) or ``"all"``
            (60,000: train then test).
        download: if nothing is found, download the official tarball
            (MD5-checked) and extract it into the user cache, or into the
            folder ``path`` when one is given, then load it.
        progress: show a progress bar while downloading.

    Returns:
        a :class:`CIFAR10` with ``images`` uint8 ``(N, 32, 32, 3)`` and
        ``labels`` int64 ``(N,)``.

    Raises:
        DatasetError: data not found (the message names every place looked),
            download failed, or a file is truncated or corrupt.
    """
    if split not in SPLITS:
        raise InputError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    found, looked = _locate(path)
    if found is None and download:
        root = _download_root(path)
        try:
            folder = download_cifar10(root, progress=progress)
        except DatasetError as exc:
            raise DatasetError(
                "CIFAR-10 not found locally and the download failed.\n"
                f"  Looked in: {'; '.join(looked)}\n"
                f"  Download: {exc}\n"
                "To fix: pass path= (the cifar-10-batches-bin folder, its parent, or "
                f"{TARBALL_NAME}) or set TTAKIT_DATA to a local copy, or retry "
                "download=True with network access."
            ) from None
        found = ("dir", folder)
    if found is None:
        where = "; ".join(looked)
        at = "" if path is None else f" at path={os.fspath(path)!r}"
        raise DatasetError(f"CIFAR-10 not found{at}.\n  Looked in: {where}\n" + _how_to_fix())
    kind, where_path = found
    return _load(kind, where_path, split)


def _download_root(path: Optional[PathLike]) -> Path:
    """Where download=True puts the data: the cache, or the folder named by path=."""
    if path is None:
        return cache_dir()
    root = Path(os.fspath(path)).expanduser()
    if root.is_file() or root.name.endswith((".tar.gz", ".tgz", ".tar")):
        raise DatasetError(
            f"path={os.fspath(path)!r} names a tarball that does not exist or is not "
            "a valid tar file; with download=True pass a folder (or no path, to use "
            f"the cache {cache_dir()})."
        )
    return root.parent if root.name == FOLDER_NAME else root
