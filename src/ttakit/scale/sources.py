"""What a batch job reads, cut into numbered blocks the same way every time.

DATA is any mix of image files, folders of them (and of shards), text
files listing image paths (``.txt``, one per line, relative to the list's
folder), and shards: Parquet files (``.parquet``) whose image column holds
encoded image files (bytes, or a struct with a ``bytes`` field), with an
optional id column; NPZ files (``.npz``) holding ``x`` (or ``images``),
``(N, H, W, C)`` arrays, and optional ``ids``.

:func:`plan` lists the inputs and cuts them into :class:`Block` s of at
most ``block_size`` inputs (a block never spans two shards), numbered in
order; the same DATA gives the same blocks, which is what lets a killed
job resume: a block is the unit that is committed. :func:`read_block`
returns a block's ids and raw inputs (paths, bytes or arrays) for
:class:`~ttakit.scale.predictor.TTAPredictor` to decode.

Ids: an image file's path as given (folders expanded; a path given twice
is one input); a shard row's id column, else ``SHARD#ROW``.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.images import Failure, find_images, image_size, printable

#: inputs per block (the unit a job commits) when not given
BLOCK_SIZE = 1024
SHARD_SUFFIXES = (".parquet", ".npz")
LIST_SUFFIXES = (".txt",)
#: array names an NPZ shard may use for its images, and for its ids
NPZ_IMAGES = ("x", "images")
NPZ_IDS = ("ids", "id")


@dataclass(frozen=True)
class Block:
    """Inputs ``start`` to ``stop`` (excluded) of one source: the list of
    image files (``kind="files"``, ``paths`` holds them) or one shard."""

    index: int
    kind: str                 #: files, parquet or npz
    source: str               #: the shard ('' for files)
    start: int
    stop: int
    paths: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.stop - self.start

    def to_row(self) -> dict:
        """The block as a row of plain values (what Ray Data carries)."""
        return {"block": self.index, "kind": self.kind, "source": self.source, "start": self.start,
                "stop": self.stop, "paths": json.dumps(list(self.paths))}

    @classmethod
    def from_row(cls, row: dict) -> "Block":
        return cls(int(row["block"]), str(row["kind"]), str(row["source"]), int(row["start"]), int(row["stop"]),
                   tuple(json.loads(str(row["paths"]))))


@dataclass
class Plan:
    """The blocks of a job's inputs."""

    blocks: list[Block]
    inputs: int                                             #: inputs in all blocks
    digest: str                                             #: hash of what the blocks hold
    failures: list[Failure] = field(default_factory=list)  #: what could not be listed
    first_image: str | None = None                          #: the first image file, if any


def _shards_in(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in found if p.suffix.lower() in SHARD_SUFFIXES and p.is_file()
                  and not p.name.startswith((".", "_")))


def _listed(path: Path) -> list[str]:
    """The paths a list file names (blank lines and lines starting with #
    skipped), relative ones taken from the list's folder."""
    try:
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except OSError as e:
        raise InputError(f"cannot read the list of files {path}: {e.strerror or e}") from None
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line if os.path.isabs(line) else str(path.parent / line))
    return out


def npz_rows(path: str | Path) -> tuple[int, str]:
    """``(rows, array name)`` of an NPZ shard's images, from the header only."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            name = next((n for n in NPZ_IMAGES if f"{n}.npy" in names), None)
            if name is None:
                raise InputError(f"{path}: an NPZ shard must hold an array named {' or '.join(NPZ_IMAGES)}; it "
                                 f"has {', '.join(n[:-4] for n in names) or 'none'}")
            with z.open(f"{name}.npy") as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, _ = read(f)
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise InputError(f"cannot read the NPZ shard {path}: {e}") from None
    if len(shape) not in (3, 4):
        raise InputError(f"{path}: {name} must be (N, H, W, C) or (N, H, W); it is {shape}")
    return int(shape[0]), name


def parquet_rows(path: str | Path) -> int:
    """Rows of a Parquet shard, from its footer."""
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"cannot read the Parquet shard {path}: {e}") from None


def plan(data: Iterable[str | Path], block_size: int = BLOCK_SIZE, recursive: bool = False) -> Plan:
    """The blocks of ``data`` (see the module docstring), in order: the
    image files first (in the order given, folders expanded and sorted),
    then each shard. Raises :class:`~ttakit.InputError` when nothing is found
    or a shard cannot be read."""
    if block_size < 1:
        raise InputError(f"block_size must be a positive integer, got {block_size!r}")
    images: list[str] = []
    shards: list[Path] = []
    failures: list[Failure] = []
    for item in map(Path, data):
        if item.is_dir():
            shards.extend(_shards_in(item, recursive))
            try:
                images.extend(str(p) for p in find_images([item], recursive=recursive, failures=failures))
            except InputError:  # no image in it: fine when it holds shards
                if not _shards_in(item, recursive):
                    raise
        elif item.suffix.lower() in SHARD_SUFFIXES:
            shards.append(item)
        elif item.suffix.lower() in LIST_SUFFIXES:
            images.extend(_listed(item))
        else:
            images.append(str(item))
    images = list(dict.fromkeys(images))  # a file named twice (a folder and a list) is one input
    h = hashlib.sha256()
    blocks: list[Block] = []
    for s in range(0, len(images), block_size):
        part = tuple(images[s:s + block_size])
        blocks.append(Block(len(blocks), "files", "", s, s + len(part), part))
        for p in part:
            h.update(p.encode("utf-8", "surrogateescape") + b"\0")
    for shard in shards:
        kind = shard.suffix.lower().lstrip(".")
        rows = parquet_rows(shard) if kind == "parquet" else npz_rows(shard)[0]
        st = shard.stat()
        h.update(f"{kind}\0{shard}\0{rows}\0{st.st_size}\0{st.st_mtime_ns}\0".encode("utf-8", "surrogateescape"))
        for s in range(0, rows, block_size):
            blocks.append(Block(len(blocks), kind, str(shard), s, min(rows, s + block_size)))
    total = sum(len(b) for b in blocks)
    if not blocks and not failures:
        raise InputError("no inputs found in " + ", ".join(map(str, data)))
    return Plan(blocks, total, h.hexdigest()[:32], failures, images[0] if images else None)


def first_size(plan: Plan) -> tuple[int, int] | None:
    """``(H, W)`` of the first image file whose header can be read, or None."""
    for b in plan.blocks:
        if b.kind != "files":
            return None
        for p in b.paths:
            try:
                return image_size(p)
            except Exception:  # Pillow raises many types; that file fails when it is read
                continue
    return None


# -- reading one block (in the actors) ------------------------------------------------
_NPZ_CACHE: dict[str, dict] = {}


def _npz(path: str) -> dict:
    """The arrays of an NPZ shard, the last one kept (an actor reads a
    shard's blocks one after the other)."""
    if path not in _NPZ_CACHE:
        _NPZ_CACHE.clear()
        with np.load(path, allow_pickle=False) as z:
            _NPZ_CACHE[path] = {k: z[k] for k in z.files}
    return _NPZ_CACHE[path]


def _parquet(block: Block, image_column: str, id_column: str) -> tuple[list[str], list]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(block.source)
    names = pf.schema_arrow.names
    if image_column not in names:
        raise InputError(f"{block.source}: no column {image_column!r} (columns: {', '.join(names)}); pass "
                         "image_column=")
    cols = [image_column] + ([id_column] if id_column in names else [])
    groups, first, offset = [], None, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if offset + n > block.start and offset < block.stop:
            groups.append(g)
            first = offset if first is None else first
        offset += n
    table = pf.read_row_groups(groups, columns=cols).slice(block.start - (first or 0), len(block))
    images = table.column(image_column)
    if pa.types.is_struct(images.type):
        images = images.combine_chunks().field("bytes")
    if not (pa.types.is_binary(images.type) or pa.types.is_large_binary(images.type)):
        raise InputError(f"{block.source}: column {image_column!r} is {images.type}; a Parquet shard's images must "
                         "be encoded image files (binary, or a struct with a 'bytes' field)")
    values = images.to_pylist()
    if id_column in names:
        ids = [str(v) for v in table.column(id_column).to_pylist()]
    else:
        ids = [f"{block.source}#{r}" for r in range(block.start, block.stop)]
    return ids, values


def read_block(block: Block, image_column: str = "image", id_column: str = "id") -> tuple[list[str], Sequence]:
    """``(ids, inputs)`` of ``block``: paths, encoded bytes or arrays, one
    per input. Raises :class:`~ttakit.InputError` when the shard itself
    cannot be read (a bad image inside fails alone, later)."""
    if block.kind == "files":
        return [printable(p) for p in block.paths], list(block.paths)
    if block.kind == "parquet":
        try:
            return _parquet(block, image_column, id_column)
        except (OSError, ValueError) as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"cannot read the Parquet shard {block.source}: {e}") from None
    arrays = _npz(block.source)
    name = next(n for n in NPZ_IMAGES if n in arrays)
    x = arrays[name][block.start:block.stop]
    id_name = next((n for n in NPZ_IDS if n in arrays), None)
    if id_name is not None:
        ids = [str(v) for v in arrays[id_name][block.start:block.stop]]
    else:
        ids = [f"{block.source}#{r}" for r in range(block.start, block.stop)]
    return ids, list(x)


__all__ = ["BLOCK_SIZE", "SHARD_SUFFIXES", "LIST_SUFFIXES", "NPZ_IMAGES", "NPZ_IDS", "Block", "Plan", "plan",
           "first_size", "npz_rows", "parquet_rows", "read_block"]
