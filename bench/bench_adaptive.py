#!/usr/bin/env python
"""Adaptive TTA on ResNet-20 / CIFAR-10: accuracy kept and wall time saved
at a budget of forward passes per input.

1. The CIFAR-10 test set is split (seeded) into a tuning half and a
   held-out half. ``ttakit.tune`` searches the full policy on the tuning
   half (standard candidates, budget 8, its guard split); the same call with
   ``max_forwards=F`` (on the same prediction cache: no extra model runs)
   gives the adaptive version for each budget F.
2. On the held-out half (each of the full policy's views run once, cached):
   accuracy of no TTA, the full policy, and each adaptive policy, with its
   mean forwards per input; the share of the full policy's accuracy lift over
   no TTA that the adaptive one keeps; and the accuracy/NLL vs forwards curve
   (plain prefixes of the full policy vs adaptive policies).
3. Wall time: ``Classifier.run`` of the full policy, the adaptive one at the
   headline budget and no TTA, interleaved over rounds on the first
   ``--bench-images`` held-out images (images/s ratios measured side by
   side). The adaptive run's forwards and probabilities are checked against
   the cache simulation.

The per-view predictions are cached under results/bench_cache (git-ignored),
so a rerun skips the model runs of step 1 and 2.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import _common as C


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=C.default_data(), help="CIFAR-10 binary folder")
    p.add_argument("--weights", default=None, help="folder of resnet20-*.th (default: TTAKIT_MODELS / the zoo's)")
    p.add_argument("--n-tune", type=int, default=5000, help="tuning images (the rest of the test set is held out)")
    p.add_argument("--seed", type=int, default=0, help="seed of the tune/held-out split and of tune()")
    p.add_argument("--candidates", default="standard", help="candidate pool of tune()")
    p.add_argument("--budget", type=float, default=1.5, help="headline budget: mean forwards per input")
    p.add_argument("--budget-objective", choices=("nll", "accuracy"), nargs="+", default=["nll", "accuracy"],
                   help="what tune() chooses the stages and thresholds for (each one a table; the first: timed)")
    p.add_argument("--curve", type=float, nargs="+", default=[1.1, 1.25, 1.5, 2.0, 3.0, 4.0],
                   help="budgets of the forwards curve")
    p.add_argument("--bench-images", type=int, default=2000, help="held-out images timed")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--limit", type=int, default=None, help="use only the first N test images (smoke runs)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--out", default="results/bench/adaptive.json")
    C.add_protocol_args(p)
    return p.parse_args(argv)


def cached(cache, name: str):
    """Fill ``cache`` from results/bench_cache/NAME.npz when there, else save it after ``ensure``."""
    path = C.CACHE_DIR / f"{name}.npz"

    def load():
        if path.exists():
            with np.load(path, allow_pickle=False) as f:
                for key in f.files:
                    for v in cache_views.get(key, []):
                        cache._probs[v] = f[key]  # noqa: SLF001 (bench-only reuse of the computed predictions)

    def save():
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{repr(v): cache.view_probs(v) for v in cache.views})

    cache_views: dict = {}
    return load, save, cache_views


def main(argv=None) -> int:
    C.ensure_env()
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    import ttakit
    from ttakit import Classifier, Normalize, Policy
    from ttakit.evaluation import PredictionCache
    from ttakit.evaluation.adaptive import simulate
    from ttakit.tuning.adaptive import forwards_curve
    from ttakit.tuning.candidates import candidate_views
    from ttakit.zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet

    C.begin("adaptive TTA (ResNet-20, CIFAR-10)", args)
    x, y = C.load_cifar(args.data, "test", args.limit)
    order = np.random.default_rng(args.seed).permutation(len(y))
    ti, hi = np.sort(order[:args.n_tune]), np.sort(order[args.n_tune:])
    model = load_cifar_resnet(20, root=args.weights)
    kw = dict(preprocess=Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD), output="logits", data_layout="NHWC")
    tag = f"adaptive_r20_seed{args.seed}_n{args.n_tune}_of{len(y)}"
    caches = {}
    for part, idx in (("tune", ti), ("hold", hi)):
        cache = PredictionCache(model, x[idx], **kw)
        load, save, views = cached(cache, f"{tag}_{part}")
        for v in candidate_views(args.candidates):
            views.setdefault(repr(v), []).append(v)
        load()
        caches[part] = (cache, save)
    cache_t, cache_h = caches["tune"][0], caches["hold"][0]
    y_t, y_h = y[ti], y[hi]

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = ttakit.tune(model, x[ti], y_t, candidates=args.candidates, budget=8, seed=args.seed, cache=cache_t,
                            **kw)
    caches["tune"][1]()
    print(f"tuned in {time.perf_counter() - t0:.0f} s ({cache_t.forward_passes} forward passes run now)")
    P = full.policy
    K = len(P.unique())
    print(f"full policy: {P.spec}  [{K} forwards per input]\n{full.reason}")
    budgets = sorted(set(args.curve) | {args.budget})
    adaptive = {}
    for obj in args.budget_objective:
        for b in budgets:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = ttakit.tune(model, x[ti], y_t, candidates=args.candidates, budget=8, seed=args.seed,
                                cache=cache_t, max_forwards=b, budget_objective=obj, **kw)
            assert r.full_policy is None or r.full_policy == P
            adaptive[obj, b] = r

    hp = cache_h.stack(P.unique().views)
    idp = cache_h.view_probs(Policy.parse("identity").views[0])
    caches["hold"][1]()
    acc_id = float((idp.argmax(1) == y_h).mean())
    p_full, _ = simulate(P, hp)
    acc_full = float((p_full.argmax(1) == y_h).mean())

    def nll(p):
        return float(-np.log(np.clip(p[np.arange(len(y_h)), y_h], 1e-12, None)).mean())

    rows = []
    for (obj, b), r in adaptive.items():
        k = len(r.policy.unique())
        p, f = simulate(r.policy, hp[:k])
        acc = float((p.argmax(1) == y_h).mean())
        share = (acc - acc_id) / (acc_full - acc_id) if acc_full != acc_id else float("nan")
        rows.append({"objective": obj, "budget": b, "policy": r.policy.spec, "tune_forwards": (r.adaptive or {}).get("mean_forwards", k),
                     "holdout_forwards": float(f.mean()), "accuracy": acc, "nll": nll(p), "lift_kept": share})
    print(f"\nheld out ({len(y_h)} images): no TTA {acc_id:.2%} (NLL {nll(idp):.4f}), full policy {acc_full:.2%} "
          f"(NLL {nll(p_full):.4f}, {K} forwards), lift {100 * (acc_full - acc_id):+.2f} points")
    C.say(C.table([[r["objective"], f"{r['budget']:g}", f"{r['tune_forwards']:.3f}", f"{r['holdout_forwards']:.3f}",
                    f"{r['accuracy']:.2%}", f"{r['nll']:.4f}", f"{r['lift_kept']:.0%}", r["policy"]] for r in rows],
                  ["chosen for", "budget F", "fwd/img tune", "fwd/img held out", "accuracy", "NLL", "lift kept",
                   "policy"]))
    curve = []
    for obj in args.budget_objective:
        for c in forwards_curve(P, cache_t.stack(P.unique().views), y_t, hp, y_h, budgets, objective=obj):
            if c["kind"] == "adaptive" or obj == args.budget_objective[0]:
                curve.append({**c, "objective": obj if c["kind"] == "adaptive" else ""})
    print("\nforwards curve (held out; adaptive chosen on all tuning images):")
    C.say(C.table([[c["kind"], c["objective"], f"{c['budget']:g}", f"{c['forwards']:.3f}", f"{c['accuracy']:.2%}",
                    f"{c['nll']:.4f}"] for c in curve], ["kind", "chosen for", "budget", "fwd/img", "accuracy", "NLL"]))

    # -- wall time, side by side -------------------------------------------------------
    heads = {f"adaptive ({obj})": adaptive[obj, args.budget].policy for obj in args.budget_objective}
    xb = x[hi][:args.bench_images]
    arms = {"full": Classifier(model, P, **kw), **{n: Classifier(model, h, **kw) for n, h in heads.items()},
            "no TTA": Classifier(model, "identity", **kw)}
    res = {n: c.run(xb) for n, c in arms.items()}  # warm-up, and the check below
    gap = 0.0
    for n, head in heads.items():
        kb = len(head.unique())
        p_sim, f_sim = simulate(head, hp[:kb, :args.bench_images])
        assert np.array_equal(res[n].forwards_per_input, f_sim), "run and cache disagree on forwards"
        gap = max(gap, float(np.abs(res[n].probs - p_sim).max()))
    times = C.interleave({n: (lambda c=c: c.run(xb)) for n, c in arms.items()}, args.repeats)
    ips = {n: [len(xb) / t for t in ts] for n, ts in times.items()}
    speed = {n: C.summary(C.ratios(ips[n], ips["full"])) for n in heads}
    print(f"\nwall time on {len(xb)} held-out images, {args.repeats} interleaved rounds, {args.threads} threads:")
    for n in arms:
        print(f"  {n:20s} {np.median(ips[n]):8.0f} images/s  ({res[n].mean_forwards:.3f} forwards per image)")
    for n in heads:
        print(f"  {n} / full images/s: {C.fmt_ratio(speed[n], 2)}; forwards ratio "
              f"{res['full'].mean_forwards / res[n].mean_forwards:.2f}")
    print(f"  run vs cache max |dp| {gap:.1e}")
    C.finish(args, json_path=args.out, payload={
        "machine": C.machine(), "args": vars(args), "full_policy": P.spec, "full_forwards": K,
        "tune_reason": full.reason, "accuracy_no_tta": acc_id, "accuracy_full": acc_full, "nll_no_tta": nll(idp),
        "nll_full": nll(p_full), "adaptive": rows, "curve": curve,
        "bench": {"images": len(xb), "images_per_s": ips, "adaptive_over_full": speed,
                  "forwards": {n: r.mean_forwards for n, r in res.items()}, "max_prob_gap": gap}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
