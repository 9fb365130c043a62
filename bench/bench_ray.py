#!/usr/bin/env python
"""Ray batch jobs against the single-process ``ttakit predict``, D4 on CIFAR-sized images.

The same N PNG files (CIFAR-10 images, cycled when N > 60,000) are
predicted with the published ResNet-20 (TorchScript, normalised with
--mean/--std) and the D4 policy by: ``ttakit predict`` in one process (all
cores), and ``ttakit predict --engine ray`` on a local Ray with 1 and with 2
actors (1 CPU each). Each arm is a fresh ``ttakit`` process, as a user runs
it; the arms rotate over ``--rounds`` rounds, so each round's ratios are
taken side by side. Ray's fixed cost (process start, Ray start, actors
loading the model, a one-block job) is measured separately, with the same
actors on 64 images, and the net throughput is N / (time - fixed cost).
Every arm's predictions are checked against the single process's (same ids,
probabilities within 1e-5).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _common as C

TINY = 64  # images of the fixed-cost runs
MEAN = ("0.485", "0.456", "0.406")
STD = ("0.229", "0.224", "0.225")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=C.default_data(), help="CIFAR-10 binary folder")
    p.add_argument("--models", default=os.environ.get("TTAKIT_MODELS") or str(
        (C.REPO / ".." / "shared" / "models" / "cifar10-resnet").resolve()), help="folder of the ResNet checkpoints")
    p.add_argument("--n", type=int, default=100_000, help="images per timed run")
    p.add_argument("--policy", default="d4")
    p.add_argument("--actors", type=int, nargs="+", default=[1, 2], help="actor counts of the Ray arms")
    p.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray")
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--gpus-per-actor", type=float, default=0, help="GPUs per Ray actor (0: CPU actors; else the single process runs on cuda too)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--work", default=None, help="folder for the images and outputs (default: a temporary one)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    C.add_protocol_args(p)
    return p.parse_args(argv)


def write_images(folder: Path, data: str, n: int) -> None:
    """``n`` CIFAR-10 images as PNG files (kept when already there)."""
    from PIL import Image

    from ttakit.datasets import cifar10

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.png"))) == n:
        return
    x = cifar10(data, "test" if n <= 10_000 else "all", progress=False).images
    for i in range(n):
        Image.fromarray(x[i % len(x)]).save(folder / f"{i:06d}.png", compress_level=1)


def export_model(models: str, path: Path) -> None:
    import torch

    from ttakit.zoo import load_cifar_resnet

    net = load_cifar_resnet(20, root=models).eval()
    torch.jit.script(net).save(str(path))


def run(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return seconds, r.stderr


def read_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = [k for k in rows[0] if k.startswith("p_")]
    return {r["path"]: np.array([float(r[c]) for c in cols], np.float32) for r in rows}


def read_parquet(folder: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    t = pq.read_table(folder, columns=["id", "probs"])
    probs = np.stack(t.column("probs").to_numpy(zero_copy_only=False))
    return dict(zip(t.column("id").to_pylist(), probs))


def main(argv=None):
    C.ensure_env()
    args = parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_ray."))
    images, tiny = work / f"images{args.n}", work / "tiny"
    t0 = time.perf_counter()
    write_images(images, args.data, args.n)
    write_images(tiny, args.data, TINY)
    model = work / "resnet20.pt"
    export_model(args.models, model)
    print(f"{args.n} PNG files in {images} ({time.perf_counter() - t0:.0f} s to prepare)", flush=True)

    env = {**os.environ, **C.MALLOC_ENV, "KERAS_BACKEND": "torch",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(C.REPO / "src"), os.environ.get("PYTHONPATH")]))}
    env.pop("OMP_NUM_THREADS", None)  # the single process uses every core, as a user gets it
    base = [sys.executable, "-m", "ttakit", "predict", str(model), "--policy", args.policy, "--mean", *MEAN,
            "--std", *STD, "--output-kind", "logits", "--no-progress"]

    def ray_cmd(src: Path, out: Path, k: int) -> list[str]:
        shutil.rmtree(out, ignore_errors=True)
        return [*base[:5], str(src), *base[5:], "--engine", "ray", "--actors", str(k), "--num-cpus",
                str(args.num_cpus), "--block-size", str(args.block_size), "--out", str(out),
                *(["--gpus-per-actor", str(args.gpus_per_actor)] if args.gpus_per_actor else [])]

    on_gpu = ["--device", "cuda"] if args.gpus_per_actor else []  # the single process on the GPU too
    arms = {"single": lambda: [*base[:5], str(images), *base[5:], *on_gpu, "--out", str(work / "single.csv")]}
    for k in args.actors:
        arms[f"ray x{k}"] = (lambda k=k: ray_cmd(images, work / f"ray{k}", k))
        arms[f"ray x{k} fixed"] = (lambda k=k: ray_cmd(tiny, work / f"tiny{k}", k))
    C.begin("bench_ray: ttakit predict --engine ray against one process", args)
    times: dict[str, list[float]] = {n: [] for n in arms}
    startup: dict[str, list[float]] = {n: [] for n in arms}
    names = list(arms)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            seconds, err = run(arms[name](), env)
            times[name].append(seconds)
            m = re.search(r"of which ([\d.]+) s starting Ray", err)
            if m:
                startup[name].append(float(m.group(1)))
            print(f"round {r + 1} {name}: {seconds:.1f} s", flush=True)
        C.tick()

    ref = read_csv(work / "single.csv")
    checks = {}
    for k in args.actors:
        got = read_parquet(work / f"ray{k}")
        same_ids = sorted(got) == sorted(ref)
        diff = max(float(np.abs(got[i] - ref[i]).max()) for i in ref) if same_ids else float("nan")
        checks[f"ray x{k}"] = {"same_ids": same_ids, "max_prob_diff": diff}

    n = args.n
    rows, result = [], {"n": n, "policy": args.policy, "block_size": args.block_size, "num_cpus": args.num_cpus,
                        "machine": C.machine(), "seconds": times, "ray_init_seconds": startup, "checks": checks,
                        "ratios": {}, "throughput": {}, "load_avg_at_end": list(os.getloadavg())}
    single = times["single"]
    rows.append(["single process", f"{statistics.median(single):.1f}", f"{n / statistics.median(single):.0f}", "",
                 "1.00", ""])
    result["throughput"]["single"] = n / statistics.median(single)
    for k in args.actors:
        t, fixed = times[f"ray x{k}"], times[f"ray x{k} fixed"]
        net = [n / (a - b) if a > b else float("nan") for a, b in zip(t, fixed)]  # nan: the noise exceeds the work
        ratio = C.summary(C.ratios(single, t))  # throughput ratio = time ratio, inverted
        result["ratios"][f"ray x{k} / single"] = ratio
        result["throughput"][f"ray x{k}"] = n / statistics.median(t)
        result["throughput"][f"ray x{k} net of fixed cost"] = statistics.median(net)
        result["throughput"][f"ray x{k} fixed cost s"] = statistics.median(fixed)
        rows.append([f"ray, {k} actor{'s' if k > 1 else ''}", f"{statistics.median(t):.1f}",
                     f"{n / statistics.median(t):.0f}", f"{statistics.median(net):.0f}", C.fmt_ratio(ratio, 2),
                     f"{statistics.median(fixed):.1f} (Ray start {statistics.median(startup[f'ray x{k} fixed']):.1f})"])
    print()
    C.say(C.table(rows, ["arm", "wall s", "img/s", "img/s net", "throughput vs single", "fixed cost s"]))
    print(f"\nchecks against the single process: {checks}")
    print(f"load average at start {result['machine']['load_avg_at_start']}, at end {result['load_avg_at_end']}")
    C.finish(args, json_path=args.json, payload=result)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
