#!/usr/bin/env python
"""Is the default test-time adaptation safe? ``adapt="norm"`` against no adaptation, paired.

The zoo ResNet-20 (``ttakit.zoo.load_cifar_resnet(20)``, CIFAR normalisation)
on ``--n`` seeded CIFAR-10 test images, with the default adaptation
(``adapt="norm"``: ``ttakit.adapt.Norm()``, its floor, shift test and prior as
documented in docs/adaptation.md) and without, each with the policy
``identity`` and ``identity + hflip``, on these streams:

* clean, shuffled: one ``predict_proba`` call over all images, in chunks of
  ``--chunk`` (the adaptation's stream is the call);
* clean, sorted by class: the same call on the images ordered by label (the
  stream breaks the assumption that it is a fair sample);
* clean, calls of 1, 4 and 16 images: ``predict_proba`` called on each
  slice of that size on its own (each call is its own stream);
* clean, one call in chunks of 16, shuffled and sorted by class (small
  forward batches, the statistics still accumulate over the call);
* Gaussian noise at severity 5 (``ttakit.shift``), one call: a real shift,
  where adaptation should gain.

Each row: error % without and with adaptation, the difference (norm - none,
percentage points) with its paired 95% bootstrap CI over images, the images
fixed and broken and the exact McNemar p. The issue's target: on every
clean row the difference is at most +0.5 points. Error rates are
deterministic; the seconds are the CPU time of each arm (indicative only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _common as C

#: the largest increase of the error (percentage points) the default adaptation may cause on clean data
TARGET = 0.5
POLICIES = ("identity", "identity + hflip")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=C.default_data(), help="CIFAR-10 binary folder")
    p.add_argument("--models", default=C.default_models(), help="folder of the zoo ResNets")
    p.add_argument("--n", type=int, default=2000, help="test images (a seeded sample of the 10,000)")
    p.add_argument("--chunk", type=int, default=200, help="inputs per chunk of the one-call streams")
    p.add_argument("--seed", type=int, default=0, help="the sample, the corruption and the bootstrap")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    C.add_protocol_args(p)
    return p.parse_args(argv)


def streams(x, y, noisy, chunk: int) -> list[tuple[str, bool, object, object, int, int | None]]:
    """``(name, clean, images, labels, chunk within a call, images per call or None: one call)``."""
    import numpy as np

    order = np.argsort(y, kind="stable")
    return [("clean, shuffled, one call", True, x, y, chunk, None),
            ("clean, sorted by class, one call", True, x[order], y[order], chunk, None),
            ("clean, calls of 1 image", True, x, y, chunk, 1),
            ("clean, calls of 4 images", True, x, y, chunk, 4),
            ("clean, calls of 16 images", True, x, y, chunk, 16),
            ("clean, shuffled, one call in chunks of 16", True, x, y, 16, None),
            ("clean, sorted by class, one call in chunks of 16", True, x[order], y[order], 16, None),
            ("gaussian noise 5, one call", False, noisy, y, chunk, None)]


def predict(clf, x, per_call):
    import numpy as np

    if per_call is None:
        return clf.predict(x)
    return np.concatenate([clf.predict(x[s:s + per_call]) for s in range(0, len(x), per_call)])


def main(argv=None):
    args = parse_args(argv)
    C.start_torch(args.threads)
    import numpy as np

    import ttakit
    from ttakit.datasets import cifar10
    from ttakit.evaluation.paired import paired_accuracy
    from ttakit.shift import corrupt
    from ttakit.zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet

    if not Path(args.models).is_dir():
        print(f"no zoo ResNets in {args.models} (--models or $TTAKIT_MODELS)", file=sys.stderr)
        return 2
    C.begin("bench_adapt_safety: the default adaptation (norm) against none, ResNet-20, CIFAR-10", args)
    test = cifar10(args.data, split="test", progress=False)
    idx = np.random.default_rng(args.seed).permutation(len(test.labels))[:args.n]
    x, y = test.images[idx], test.labels[idx]
    noisy = corrupt(x, "gaussian_noise", 5, seed=args.seed)
    model = load_cifar_resnet(20, root=args.models)
    pre = ttakit.Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD)
    default = ttakit.adapt.coerce("norm")
    print(f"{len(y)} images; default adaptation: {default.to_dict()}", flush=True)

    rows, out, worst = [], [], -float("inf")
    for name, clean, xs, ys, chunk, per_call in streams(x, y, noisy, args.chunk):
        for policy in POLICIES:
            correct, secs = {}, {}
            for adapt in (None, "norm"):
                clf = ttakit.Classifier(model, policy, data_layout="NHWC", preprocess=pre, output="logits",
                                        batch_size=chunk, adapt=adapt)
                c0 = C.cpu_seconds()
                correct[adapt] = predict(clf, xs, per_call) == ys
                secs[adapt] = C.cpu_seconds() - c0
                C.tick()
            pr = paired_accuracy(correct[None], correct["norm"], seed=args.seed)
            diff, lo, hi = (-100 * v + 0.0 for v in (pr.lift, pr.ci_high, pr.ci_low))  # error points, norm - none
            verdict = ("met" if diff <= TARGET else "MISSED") if clean else ("gain" if diff < 0 else "no gain")
            if clean:
                worst = max(worst, diff)
            rows.append([name, policy, f"{100 * (1 - pr.accuracy_a):.2f}", f"{100 * (1 - pr.accuracy_b):.2f}",
                         f"{diff:+.2f} [{lo:+.2f}, {hi:+.2f}]", f"{pr.fixed}/{pr.broken}", f"{pr.p_value:.3g}",
                         f"{secs[None]:.1f} / {secs['norm']:.1f}", verdict])
            out.append({"stream": name, "clean": clean, "policy": policy, "chunk": chunk, "per_call": per_call,
                        "error_none": 100 * (1 - pr.accuracy_a), "error_norm": 100 * (1 - pr.accuracy_b),
                        "difference": diff, "ci": [lo, hi], "fixed": pr.fixed, "broken": pr.broken,
                        "p_mcnemar": pr.p_value, "seconds": secs, "verdict": verdict})
            print(f"  {name} | {policy}: {rows[-1][2]} -> {rows[-1][3]} ({rows[-1][4]})", flush=True)

    C.say(f"\nResNet-20, {len(y)} CIFAR-10 test images (seed {args.seed}), error %; difference = norm - none in "
          f"points, paired 95% bootstrap CI over images; target on clean rows: at most +{TARGET}")
    C.say(C.table(rows, ["stream", "policy", "none", "norm", "difference [95% CI]", "fixed/broken", "McNemar p",
                         "CPU s none / norm", "target"]))
    met = worst <= TARGET
    C.say(f"\nworst clean difference: {worst:+.2f} points: target {'met' if met else 'MISSED'}")
    C.finish(args, json_path=args.json, payload={
        "benchmark": "adapt_safety", "machine": C.machine(), "args": vars(args), "n": int(len(y)),
        "default_adaptation": default.to_dict(), "target_points": TARGET, "rows": out,
        "worst_clean_difference": worst, "target_met": met})
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
