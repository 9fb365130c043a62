#!/usr/bin/env python
"""D4 TTA on the tutorial CNN (PyTorch): ttakit vs the floor and vs ttach.

Arms, timed side by side over interleaved rounds on the same N CIFAR-10 images:

* floor: the plain model on the 8 x N D4 views, materialised as one float
  NCHW tensor before timing, run in slices of the fastest batch size (a
  sweep picks it) -- no conversion, no augmentation, no merging: the least
  any D4 TTA can cost.
* ttakit: ``Classifier(model, "d4", data_layout="NHWC").run(uint8 NHWC images)``,
  with its default batch size and with the floor's best, including its own
  uint8 -> float conversion, augmentation, merging and uncertainty stats.
* ttach: ``ClassificationTTAWrapper(model, aliases.d4_transform(),
  merge_mode="mean")`` called on float NCHW batches (pre-converted outside
  the timed region) of its fastest size (swept), under
  ``torch.inference_mode()`` like the others.

Model speed does not depend on the weights: the model has random weights
(eval mode), seeded.
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
    p.add_argument("--floor-sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024],
                   help="batch sizes swept for the floor")
    p.add_argument("--ttach-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512],
                   help="input batch sizes swept for ttach (each runs 8 forward passes of that size)")
    p.add_argument("--sweep-repeats", type=int, default=3, help="interleaved rounds per sweep")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds of the final comparison")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    C.add_protocol_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    C.ensure_env()
    warnings.filterwarnings("ignore")
    import torch
    import ttach

    import ttakit
    from ttakit.engine import default_batch_size
    from ttakit.zoo import tutorial_cnn_torch

    if args.threads:
        torch.set_num_threads(args.threads)
    C.begin("bench_d4_floor: D4 TTA, ttakit vs the floor and vs ttach (tutorial CNN, PyTorch)", args)
    torch.manual_seed(args.seed)
    model = tutorial_cnn_torch().eval()
    images, _ = C.load_cifar(args.data, "test", args.n)
    n = len(images)

    # outside the timed region: float NCHW inputs (ttach) and the 8N D4 views (floor)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).contiguous()
    views = []
    for flip in (False, True):
        base = x.flip(-1) if flip else x
        for k in range(4):
            views.append(torch.rot90(base, k, dims=(2, 3)))
    x8 = torch.cat(views).contiguous()
    del views

    def floor(bs):
        def run():
            with torch.inference_mode():
                return torch.cat([model(x8[s:s + bs]) for s in range(0, len(x8), bs)])
        return run

    tta_ttach = ttach.ClassificationTTAWrapper(model, ttach.aliases.d4_transform(), merge_mode="mean")

    def ttach_run(bs):
        def run():
            with torch.inference_mode():
                return torch.cat([tta_ttach(x[s:s + bs]) for s in range(0, n, bs)])
        return run

    def ttakit_run(bs):
        clf = ttakit.Classifier(model, "d4", data_layout="NHWC", batch_size=bs)
        return lambda: clf.run(images)

    default_bs = default_batch_size(torch.device("cpu"))
    # warm-up
    for f in (floor(256), ttach_run(64), ttakit_run(None)):
        f()

    print(f"\nfloor sweep ({args.sweep_repeats} interleaved rounds, {8 * n} model inputs each):", flush=True)
    fs = C.interleave({bs: floor(bs) for bs in args.floor_sizes}, args.sweep_repeats)
    floor_best = min(fs, key=lambda b: statistics.median(fs[b]))
    best_t = statistics.median(fs[floor_best])
    C.say(C.table([[bs, f"{statistics.median(t):.3f}", f"{8 * n / statistics.median(t):.0f}",
                    f"{statistics.median(t) / best_t:.3f}"] for bs, t in fs.items()],
                  ["batch", "s (median)", "model inputs/s", "vs best"]))

    print(f"\nttach sweep ({args.sweep_repeats} interleaved rounds):", flush=True)
    ts = C.interleave({bs: ttach_run(bs) for bs in args.ttach_sizes}, args.sweep_repeats)
    ttach_best = min(ts, key=lambda b: statistics.median(ts[b]))
    best_t = statistics.median(ts[ttach_best])
    C.say(C.table([[bs, f"{statistics.median(t):.3f}", f"{n / statistics.median(t):.0f}",
                    f"{statistics.median(t) / best_t:.3f}"] for bs, t in ts.items()],
                  ["input batch", "s (median)", "images/s", "vs best"]))

    arms = {"floor": floor(floor_best), "ttakit": ttakit_run(None), "ttach": ttach_run(ttach_best)}
    if floor_best != default_bs:
        arms["ttakit@floor_best"] = ttakit_run(floor_best)
    print(f"\nfinal comparison: {args.repeats} interleaved rounds; floor at batch {floor_best}, "
          f"ttakit at its default {default_bs}" + (f" and at {floor_best}" if floor_best != default_bs else "")
          + f", ttach at input batch {ttach_best}", flush=True)
    times = C.interleave(arms, args.repeats)
    rat = {
        "ttakit/floor": C.summary(C.ratios(times["ttakit"], times["floor"])),
        "ttakit/ttach": C.summary(C.ratios(times["ttakit"], times["ttach"])),
        "ttach/floor": C.summary(C.ratios(times["ttach"], times["floor"])),
    }
    if "ttakit@floor_best" in times:
        rat["ttakit@floor_best/floor"] = C.summary(C.ratios(times["ttakit@floor_best"], times["floor"]))
        rat["ttakit@floor_best/ttach"] = C.summary(C.ratios(times["ttakit@floor_best"], times["ttach"]))
    targets = {"ttakit/floor": 1.05, "ttakit/ttach": 1.0, "ttakit@floor_best/floor": 1.05,
               "ttakit@floor_best/ttach": 1.0}

    C.say(C.table([[k, f"{statistics.median(t):.3f}", f"{min(t):.3f}", f"{max(t):.3f}",
                    f"{n / statistics.median(t):.0f}"] for k, t in times.items()],
                  ["arm", "s (median)", "min", "max", "images/s (8 views each)"]))
    print()
    C.say(C.table([[k, C.fmt_ratio(v), f"≤ {targets[k]}" if k in targets else "-",
                    ("met" if v["median"] <= targets[k] else "MISSED") if k in targets else "-"]
                   for k, v in rat.items()], ["ratio (median over rounds, min-max)", "value", "target", ""]))

    # agreement: same 8 views, same mean
    res = arms["ttakit"]()
    p_ttakit = torch.from_numpy(res.probs)
    p_ttach = arms["ttach"]()
    max_diff = float((p_ttakit - p_ttach).abs().max())
    label_agree = float((p_ttakit.argmax(1) == p_ttach.argmax(1)).float().mean())
    print(f"\nttakit vs ttach merged probabilities: max |diff| = {max_diff:.2e} "
          f"({'OK' if max_diff <= 1e-5 else 'ABOVE 1e-5'}), labels agree on {label_agree:.1%}; "
          f"ttakit ran {res.forward_passes} forward passes ({res.forward_passes / n:g} per image)")

    C.finish(args, json_path=args.json, payload={
        "benchmark": "d4_floor", "machine": C.machine(), "args": vars(args), "n": n,
        "floor_sweep": {str(k): v for k, v in fs.items()}, "floor_best": floor_best,
        "ttach_sweep": {str(k): v for k, v in ts.items()}, "ttach_best": ttach_best,
        "ttakit_default_batch": default_bs, "seconds": times, "ratios": rat, "targets": targets,
        "targets_met": {k: rat[k]["median"] <= t for k, t in targets.items() if k in rat},
        "ttakit_vs_ttach_max_abs_diff": max_diff, "label_agreement": label_agree,
    })
    return 0 if max_diff <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
