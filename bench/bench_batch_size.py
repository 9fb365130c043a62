#!/usr/bin/env python
"""ttakit D4 throughput on CPU by forward batch size, with and without the glibc malloc settings.

glibc's allocator settings (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``) are read once at process start, so each
measurement runs in a fresh subprocess, with or without them; the two kinds
of subprocess alternate (with, without, without, with, ...) over rounds.
Inside a subprocess every batch size is warmed up, then timed ``--passes``
times in rotating order. Reports images/s (each image = 8 D4 views), the
ratio to the best batch size within each setting, and the ratio
without/with per batch size (paired rounds). Used to choose
``ttakit.engine.CPU_BATCH``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import warnings

import _common as C


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=C.default_data(), help="CIFAR-10 binary folder")
    p.add_argument("--n", type=int, default=512, help="test images per timed run (x8 views)")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048],
                   help="forward batch sizes (model inputs per forward pass)")
    p.add_argument("--rounds", type=int, default=2, help="rounds; each round spawns one process per setting")
    p.add_argument("--passes", type=int, default=2, help="timed passes over all sizes inside each process")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    C.add_protocol_args(p)
    return p.parse_args(argv)


def child(args) -> None:
    warnings.filterwarnings("ignore")
    import torch

    from ttakit import Classifier
    from ttakit.zoo import tutorial_cnn_torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = tutorial_cnn_torch().eval()
    images, _ = C.load_cifar(args.data, "test", args.n)
    clfs = {bs: Classifier(model, "d4", data_layout="NHWC", batch_size=bs) for bs in args.sizes}
    for bs, clf in clfs.items():  # warm-up: one full run per size
        clf.run(images)
    arms = {bs: (lambda c=clf: c.run(images)) for bs, clf in clfs.items()}
    # rotate the start so that successive processes begin with different sizes
    names = list(arms)
    k = args.offset % len(names)
    arms = {b: arms[b] for b in names[k:] + names[:k]}
    times = C.interleave(arms, args.passes)
    print(json.dumps({"seconds": {str(b): t for b, t in times.items()},
                      "malloc_env": C.malloc_env_set(), "threads": torch.get_num_threads()}))


def spawn(args, with_env: bool, offset: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in C.MALLOC_ENV}
    if with_env:
        env.update(C.MALLOC_ENV)
    env["TTAKIT_BENCH_NO_REEXEC"] = "1"
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--data", args.data, "--n", str(args.n),
           "--passes", str(args.passes), "--offset", str(offset), "--sizes", *map(str, args.sizes)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child(args)
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import ttakit.engine

    C.begin("bench_batch_size: ttakit D4 throughput by forward batch size, with/without malloc env", args)
    per = {"with": {b: [] for b in args.sizes}, "without": {b: [] for b in args.sizes}}
    for r in range(args.rounds):
        order = ["with", "without"] if r % 2 == 0 else ["without", "with"]
        for i, setting in enumerate(order):
            res = spawn(args, setting == "with", offset=2 * r + i)
            assert res["malloc_env"] == (setting == "with")
            for b, ts in res["seconds"].items():
                per[setting][int(b)].append(statistics.median(ts))
            print(f"round {r + 1}/{args.rounds} {setting:>7} env: " + ", ".join(
                f"{b}: {args.n / statistics.median(ts):.0f}" for b, ts in res["seconds"].items()) + " images/s",
                flush=True)

    ips = {s: {b: args.n / statistics.median(t) for b, t in d.items()} for s, d in per.items()}
    best = {s: max(d, key=d.get) for s, d in ips.items()}
    env_ratio = {b: C.summary(C.ratios(per["without"][b], per["with"][b])) for b in args.sizes}
    rows = []
    for b in args.sizes:
        rows.append([b, f"{ips['with'][b]:.0f}", f"{ips['with'][b] / ips['with'][best['with']]:.3f}",
                     f"{ips['without'][b]:.0f}", f"{ips['without'][b] / ips['without'][best['without']]:.3f}",
                     C.fmt_ratio(env_ratio[b], 2)])
    print()
    C.say(C.table(rows, ["batch", "img/s with env", "vs best", "img/s without", "vs best",
                         "time without/with (per round)"]))
    default = ttakit.engine.CPU_BATCH
    within = [b for b in args.sizes if ips["with"][b] >= 0.95 * ips["with"][best["with"]]]
    print(f"\nbest with the malloc env: {best['with']}; without: {best['without']}; "
          f"within 5% of the best (with env): {within}; engine default CPU_BATCH = {default} "
          f"({ips['with'].get(default, float('nan')) / ips['with'][best['with']]:.3f} of best with env, "
          f"{ips['without'].get(default, float('nan')) / ips['without'][best['without']]:.3f} without)")
    C.finish(args, json_path=args.json, payload={"benchmark": "batch_size", "machine": C.machine(), "args": vars(args),
                             "seconds": {s: {str(b): t for b, t in d.items()} for s, d in per.items()},
                             "images_per_s": ips, "best": best, "without_over_with": env_ratio,
                             "within_5pct_with_env": within, "engine_cpu_batch": default})
    return 0


if __name__ == "__main__":
    sys.exit(main())
