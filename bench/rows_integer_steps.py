#!/usr/bin/env python
"""Integer-coded features under row noise: three ways, on statsmodels' fair table.

The table docs' figures (docs/tables.md, "Integer-coded features"). ``fair``
(6,366 rows, ``affairs > 0`` as the label) has five integer-coded features
(ratings, religiousness, years of education, occupation codes) and three
real-valued ones. For each of 5 stratified folds, four models are fitted on
the other folds and scored on the fold (mean log-loss over the folds, lower
is better) without TTA and with 8 seeded noise copies at each strength, the
integer features treated in one of three ways:

- ``nearest``: the Gaussian step rounded to the nearest integer (ttakit
  before issue 18: small steps never move the feature);
- ``skip``: integer features left as they are;
- ``steps``: stochastic rounding, ttakit's rule (``floor(z)`` or
  ``floor(z) + 1``, the second with probability ``z - floor(z)``).

No guard: the views are applied as they are. Also printed: the share of
integer-coded cells each way moves (fold 0).

Then the search with and without a strength per feature group: each model
is fitted on three quarters of the other folds, ``TTAClassifier(prefit=True,
guard_alpha=1)`` searches on the last quarter among ``noise`` alone or
``noise + noise_numeric + noise_integer`` (default strengths), and the
chosen views are scored on the fold. A quality figure, not a speed one: it
runs anywhere (a few minutes of CPU).

    python bench/rows_integer_steps.py [--strengths 0.1,0.3,0.6]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strengths", default="0.1,0.3,0.6", help="noise strengths, comma-separated")
    p.add_argument("--copies", type=int, default=8)
    args = p.parse_args(argv)
    import statsmodels.api as sm
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import ttakit.views.rows.views as row_views
    from ttakit.views.rows import FeatureStats, copies

    data = sm.datasets.fair.load_pandas().data
    x = data.drop(columns="affairs").to_numpy()
    y = (data.affairs > 0).astype(int).to_numpy()
    steps = row_views.stochastic_round
    ways = {"nearest": lambda z, u: torch.round(z), "skip": lambda z, u: torch.zeros_like(z), "steps": steps}
    models = {"k-NN (k=25)": lambda: make_pipeline(StandardScaler(), KNeighborsClassifier(25)),
              "random forest": lambda: RandomForestClassifier(200, min_samples_leaf=3, random_state=0, n_jobs=1),
              "logistic regression": lambda: make_pipeline(StandardScaler(), LogisticRegression()),
              "gradient boosting": lambda: HistGradientBoostingClassifier(max_iter=100, random_state=0)}
    strengths = [float(s) for s in args.strengths.split(",")]
    scores: dict = {}
    moved: dict = {}
    for fold, (tr, te) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(x, y)):
        stats = FeatureStats().fit(x[tr])
        integer = stats.mask("integer")
        rows = torch.from_numpy(x[te])
        for name, make in models.items():
            model = make().fit(x[tr], y[tr])
            scores.setdefault((name, "no TTA", 0), []).append(log_loss(y[te], model.predict_proba(x[te])))
            for way, fn in ways.items():
                row_views.stochastic_round = fn  # the rule the views use for integer steps
                try:
                    for s in strengths:
                        outs = [v(rows).numpy() for v in copies("noise", stats, s, args.copies)]
                        if fold == 0:
                            moved[(way, s)] = float(np.mean([(o != x[te])[:, integer].mean() for o in outs]))
                        p = np.mean([model.predict_proba(o) for o in outs], 0)
                        scores.setdefault((name, way, s), []).append(log_loss(y[te], p))
                finally:
                    row_views.stochastic_round = steps
    print(f"fair: {len(y)} rows; integer-coded: {[c for c, r in zip(data.columns, stats.role_list) if r == 'integer']}")
    print("\nshare of integer-coded cells moved (fold 0):")
    for s in strengths:
        print(f"  strength {s}: " + ", ".join(f"{w} {moved[(w, s)]:.1%}" for w in ways))
    print("\nmean log-loss over 5 folds (lower is better):\n")
    print("| model | strength | " + " | ".join(ways) + " |")
    print("|---|---|" + "---|" * len(ways))
    for name in models:
        print(f"| {name} (no TTA {np.mean(scores[(name, 'no TTA', 0)]):.4f}) | | | | |")
        for s in strengths:
            print(f"| | {s} | " + " | ".join(f"{np.mean(scores[(name, w, s)]):.4f}" for w in ways) + " |")
    search(x, y, models)
    return 0


def search(x, y, models) -> None:
    """The second table of the module doc: the search with per-group candidates."""
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    from ttakit.sklearn import TTAClassifier

    pools = ["noise", "noise+noise_numeric+noise_integer"]
    scores: dict = {}
    for fold, (tr, te) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(x, y)):
        fit, tune = tr[: int(0.75 * len(tr))], tr[int(0.75 * len(tr)):]
        for name, make in models.items():
            model = make().fit(x[fit], y[fit])
            scores.setdefault((name, "no TTA"), []).append(log_loss(y[te], model.predict_proba(x[te])))
            for pool in pools:
                clf = TTAClassifier(model, prefit=True, views=pool, guard_alpha=1.0, random_state=fold)
                clf.fit(x[tune], y[tune])
                scores.setdefault((name, pool), []).append(log_loss(y[te], clf.predict_proba(x[te])))
                chosen = ", ".join(f"{f}({s})" for f, s in (clf.candidates_[k] for k in clf.search_.chosen))
                scores.setdefault((name, pool, "chosen"), []).append(chosen or "none")
    print("\nthe search (guard_alpha=1) with noise alone, or with noise per feature group too; mean log-loss:\n")
    print("| model | no TTA | " + " | ".join(pools) + " |")
    print("|---|---|" + "---|" * len(pools))
    for name in models:
        print(f"| {name} | {np.mean(scores[(name, 'no TTA')]):.4f} | "
              + " | ".join(f"{np.mean(scores[(name, p)]):.4f}" for p in pools) + " |")
    for name in models:
        print(f"  {name}, chosen per fold with groups: {'; '.join(scores[(name, pools[1], 'chosen')])}")


if __name__ == "__main__":
    raise SystemExit(main())
