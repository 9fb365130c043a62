#!/usr/bin/env python
"""Deduplication of repeated views: Keras-style random flips with and without dedupe.

``Policy.random(n=7, seed=s, horizontal_flip=True)`` draws 7 copies, each
flipped with probability 1/2: at most 2 distinct views. With ``dedupe=True``
(the default) ttakit runs each distinct view once, weighted by its
multiplicity; ``dedupe=False`` runs all 7. For each seed, both arms run on the
same images (tutorial CNN, PyTorch, eval mode, random weights), interleaved;
we report forward passes, the max |difference| of the merged outputs (must
be <= 1e-6) and the time ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings

import _common as C


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=C.default_data(), help="CIFAR-10 binary folder")
    p.add_argument("--n", type=int, default=2000, help="test images")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="policy seeds")
    p.add_argument("--merge", default="mean", help="merge (mean, sum, gmean, ...)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds per seed")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    C.add_protocol_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    C.ensure_env()
    warnings.filterwarnings("ignore")
    import numpy as np
    import torch

    from ttakit import Classifier, Policy
    from ttakit.zoo import tutorial_cnn_torch

    if args.threads:
        torch.set_num_threads(args.threads)
    C.begin("bench_dedupe: 7 random flips, dedupe vs dedupe=False (tutorial CNN, PyTorch)", args)
    torch.manual_seed(0)
    model = tutorial_cnn_torch().eval()
    images, _ = C.load_cifar(args.data, "test", args.n)
    n = len(images)
    Classifier(model, "d4", data_layout="NHWC").run(images[:256])  # warm-up

    rows, results, ok = [], [], True
    all_ratios = []
    for seed in args.seeds:
        pol = Policy.random(n=7, seed=seed, horizontal_flip=True)
        on = Classifier(model, pol, merge=args.merge, data_layout="NHWC", dedupe=True)
        off = Classifier(model, pol, merge=args.merge, data_layout="NHWC", dedupe=False)
        out = {}
        times = C.interleave({"dedupe": lambda: out.__setitem__("on", on.run(images)),
                              "no_dedupe": lambda: out.__setitem__("off", off.run(images))}, args.repeats)
        r_on, r_off = out["on"], out["off"]
        diff = float(np.abs(r_on.scores - r_off.scores).max())
        same_labels = bool((r_on.labels == r_off.labels).all())
        ratio = C.summary(C.ratios(times["no_dedupe"], times["dedupe"]))
        all_ratios += ratio["values"]
        fp_on, fp_off = r_on.forward_passes / n, r_off.forward_passes / n
        ok &= diff <= 1e-6 and same_labels
        distinct = len(pol.unique())
        rows.append([seed, pol.spec if len(pol.spec) < 60 else pol.spec[:57] + "...", distinct,
                     f"{fp_on:g}", f"{fp_off:g}", f"{fp_off / fp_on:.2f}x", f"{diff:.1e}",
                     "yes" if same_labels else "NO", C.fmt_ratio(ratio, 2)])
        results.append({"seed": seed, "policy": pol.spec, "distinct_views": distinct,
                         "forward_passes_per_image": {"dedupe": fp_on, "no_dedupe": fp_off},
                         "pass_ratio": fp_off / fp_on, "max_abs_diff": diff, "same_labels": same_labels,
                         "seconds": times, "time_ratio_no_dedupe_over_dedupe": ratio})
        print(f"seed {seed}: {distinct} distinct, time ratio {C.fmt_ratio(ratio, 2)}", flush=True)

    print()
    C.say(C.table(rows, ["seed", "policy", "distinct", "fwd/img", "fwd/img no-dedupe", "fewer",
                         "max|diff|", "same labels", "time no-dedupe/dedupe (median, min-max)"]))
    overall = C.summary(all_ratios)
    print(f"\nall seeds: time ratio no-dedupe/dedupe {C.fmt_ratio(overall, 2)} "
          f"(ideal 7/distinct = 3.5 when both flips are drawn); outputs equal to 1e-6: {'yes' if ok else 'NO'}")
    C.finish(args, json_path=args.json, payload={
        "benchmark": "dedupe", "machine": C.machine(), "args": vars(args), "n": n,
        "per_seed": results, "time_ratio_all": overall, "outputs_equal_1e-6": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
