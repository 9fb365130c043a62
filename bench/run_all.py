#!/usr/bin/env python
"""Run all ttakit benchmarks (``make bench``) and print their headline ratios.

Each benchmark runs in its own process with the glibc malloc settings and
``KERAS_BACKEND=torch`` in its environment, and writes JSON under
``--out`` (default ``results/bench/``, git-ignored). ``--quick`` is a smoke
run on small inputs (about 2 minutes; the figures are not meaningful).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import _common as C

HERE = Path(__file__).resolve().parent

FULL = {
    "tutorial_loop": ["--n", "1000", "--blocks", "5", "--train-n", "50000"],
    "d4_floor": ["--n", "1000", "--sweep-repeats", "2"],
    "dedupe": ["--n", "1000"],
    "batch_size": ["--n", "512"],
    "memory": ["--n", "1000000"],
    "adapt_safety": ["--n", "2000"],
}
QUICK = {
    "tutorial_loop": ["--n", "40", "--blocks", "2", "--train-n", "2000"],
    "d4_floor": ["--n", "200", "--floor-sizes", "128", "512", "--ttach-sizes", "64", "256",
                 "--sweep-repeats", "1", "--repeats", "2"],
    "dedupe": ["--n", "200", "--seeds", "0", "1", "--repeats", "2"],
    "batch_size": ["--n", "64", "--sizes", "128", "512", "--rounds", "1", "--passes", "1"],
    "memory": ["--n", "20000"],
    "adapt_safety": ["--n", "100"],
}
NO_DATA = {"memory"}  # generates its own inputs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run on small inputs")
    p.add_argument("--only", nargs="+", choices=list(FULL), help="run only these benchmarks")
    p.add_argument("--data", default=C.default_data(), help="CIFAR-10 binary folder")
    p.add_argument("--out", default=str(C.REPO / "results" / "bench"), help="folder for the JSON results")
    p.add_argument("--record", action="store_true",
                   help="each benchmark writes its tables into BENCHMARKS.md if the machine was quiet for it "
                        "(bench/protocol.py); a contended one is refused")
    args = p.parse_args(argv)

    env = {**os.environ, **C.MALLOC_ENV, "TTAKIT_BENCH_NO_REEXEC": "1"}
    env.setdefault("KERAS_BACKEND", "torch")
    out = Path(args.out) / ("quick" if args.quick else "")
    failed, summary = [], {}
    for name, extra in (QUICK if args.quick else FULL).items():
        if args.only and name not in args.only:
            continue
        path = out / f"{name}.json"
        data = [] if name in NO_DATA else ["--data", args.data]
        cmd = [sys.executable, str(HERE / f"bench_{name}.py"), *data, *extra, "--json", str(path),
               *(["--record"] if args.record and not args.quick else [])]
        print(f"\n$ {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, env=env).returncode
        print(f"[{name}: exit {rc}, {time.perf_counter() - t0:.0f} s]", flush=True)
        if rc != 0:
            failed.append(name)
        if path.exists():
            summary[name] = json.loads(path.read_text())

    contended = [k for k, v in summary.items() if v.get("conditions", {}).get("contended", True)]
    print("\n== headline ratios ==" + (f" (CONTENDED, not figures: {', '.join(contended)})" if contended else ""))
    if "tutorial_loop" in summary:
        s = summary["tutorial_loop"]
        v = s["speedup"]["tutorial/ttakit (same block)"]
        print(f"tutorial loop / ttakit: {C.fmt_ratio(v, 1)} (target >= 50); accuracy tutorial "
              f"{s['accuracy']['tutorial']:.3f}, ttakit {s['accuracy']['ttakit']:.3f}; "
              f"literal==ttakit mismatches: {s['literal_vs_ttakit']['label_mismatches']}")
    if "d4_floor" in summary:
        s = summary["d4_floor"]
        for k in ("ttakit/floor", "ttakit/ttach", "ttakit@floor_best/floor"):
            if k in s["ratios"]:
                print(f"{k}: {C.fmt_ratio(s['ratios'][k])} (target <= {s['targets'][k]})")
        print(f"ttakit vs ttach max |diff|: {s['ttakit_vs_ttach_max_abs_diff']:.1e}")
    if "dedupe" in summary:
        s = summary["dedupe"]
        print(f"dedupe: time no-dedupe/dedupe {C.fmt_ratio(s['time_ratio_all'], 2)}; outputs equal to 1e-6: "
              f"{s['outputs_equal_1e-6']}")
    if "batch_size" in summary:
        s = summary["batch_size"]
        print(f"batch size: best with malloc env {s['best']['with']}, without {s['best']['without']}; "
              f"within 5% of best: {s['within_5pct_with_env']}; engine CPU_BATCH {s['engine_cpu_batch']}")
    if "adapt_safety" in summary:
        s = summary["adapt_safety"]
        print(f"adapt safety: worst clean difference norm - none {s['worst_clean_difference']:+.2f} points "
              f"(target <= +{s['target_points']}): {'met' if s['target_met'] else 'MISSED'}")
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
