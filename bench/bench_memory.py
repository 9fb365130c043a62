#!/usr/bin/env python
"""Memory while streaming: is RSS bounded by batch_size, never by the data size?

The README promises that memory is bounded by ``batch_size``. This streams
``--n`` random 32x32x3 uint8 images (default 1,000,000), generated on the fly
in batches of ``--source-batch`` from a seeded generator (the input never
accumulates), as an *iterable of batches* into
``Classifier(model, "identity + hflip", data_layout="NHWC", batch_size=...).run(gen)``
and samples the process's resident memory (``/proc/self/status``: VmRSS, and
VmHWM for the peak) before the run and whenever the generator has handed
out 10%, 50% and 100% of the images (100k, 500k, 1M by default).

What has to be kept is the merged result: probs (N, C) float32, scores,
labels and the per-input statistics, about 100 bytes per image (we sum the
``.nbytes`` of the arrays the returned result actually holds). Anything
beyond baseline + results is overhead, which must not grow with N: the
target is a peak below 400 MB beyond baseline + results.

Why it can fail even without a leak: when the engine keeps a few small
per-chunk tensors (a chunk's probs, labels, entropy... a few KB) between
large short-lived temporaries (the float batch, the views, activations:
MBs), glibc's heap cannot hand the freed temporaries' pages back, because
a small live block sits above them (the heap only shrinks from the top),
and a hole too small for the next temporary is not reused. RSS then grows
linearly with N although live data grows by ~100 B/image. ``mallinfo2``
(in use vs free bytes held by malloc) and an ``malloc_trim(0)`` at the end
(which returns free pages from the middle of the heap) tell fragmentation
(free-but-held memory, which trim gives back) apart from a real leak.

Two models, each in a fresh subprocess so RSS is independent: a tiny
TorchScript conv net (10 classes, traced and saved to a temporary ``.pt``,
passed as the path) and a plain NumPy callable (a fixed random linear layer,
passed directly, so a ``CallableModel``). Each runs under two allocator
settings: glibc's defaults, and the tuned settings the Makefile exports
(``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736``),
which are read at process start (hence the subprocesses). Torch and OpenMP
use ``--threads`` threads (default 1) in every subprocess.

Exits 1 when any row's peak beyond baseline + results exceeds ``--target-mb``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import warnings

import _common as C

MODELS = ("torchscript", "callable")
ALLOCATORS = ("default", "tuned")
N_CLASSES = 10
MB = 1024 * 1024


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="images to stream")
    p.add_argument("--source-batch", type=int, default=1000, help="images per batch the generator yields")
    p.add_argument("--batch-size", type=int, default=512,
                   help="Classifier batch_size (model inputs per forward pass); 0 = the engine's default")
    p.add_argument("--checkpoints", type=float, nargs="+", default=[0.1, 0.5, 1.0],
                   help="sample RSS when this share of --n has been consumed")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="models to run")
    p.add_argument("--allocators", nargs="+", choices=ALLOCATORS, default=list(ALLOCATORS),
                   help="glibc settings: default, or tuned (the Makefile's MALLOC_* variables)")
    p.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads in every subprocess")
    p.add_argument("--seed", type=int, default=0, help="seed of the image generator and the models")
    p.add_argument("--target-mb", type=float, default=400.0,
                   help="maximum peak RSS beyond baseline + results, MB")
    p.add_argument("--no-trim", action="store_true", help="skip the malloc_trim(0) probe after the run")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--child", choices=MODELS, help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    C.add_protocol_args(p)
    return p.parse_args(argv)


# -- memory probes (Linux / glibc) -------------------------------------------
def proc_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _libc():
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def mallinfo() -> dict[str, int] | None:
    """glibc's own accounting (``mallinfo2``, glibc >= 2.33): ``in_use`` bytes
    handed out by malloc, ``free_held`` bytes free inside its heaps (still
    resident unless trimmed), ``mmapped`` bytes in separate mmap blocks."""
    import ctypes

    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(k, ctypes.c_size_t) for k in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc.mallinfo2.restype = Mallinfo2
    m = libc.mallinfo2()
    return {"heap": m.arena, "in_use": m.uordblks, "free_held": m.fordblks, "mmapped": m.hblkhd}


def sample(label: str, consumed: int) -> dict:
    s = proc_status()
    return {"label": label, "images": consumed, "rss": s["VmRSS"], "hwm": s["VmHWM"], "t": time.perf_counter(),
            "malloc": mallinfo()}


# -- the subprocess ------------------------------------------------------------
def make_model(kind: str, seed: int, tmpdir: str):
    import numpy as np
    import torch

    if kind == "torchscript":
        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, N_CLASSES)).eval()
        with torch.no_grad():
            traced = torch.jit.trace(net, torch.zeros(2, 3, 32, 32))
        path = os.path.join(tmpdir, "tiny_convnet.pt")
        traced.save(path)
        return path, f"TorchScript conv net, {sum(p.numel() for p in net.parameters())} parameters, as a .pt path"
    k = 32 * 32 * 3
    w = np.random.default_rng(seed).standard_normal((k, N_CLASSES)).astype(np.float32) * 0.01
    return (lambda a: a.reshape(len(a), -1)[:, :k] @ w), f"NumPy callable: x.reshape(n, -1) @ W ({k}x{N_CLASSES})"


def image_batches(n: int, batch: int, seed: int, marks: list[int], samples: list, stats: dict):
    """Yield ``n`` random NHWC uint8 images in batches of ``batch``. When the
    consumer asks for more after ``k`` images (so it has processed them) and
    ``k`` is a mark, record a memory sample."""
    import numpy as np

    rng = np.random.default_rng(seed)
    todo = sorted(set(marks))
    done = 0
    while True:
        while todo and done >= todo[0]:
            mark = todo.pop(0)
            samples.append({**sample(f"after {mark}", done), "mark": mark})
        if done >= n:
            return
        t0 = time.perf_counter()
        x = rng.integers(0, 256, size=(min(batch, n - done), 32, 32, 3), dtype=np.uint8)
        stats["gen_seconds"] += time.perf_counter() - t0
        done += len(x)
        yield x
        del x  # the consumer is done with it: never more than one batch alive here


def result_nbytes(result) -> tuple[int, dict[str, int]]:
    """Bytes of the distinct NumPy arrays the result holds (an array shared by
    two fields, e.g. scores = probs, counts once)."""
    import numpy as np

    seen, parts, total = set(), {}, 0
    for name, value in vars(result).items():
        if not isinstance(value, np.ndarray):
            continue
        key = (value.__array_interface__["data"][0], value.nbytes)
        if key in seen:
            parts[name] = 0
            continue
        seen.add(key)
        parts[name] = value.nbytes
        total += value.nbytes
    return total, parts


def child(args) -> None:
    warnings.filterwarnings("ignore")
    import gc

    import torch

    from ttakit import Classifier

    torch.set_num_threads(args.threads)
    samples: list[dict] = []
    stats = {"gen_seconds": 0.0}
    samples.append(sample("imported", 0))
    with tempfile.TemporaryDirectory() as tmpdir:
        model, model_desc = make_model(args.child, args.seed, tmpdir)
        clf = Classifier(model, "identity + hflip", data_layout="NHWC", batch_size=args.batch_size or None)
    # warm-up on 2 source batches (one-time allocations: thread pools, JIT
    # profiling), then drop everything so that the baseline is steady state
    warm = clf.run(image_batches(2 * args.source_batch, args.source_batch, args.seed + 1, [], [],
                                 {"gen_seconds": 0.0}))
    del warm
    gc.collect()
    peak_reset = reset_peak()
    base = sample("baseline", 0)
    samples.append(base)
    marks = sorted({max(1, min(args.n, round(f * args.n))) for f in args.checkpoints})
    t0 = time.perf_counter()
    result = clf.run(image_batches(args.n, args.source_batch, args.seed, marks, samples, stats))
    seconds = time.perf_counter() - t0
    end = sample("after run", args.n)
    samples.append(end)
    kept, kept_parts = result_nbytes(result)
    assert len(result) == args.n and result.probs.shape == (args.n, N_CLASSES), result.probs.shape
    trimmed = None
    if not args.no_trim:
        libc = _libc()
        if libc is not None and hasattr(libc, "malloc_trim"):
            gc.collect()
            libc.malloc_trim(0)
            trimmed = sample("after malloc_trim(0)", args.n)
            samples.append(trimmed)
    for s in samples:
        s["t"] -= t0
    peak = end["hwm"] if peak_reset else max(s["rss"] for s in samples)
    out = {"model": args.child, "model_desc": model_desc, "malloc_env": C.malloc_env_set(),
           "threads": torch.get_num_threads(), "batch_size": args.batch_size or None,
           "n": args.n, "seconds": seconds, "gen_seconds": stats["gen_seconds"], "images_per_s": args.n / seconds,
           "forward_passes": result.forward_passes, "peak_from_hwm": peak_reset,
           "baseline_rss": base["rss"], "peak_rss": peak, "end_rss": end["rss"],
           "trimmed_rss": trimmed["rss"] if trimmed else None,
           "results_bytes": kept, "results_parts": kept_parts,
           "peak_beyond_baseline_and_results": peak - base["rss"] - kept,
           "samples": samples}
    with open(args.child_out, "w") as f:
        json.dump(out, f)


# -- the parent -----------------------------------------------------------------
def spawn(args, model: str, allocator: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in C.MALLOC_ENV}
    if allocator == "tuned":
        env.update(C.MALLOC_ENV)
    env.update({"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
                "TTAKIT_BENCH_NO_REEXEC": "1"})
    with tempfile.TemporaryDirectory() as tmpdir:
        path = os.path.join(tmpdir, "out.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--child", model, "--child-out", path,
               "--n", str(args.n), "--source-batch", str(args.source_batch), "--batch-size", str(args.batch_size),
               "--threads", str(args.threads), "--seed", str(args.seed), "--checkpoints",
               *map(str, args.checkpoints)]
        if args.no_trim:
            cmd.append("--no-trim")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not os.path.exists(path):
            raise SystemExit(f"{model}/{allocator} subprocess failed (exit {proc.returncode}):\n"
                             f"{proc.stderr[-3000:]}")
        with open(path) as f:
            out = json.load(f)
    out["allocator"] = allocator
    return out


def fmt_count(k: int) -> str:
    if k >= 1_000_000 and k % 1_000_000 == 0:
        return f"{k // 1_000_000}M"
    if k >= 1000 and k % 1000 == 0:
        return f"{k // 1000}k"
    return str(k)


def mb(b) -> str:
    return "-" if b is None else f"{b / MB:.0f}"


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    cmdline = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, C.REPO), *sys.argv[1:]])
    C.begin("bench_memory: peak RSS streaming random 32x32x3 uint8 images through identity + hflip", args)
    print(f"$ {cmdline}")
    print(f"n={args.n:,} in batches of {args.source_batch:,} (a generator), Classifier batch_size="
          f"{args.batch_size or 'engine default'}, {args.threads} torch/OpenMP thread(s) per subprocess, "
          f"{os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.2f}; one fresh subprocess per row")
    rows = []
    for model in args.models:
        for allocator in args.allocators:
            r = spawn(args, model, allocator)
            rows.append(r)
            print(f"{model}/{allocator}: {r['seconds']:.1f} s, peak beyond baseline+results "
                  f"{r['peak_beyond_baseline_and_results'] / MB:.0f} MB", flush=True)

    marks = [s["mark"] for s in rows[0]["samples"] if "mark" in s]
    headers = (["model", "allocator", "baseline MB"] + [f"@{fmt_count(k)} MB" for k in marks]
               + ["peak MB", "end MB", "after trim MB", "results MB", "peak beyond base+results MB",
                  "growth B/img", "s", "img/s"])
    table_rows, over = [], []
    for r in rows:
        at = {s["mark"]: s["rss"] for s in r["samples"] if "mark" in s}
        first, last = marks[0], marks[-1]
        growth = (at[last] - at[first]) / (last - first) if last > first else float("nan")
        beyond = r["peak_beyond_baseline_and_results"]
        table_rows.append([r["model"], r["allocator"], mb(r["baseline_rss"]), *(mb(at.get(k)) for k in marks),
                           mb(r["peak_rss"]), mb(r["end_rss"]), mb(r["trimmed_rss"]), f"{r['results_bytes'] / MB:.1f}",
                           mb(beyond), f"{growth:.0f}", f"{r['seconds']:.1f}", f"{r['images_per_s']:,.0f}"])
        r["rss_growth_bytes_per_image"] = growth
        if beyond > args.target_mb * MB:
            over.append(f"{r['model']}/{r['allocator']} ({beyond / MB:.0f} MB)")
    print()
    C.say(md_table(table_rows, headers))
    print(f"\nresults kept: {rows[0]['results_bytes'] / args.n:.0f} B/image "
          f"({', '.join(f'{k} {v / MB:.1f} MB' for k, v in rows[0]['results_parts'].items() if v)}). "
          f"growth B/img: RSS slope between @{fmt_count(marks[0])} and @{fmt_count(marks[-1])}. "
          f"'after trim': RSS after malloc_trim(0), results still alive.")
    for r in rows:
        m = next((s["malloc"] for s in r["samples"] if s["label"] == "after run"), None)
        if m:
            print(f"{r['model']}/{r['allocator']} mallinfo2 after run: in use {m['in_use'] / MB:.0f} MB, "
                  f"free but held {m['free_held'] / MB:.0f} MB, mmapped {m['mmapped'] / MB:.0f} MB")
    ok = not over
    if over:
        print(f"\nFAIL: peak RSS beyond baseline + results exceeds {args.target_mb:.0f} MB in: {', '.join(over)}")
    else:
        print(f"\nOK: every row's peak RSS beyond baseline + results is under {args.target_mb:.0f} MB")
    C.finish(args, json_path=args.json, payload={
        "benchmark": "memory", "command": cmdline, "machine": C.machine(), "args": vars(args),
        "target_mb": args.target_mb, "ok": ok, "over_target": over, "rows": rows})
    return 0 if ok else 1


def md_table(rows: list[list], headers: list[str]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(r, widths))) + " |"
    sep = "|" + "|".join("-" * (w + 2) if i < 2 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(headers), sep, *(fmt(r) for r in cells)])


if __name__ == "__main__":
    sys.exit(main())
