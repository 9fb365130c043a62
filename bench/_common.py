"""Shared helpers for the ttakit benchmarks.

Every figure the benchmarks report is a *ratio* of two arms timed side by
side in the same process, interleaved (A, B, A, B, ...) over several
repeats: absolute times drift, interleaved ratios much less. We report the
median and the spread (min-max) of the per-round ratios, and the CPU time
of each arm beside its wall time.

Every benchmark runs under the protocol of ``protocol.py``: :func:`begin`
checks that the machine is quiet, :func:`interleave` reads it again after
every round, and :func:`finish` marks the result ``contended`` when the
machine was busy (thresholds in ``protocol.py``); ``--record`` writes the
result tables into BENCHMARKS.md, and refuses to when they are contended.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

import protocol

REPO = Path(__file__).resolve().parent.parent
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
CACHE_DIR = REPO / "results" / "bench_cache"  # git-ignored (results/)


def default_data() -> str:
    return os.environ.get("TTAKIT_DATA") or str((REPO / ".." / "shared" / "data" / "cifar10"
                                                 / "cifar-10-batches-bin").resolve())


def ensure_env(allow_reexec: bool = True) -> None:
    """The glibc allocator settings only take effect at process start (see
    BENCHMARKS.md): if they are missing, re-run this process with them set,
    as ``make bench`` does. Also sets ``KERAS_BACKEND=torch``."""
    missing = {k: v for k, v in MALLOC_ENV.items() if os.environ.get(k) != v}
    if "KERAS_BACKEND" not in os.environ:
        os.environ["KERAS_BACKEND"] = "torch"
    if missing and allow_reexec and os.environ.get("TTAKIT_BENCH_NO_REEXEC") != "1":
        env = {**os.environ, **MALLOC_ENV, "TTAKIT_BENCH_NO_REEXEC": "1"}
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def default_models() -> str:
    """The folder of the zoo ResNet checkpoints: ``$TTAKIT_MODELS``, else ../shared beside the checkout."""
    return os.environ.get("TTAKIT_MODELS") or str((REPO / ".." / "shared" / "models" / "cifar10-resnet").resolve())


def start_torch(threads: int | None) -> None:
    """Environment (:func:`ensure_env`), warnings off, and ``threads`` torch threads when given."""
    import warnings

    ensure_env()
    warnings.filterwarnings("ignore")
    import torch

    if threads:
        torch.set_num_threads(threads)


def malloc_env_set() -> bool:
    return all(os.environ.get(k) == v for k, v in MALLOC_ENV.items())


def machine() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_name(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "malloc_env": malloc_env_set(),
        "load_avg_at_start": list(os.getloadavg()),
    }
    try:
        import keras

        info["keras"] = keras.__version__
    except Exception:  # keras is optional for most benchmarks
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(fn, *args, **kwargs):
    """``(seconds, result)`` of one call."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def cpu_seconds() -> float:
    """CPU seconds of this process (all its threads) and its reaped children."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


class Timings(dict):
    """name -> wall seconds per round (a dict, as before), with ``cpu``:
    name -> CPU seconds per round."""

    def __init__(self, names):
        super().__init__({n: [] for n in names})
        self.cpu: dict[str, list[float]] = {n: [] for n in names}


def interleave(arms: dict, repeats: int, rotate: bool = True) -> Timings:
    """Time each arm (name -> zero-argument callable) once per round, for
    ``repeats`` rounds; the order rotates every round so that no arm always
    runs first. Returns name -> list of wall seconds, one per round, with the
    CPU seconds in ``.cpu``. The running benchmark's guard reads the machine
    after every round."""
    names = list(arms)
    times = Timings(names)
    for r in range(repeats):
        k = r % len(names) if rotate else 0
        for n in names[k:] + names[:k]:
            c0 = cpu_seconds()
            t, _ = timed(arms[n])
            times.cpu[n].append(cpu_seconds() - c0)
            times[n].append(t)
        tick()
    return times


def time_table(times: Timings, digits: int = 3) -> str:
    """Wall seconds (median, min-max over rounds) and CPU seconds (median) per arm."""
    rows = [[n, f"{statistics.median(v):.{digits}f} ({min(v):.{digits}f}-{max(v):.{digits}f})",
             f"{statistics.median(times.cpu[n]):.{digits}f}" if getattr(times, "cpu", None) else "-"]
            for n, v in times.items()]
    return table(rows, ["arm", "wall s (median, min-max)", "CPU s (median)"])


def ratios(num: list[float], den: list[float]) -> list[float]:
    """Per-round ratios (rounds paired: measured side by side)."""
    return [a / b for a, b in zip(num, den)]


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "values": values}


def fmt_ratio(s: dict, digits: int = 3) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def table(rows: list[list], headers: list[str]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    out = [line, "-" * len(line)]
    for r in cells:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def write_json(path: str | None, payload: dict) -> None:
    if not path:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    print(f"\nwrote {p}")


def _jsonable(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


def load_cifar(data: str, split: str, n: int | None):
    from ttakit.datasets import cifar10

    ds = cifar10(data, split=split, progress=False)
    images, labels = ds.images, ds.labels
    if n is not None:
        images, labels = images[:n], labels[:n]
    return images, labels


def header(title: str, args) -> None:
    m = machine()
    print(f"== {title} ==")
    print(f"torch {m['torch']} ({m['torch_threads']} threads), {m['cpu_count']} CPUs ({m['cpu']}), "
          f"GPU: {m['gpu'] or 'none'}, malloc env: {'set' if m['malloc_env'] else 'NOT set'}, "
          f"load avg {m['load_avg_at_start'][0]:.2f}")
    print("args: " + " ".join(f"{k}={v}" for k, v in vars(args).items()))


# -- the protocol around one benchmark ------------------------------------
_GUARD: protocol.Guard | None = None
_SAID: list[str] = []


def add_protocol_args(p) -> None:
    """``--record`` and ``--benchmarks`` (see :func:`finish`)."""
    p.add_argument("--record", metavar="NAME", nargs="?", const="", default=None,
                   help="write the result tables into --benchmarks under this name (default: the script's), "
                        "only when the machine was quiet (bench/protocol.py)")
    p.add_argument("--benchmarks", default=str(REPO / "BENCHMARKS.md"), help="file --record writes into")


def begin(title: str, args, guard: protocol.Guard | None = None) -> protocol.Guard:
    """Print the header and start watching the machine (the quiet check)."""
    global _GUARD
    header(title, args)
    _GUARD = guard or protocol.Guard()
    _SAID.clear()
    b = _GUARD.start()
    busy = protocol.assess_before(_GUARD.cores, b)
    print(f"quiet check ({b['seconds']:.1f} s): load {b['load']:.2f} on {_GUARD.cores} cores, other processes + "
          f"steal {b['others_share']:.1%} of the CPU" + ("" if not busy else "; BUSY: " + "; ".join(busy)), flush=True)
    return _GUARD


def tick() -> None:
    """Read the machine between two rounds of a hand-written loop
    (:func:`interleave` does it by itself)."""
    if _GUARD is not None:
        _GUARD.tick()


def say(text: str = "") -> None:
    """Print a result line or table; :func:`finish` records what was said."""
    print(text, flush=True)
    _SAID.append(text)


def command_line(argv: list[str] | None = None) -> str:
    """The command that reproduces this run (without --record/--json/--benchmarks)."""
    argv = list(sys.argv if argv is None else argv)
    out, skip = [], False
    for a in argv[1:]:
        if skip:
            skip = False
            continue
        if a in ("--json", "--benchmarks") or a.startswith(("--json=", "--benchmarks=", "--record")):
            skip = a in ("--json", "--benchmarks")
            continue
        out.append(a)
    script = os.path.relpath(os.path.abspath(argv[0]), REPO)
    return " ".join(shlex.quote(a) for a in ["python", script, *out])


def finish(args, payload: dict | None = None, json_path: str | None = None) -> dict:
    """Stop watching; print the run's conditions; add them (and the
    command) to ``payload`` and write it to ``json_path``; with
    ``--record``, write what :func:`say` printed into BENCHMARKS.md, or
    refuse when the machine was busy. Returns the conditions."""
    global _GUARD
    if _GUARD is None:
        raise RuntimeError("finish() without begin()")
    cond = _GUARD.finish()
    _GUARD = None
    print("\n" + protocol.describe(cond), flush=True)
    if payload is not None:
        payload["conditions"] = cond
        payload.setdefault("command", command_line())
        write_json(json_path, payload)
    name = getattr(args, "record", None)
    if name is not None:
        name = name or Path(sys.argv[0]).stem.removeprefix("bench_")
        try:
            path = protocol.record(args.benchmarks, name, command_line(), "\n".join(_SAID), cond)
            print(f"recorded in {path} (block {name!r})")
        except protocol.ContendedError as e:
            print(f"REFUSED: {e}", file=sys.stderr)
    return cond
