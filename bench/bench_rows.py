#!/usr/bin/env python
"""Tabular TTA cost: 100,000 rows x 16 copies through ttakit.sklearn.

Three arms on the same rows and the same fitted estimator, interleaved:

- ``tta``: ``TTAClassifier.predict_proba`` with 16 seeded noise copies (every
  copy of a chunk of rows goes to the estimator in one call, through the
  run loop: hashing, views, merge, buffers included);
- ``naive``: the loop a user writes: 16 times, augment the rows with one
  copy's view and call ``predict_proba``, then average;
- ``plain``: one ``predict_proba`` call on 16x the rows, built beforehand
  (the floor: the estimator's own cost, no augmentation at all).

The figure is the ratio tta/plain (target <= 1.2) and naive/plain, per round
(median and min-max). The merged probabilities of ``tta`` and ``naive`` must
agree (they run the same views).
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
    p.add_argument("--estimator", choices=["hgb", "logistic"], default="hgb")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write results here")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    C.ensure_env()
    warnings.filterwarnings("ignore")
    import numpy as np
    import torch
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    from ttakit.policy import Policy
    from ttakit.sklearn import TTAClassifier
    from ttakit.views.rows import copies

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows, args.features))
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 + rng.normal(0, 0.5, args.rows) > 0.5).astype(int)
    est = (HistGradientBoostingClassifier(max_iter=50, random_state=0) if args.estimator == "hgb"
           else LogisticRegression())
    clf = TTAClassifier(est, views="none", random_state=0).fit(x[:20_000], y[:20_000])
    views = copies("noise", clf.stats_, 0.1, args.copies)
    clf.policy_ = Policy(views).unique()
    model = clf.estimator_
    big = np.concatenate([v(torch.from_numpy(x)).numpy() for v in views])

    def tta():
        return clf.predict_proba(x)

    def naive():
        xt = torch.from_numpy(x)
        return sum(model.predict_proba(v(xt).numpy()) for v in views) / len(views)

    def plain():
        return model.predict_proba(big)

    diff = float(np.abs(tta() - naive()).max())
    times = C.interleave({"tta": tta, "naive": naive, "plain": plain}, args.repeats)
    r_tta = C.summary(C.ratios(times["tta"], times["plain"]))
    r_naive = C.summary(C.ratios(times["naive"], times["plain"]))
    print(f"bench_rows: {args.rows} rows x {args.features} features x {args.copies} copies, {args.estimator}, "
          f"{args.threads} thread(s), {args.repeats} interleaved rounds")
    print(C.table([["tta / plain", C.fmt_ratio(r_tta)], ["naive / plain", C.fmt_ratio(r_naive)],
                   ["plain (s, median)", f"{C.summary(times['plain'])['median']:.3f}"]],
                  ["ratio", "median (min-max)"]))
    print(f"max |tta - naive| of merged probabilities: {diff:.2e}; target tta/plain <= 1.2: "
          f"{'met' if r_tta['median'] <= 1.2 else 'NOT met'}")
    C.write_json(args.json, {"benchmark": "rows", "machine": C.machine(), "args": vars(args), "seconds": times,
                             "tta_over_plain": r_tta, "naive_over_plain": r_naive, "max_abs_diff": diff})
    return 0 if diff <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
