#!/usr/bin/env python
"""Tabular TTA cost: 100,000 rows x 16 copies through ttakit.sklearn.

For each estimator (HistGradientBoosting, a random forest, an MLP and
LogisticRegression by default, all arms of all of them interleaved in one
run), on the same rows and the same
fitted estimator:

- ``tta``: ``TTAClassifier.predict_proba`` with 16 seeded noise copies (every
  copy of a chunk of rows goes to the estimator in one call, through the
  run loop: hashing, views, merge, buffers included);
- ``naive``: the loop a user writes: 16 times, augment the rows with one
  copy's view and call ``predict_proba``, then average;
- ``plain``: one ``predict_proba`` call on 16x the rows, built beforehand
  (the floor: the estimator's own cost, no augmentation at all);
- ``copies``: the 16 views written into one preallocated batch per chunk of
  4,096 rows, no model (what augmentation alone costs, whoever runs it).

The figure is the ratio tta/plain (target <= 1.2), naive/plain and
copies/plain, per round (median and min-max). The merged probabilities of
``tta`` and ``naive`` must agree (they run the same views).
"""

from __future__ import annotations

import argparse
import sys
import warnings

import _common as C


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--copies", type=int, default=16)
    p.add_argument("--estimators", nargs="+", choices=["hgb", "forest", "mlp", "logistic"],
                   default=["hgb", "forest", "mlp", "logistic"])
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write results here")
    C.add_protocol_args(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    C.ensure_env()
    warnings.filterwarnings("ignore")
    import numpy as np
    import torch
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from ttakit.policy import Policy
    from ttakit.sklearn import TTAClassifier
    from ttakit.views.rows import copies

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows, args.features))
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 + rng.normal(0, 0.5, args.rows) > 0.5).astype(int)
    make = {"hgb": lambda: HistGradientBoostingClassifier(max_iter=50, random_state=0),
            "forest": lambda: RandomForestClassifier(n_estimators=50, max_depth=12, n_jobs=args.threads,
                                                     random_state=0),
            "mlp": lambda: MLPClassifier((64, 64), max_iter=50, random_state=0),
            "logistic": lambda: LogisticRegression()}
    arms, diffs = {}, {}
    for name in args.estimators:
        clf = TTAClassifier(make[name](), views="none", random_state=0).fit(x[:20_000], y[:20_000])
        views = copies("noise", clf.stats_, 0.1, args.copies)
        clf.policy_ = Policy(views).unique()
        model = clf.estimator_
        big = np.concatenate([v(torch.from_numpy(x)).numpy() for v in views])

        def naive(model=model, views=views):
            xt = torch.from_numpy(x)
            return sum(model.predict_proba(v(xt).numpy()) for v in views) / len(views)

        def only_copies(views=views, chunk=4096):
            xt = torch.from_numpy(x)
            out = torch.empty((chunk * len(views), x.shape[1]), dtype=torch.float64)
            for s in range(0, len(x), chunk):
                c = xt[s:s + chunk].clone()
                n = len(c)
                for j, v in enumerate(views):
                    v.apply_into(c, out[j * n:(j + 1) * n])

        diffs[name] = float(np.abs(clf.predict_proba(x) - naive()).max())
        arms.update({f"{name}:tta": lambda clf=clf: clf.predict_proba(x),
                     f"{name}:naive": naive, f"{name}:plain": lambda model=model, big=big: model.predict_proba(big),
                     f"{name}:copies": only_copies})
    from threadpoolctl import threadpool_limits

    with threadpool_limits(args.threads):  # BLAS and OpenMP (HistGradientBoosting) as torch: --threads
        times = C.interleave(arms, args.repeats)
    C.begin("bench_rows: TTA of tabular estimators against one plain call", args)
    print(f"bench_rows: {args.rows} rows x {args.features} features x {args.copies} copies, "
          f"{args.threads} thread(s), {args.repeats} interleaved rounds (all arms of all estimators)")
    rows, out = [], {}
    for name in args.estimators:
        plain = times[f"{name}:plain"]
        r = {arm: C.summary(C.ratios(times[f"{name}:{arm}"], plain)) for arm in ("tta", "naive", "copies")}
        out[name] = {**{f"{arm}_over_plain": v for arm, v in r.items()}, "max_abs_diff": diffs[name],
                     "plain_seconds": C.summary(plain)}
        rows.append([name, C.fmt_ratio(r["tta"]), C.fmt_ratio(r["naive"]), C.fmt_ratio(r["copies"]),
                     f"{C.summary(plain)['median']:.3f}", f"{diffs[name]:.1e}",
                     "met" if r["tta"]["median"] <= 1.2 else "NOT met"])
    C.say(C.table(rows, ["estimator", "tta / plain", "naive / plain", "copies / plain", "plain s",
                         "max |tta-naive|", "tta <= 1.2"]))
    C.finish(args, json_path=args.json, payload={
        "benchmark": "rows", "machine": C.machine(), "args": vars(args), "seconds": times,
        "results": out})
    return 0 if max(diffs.values()) <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
