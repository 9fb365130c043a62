"""Shared helpers for the ttakit benchmarks.

Every figure the benchmarks report is a *ratio* of two arms timed side by
side in the same process, interleaved (A, B, A, B, ...) over several
repeats: the machine is shared and noisy, so absolute times drift, but
interleaved ratios are stable. We report the median and the spread (min-max)
of the per-round ratios.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

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


def interleave(arms: dict, repeats: int, rotate: bool = True) -> dict[str, list[float]]:
    """Time each arm (name -> zero-argument callable) once per round, for
    ``repeats`` rounds; the order rotates every round so that no arm always
    runs first. Returns name -> list of seconds, one per round."""
    names = list(arms)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names) if rotate else 0
        for n in names[k:] + names[:k]:
            t, _ = timed(arms[n])
            times[n].append(t)
    return times


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
