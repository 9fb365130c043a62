"""The manifest of a batch job: which blocks are committed, written
atomically after each one, so a job killed at any moment resumes where it
stopped and writes every input exactly once.

A block's results are written (atomically) to ``part-NNNNNN.parquet`` before
the block is committed here; a part file whose block is not committed is
rewritten, whole, when the job runs again. So after the last commit the
output folder holds every block's part exactly once, and the inputs that
failed are in the manifest (and ``_failures.csv``), never in a part.

``_manifest.json``::

    {"format": "ttakit-batch-job/1", "job": {...what was asked...},
     "blocks": 20, "inputs": 20000, "committed": "0-7,9", "written": 8950,
     "failures": {"3": [["id", "reason"], ...]}, "listing_failures": [...],
     "complete": false}

``job`` says what the results depend on (model file, policy, merge, sizes,
the inputs' digest, the block size...): running a different job into the
same folder is refused instead of mixing results.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..errors import UsageError
from ..files import write_atomic
from ..io.images import Failure, printable

FORMAT = "ttakit-batch-job/1"
MANIFEST = "_manifest.json"
FAILURES = "_failures.csv"
PART = "part-{:06d}.parquet"


def encode_ranges(numbers) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"``."""
    out: list[str] = []
    run: list[int] = []
    for n in sorted(set(numbers)):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [n]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def decode_ranges(text: str) -> set[int]:
    """The inverse of :func:`encode_ranges`."""
    out: set[int] = set()
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


class Manifest:
    """The state of the job whose results go to ``folder``."""

    def __init__(self, folder: Path, job: dict, blocks: int, inputs: int):
        self.folder = Path(folder)
        self.job = job
        self.blocks = blocks
        self.inputs = inputs
        self.committed: set[int] = set()
        self.written = 0
        self.failures: dict[int, list[Failure]] = {}
        self.listing_failures: list[Failure] = []

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST

    @property
    def complete(self) -> bool:
        return len(self.committed) == self.blocks

    @classmethod
    def open(cls, folder: str | Path, job: dict, blocks: int, inputs: int,
             listing_failures: list[Failure] = ()) -> "Manifest":
        """The manifest in ``folder`` when it is this job's (resumed), else
        a new one, written at once. Raises :class:`~ttakit.errors.UsageError`
        when ``folder`` holds another job, or files but no manifest."""
        folder = Path(folder)
        m = cls(folder, job, blocks, inputs)
        if m.path.exists():
            try:
                saved = json.loads(m.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise UsageError(f"cannot read the job manifest {m.path}: {e}") from None
            if saved.get("format") != FORMAT:
                raise UsageError(f"{m.path} is not a ttakit job manifest ({FORMAT})")
            old = saved.get("job", {})
            if old != job:
                keys = sorted(k for k in set(old) | set(job) if old.get(k) != job.get(k))
                diff = "; ".join(f"{k}: {old.get(k)!r} then, {job.get(k)!r} now" for k in keys[:4])
                raise UsageError(f"{folder} holds the results of another job ({diff}); write to another folder, or "
                                 "delete this one to start again")
            m.committed = decode_ranges(saved.get("committed", ""))
            m.written = int(saved.get("written", 0))
            m.failures = {int(k): [tuple(f) for f in v] for k, v in saved.get("failures", {}).items()}
            m.listing_failures = [tuple(f) for f in saved.get("listing_failures", [])]
            return m
        if folder.exists():
            if not folder.is_dir():
                raise UsageError(f"{folder} exists and is not a folder; the results are written to a folder")
            if any(not p.name.startswith(".") for p in folder.iterdir()):
                raise UsageError(f"{folder} is not empty and holds no job manifest ({MANIFEST}); write the results to "
                                 "a new or empty folder")
        folder.mkdir(parents=True, exist_ok=True)
        m.listing_failures = list(listing_failures)
        m.save()
        return m

    def to_json(self) -> dict:
        return {"format": FORMAT, "job": self.job, "blocks": self.blocks, "inputs": self.inputs,
                "committed": encode_ranges(self.committed), "written": self.written,
                "failures": {str(k): [list(f) for f in v] for k, v in sorted(self.failures.items())},
                "listing_failures": [list(f) for f in self.listing_failures], "complete": self.complete}

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.to_json(), indent=1) + "\n")

    def commit(self, block: int, written: int, failures: list[Failure]) -> bool:
        """Record ``block`` as done (its part file already written) and save;
        False when it already was (a retried task's second answer)."""
        if block in self.committed:
            return False
        self.committed.add(block)
        self.written += int(written)
        if failures:
            self.failures[block] = [(str(i), str(why)) for i, why in failures]
        self.save()
        return True

    def all_failures(self) -> list[Failure]:
        """Every input that failed: what could not be listed, then by block."""
        out = list(self.listing_failures)
        for b in sorted(self.failures):
            out.extend(self.failures[b])
        return out

    def write_failures(self) -> Path:
        """``_failures.csv`` (``id,reason``), written atomically; returns its path."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["id", "reason"])
        for i, why in self.all_failures():
            w.writerow([printable(i), printable(why)])
        path = self.folder / FAILURES
        write_atomic(path, buf.getvalue())
        return path


__all__ = ["FORMAT", "MANIFEST", "FAILURES", "PART", "Manifest", "encode_ranges", "decode_ranges"]
