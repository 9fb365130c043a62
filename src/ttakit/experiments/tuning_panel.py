"""The tuning panel: does ``tune`` keep the gain where TTA helps and never
lose where it hurts, on many (model, data) cases and random splits?

For each case, every candidate view runs once over a fixed pool of inputs
(the cache, kept on disk between runs); each split draws a random tuning
set of ``n`` inputs from the pool, tunes on it (no model runs: the cached
predictions), and scores the tuned policy on the rest of the pool (held
out). Per case it reports:

- the **oracle gain**: the greedy search run on the held-out inputs
  themselves, the best held-out accuracy of its prefixes minus no TTA's (an
  optimistic ceiling: what the pool can give on those inputs);
- the **kept gain**: the tuned policy's held-out accuracy minus no TTA's
  (mean and worst split), and the share of the oracle's;
- the number of splits worse than no TTA by more than 0.2 points, and the
  fall-back rate;
- for the CIFAR models at 1,000 tuning images, the adaptive policy at 1.5
  forwards per input (``tune(max_forwards=1.5)``): the share of the full
  tuned policy's held-out gain it keeps, with a bootstrap CI over splits
  and inputs.

Cases: the zoo ResNet-20 and ResNet-32 and the tutorial CNN (trained here
in PyTorch, seeded) on CIFAR-10 test images, at 500, 1,000 and 2,000
tuning images, standard pool (38 views); scikit-learn's digits with a
logistic regression fitted on the first 898 images and the standard pool
(whose shifts hurt 8x8 digits), 450 tuning / 449 held out, 300 splits; a
segmentation and a detection case
(:mod:`ttakit.experiments.tuning_panel_dense`).
``ttakit reproduce tuning-panel`` runs it and writes
``docs/results/tuning-panel.md``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..evaluation.adaptive import simulate
from ..tuning.candidates import candidate_views
from ..tuning.tune import search_path, tune_cached
from .tuning_panel_dense import DENSE_CASES, render_dense, run_dense

#: splits worse than no TTA by more than this many accuracy points count as losses
LOSS_POINTS = 0.2
IMAGE_CASES = ("resnet20", "resnet32", "tutorial")


@dataclass
class PanelConfig:
    cases: tuple = ("resnet20", "resnet32", "tutorial", "digits", "tables", "segmentation", "detection")
    sizes: tuple = (500, 1000, 2000)
    splits: int = 20
    digits_splits: int = 300
    pool_images: int = 5000            #: CIFAR-10 test images in the pool (seeded subset)
    candidates: str = "standard"
    budget: int = 8
    adaptive_size: int = 1000
    max_forwards: float = 1.5
    seed: int = 0
    data: str | None = None
    weights: str | None = None
    cache_dir: str | None = None
    out: str = "docs/results/tuning-panel"
    tune_kwargs: dict = field(default_factory=dict)
    conformal_models: tuple = ("resnet20", "resnet32")
    shared: str = "../shared"          #: the folder holding data/ and models/ of the dense cases


def _cache_dir(cfg: PanelConfig) -> Path:
    root = cfg.cache_dir or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                                         "ttakit", "panel")
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p


def _cifar_pool(cfg: PanelConfig):
    from ..datasets import cifar10

    test = cifar10(cfg.data, split="test", download=False, progress=False)
    idx = np.sort(np.random.default_rng(cfg.seed).permutation(len(test.labels))[:cfg.pool_images])
    return test.images[idx], test.labels[idx].astype(np.int64)


def _image_model(name: str, cfg: PanelConfig, log):
    from ..models import Normalize

    if name.startswith("resnet"):
        from ..zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet

        return load_cifar_resnet(int(name[6:]), root=cfg.weights), {
            "preprocess": Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD), "output": "logits"}
    if name == "tutorial":
        import torch

        from ..datasets import cifar10
        from ..zoo.tutorial_cnn import train_tutorial_cnn_torch, tutorial_cnn_torch

        train = cifar10(cfg.data, split="train", download=False, progress=False)
        torch.manual_seed(cfg.seed)
        log(f"training the tutorial CNN in PyTorch (seed {cfg.seed}, 3 epochs)")
        model = train_tutorial_cnn_torch(tutorial_cnn_torch(), train.images, train.labels, epochs=3,
                                         seed=cfg.seed, progress=False)
        return model, {"output": "probs"}
    raise InputError(f"unknown panel model {name!r}")


def _digits(cfg: PanelConfig):
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]      # (1797, 8, 8, 1) in [0, 1]
    y = d.target.astype(np.int64)
    model = LogisticRegression(max_iter=2000).fit(x[:898].reshape(898, -1), y[:898])
    return model, x[898:], y[898:], {"output": "probs"}


def case_cache(name: str, cfg: PanelConfig, log=print) -> tuple[np.ndarray, np.ndarray, list]:
    """``(probs (K, N, C), labels (N,), pool views)`` of a case, computed
    once and kept in the cache folder."""
    from ..tasks.cache import PredictionCache

    pool = candidate_views(cfg.candidates)
    key = f"{name}-{cfg.candidates}-{cfg.pool_images if name in IMAGE_CASES else 'all'}-s{cfg.seed}.npz"
    path = _cache_dir(cfg) / key
    if path.exists():
        z = np.load(path, allow_pickle=False)
        if list(z["views"]) == [repr(v) for v in pool]:
            return z["probs"], z["labels"], pool
    t0 = time.perf_counter()
    if name in IMAGE_CASES:
        x, y = _cifar_pool(cfg)
        model, kw = _image_model(name, cfg, log)
    elif name == "digits":
        model, x, y, kw = _digits(cfg)
    else:
        raise InputError(f"unknown panel case {name!r}; cases: {', '.join(IMAGE_CASES + ('digits',))}")
    cache = PredictionCache(model, x, data_layout="NHWC", progress=False, **kw)
    cache.ensure(pool)
    probs = cache.stack(pool).astype(np.float32)
    log(f"{name}: {len(pool)} views x {len(y)} inputs in {time.perf_counter() - t0:.0f} s")
    np.savez(path, probs=probs, labels=y, views=np.array([repr(v) for v in pool]))
    return probs, y, pool


def _policy_probs(policy, pool, probs, idx):
    """Held-out probabilities and forwards of a tuned (plain or adaptive) policy."""
    uniq = policy.unique()
    ids = [pool.index(v) for v in uniq.views]
    return simulate(policy, probs[ids][:, idx])


def run_split(probs, y, pool, n_tune: int, split_seed: int, cfg: PanelConfig, adaptive: bool = False) -> dict:
    """One random split of a case: tune on ``n_tune`` inputs, score on the rest."""
    rng = np.random.default_rng(split_seed)
    perm = rng.permutation(len(y))
    t, h = np.sort(perm[:n_tune]), np.sort(perm[n_tune:])
    p64 = probs.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = tune_cached(p64[:, t], y[t], pool, budget=cfg.budget, seed=split_seed,
                          max_forwards=cfg.max_forwards if adaptive else None, crossfit_adaptive=False,
                          **cfg.tune_kwargs)
    ok_id = p64[0, h].argmax(1) == y[h]
    full = res.full_policy or res.policy
    p_full, _ = _policy_probs(full, pool, p64, h)
    ok_full = p_full.argmax(1) == y[h]
    path, _ = search_path(p64[:, h], y[h], cfg.budget, "nll", "mean")
    oracle = max(float((p64[path[:k], :][:, h].mean(0).argmax(1) == y[h]).mean()) for k in range(1, len(path) + 1))
    out = {"seed": split_seed, "n_tune": n_tune, "n_held": len(h), "identity": float(ok_id.mean()),
           "tuned": float(ok_full.mean()), "oracle": oracle, "fell_back": bool(res.fell_back),
           "policy": full.spec, "views": len(full.unique())}
    if adaptive and res.full_policy is not None:
        p_ad, fwd = _policy_probs(res.policy, pool, p64, h)
        out["adaptive"] = {"accuracy": float((p_ad.argmax(1) == y[h]).mean()), "forwards": float(fwd.mean()),
                           "ok": (p_ad.argmax(1) == y[h]).tolist(), "ok_full": ok_full.tolist(),
                           "ok_id": ok_id.tolist(), "policy": res.policy.spec}
    return out


def summarise_case(name: str, n_tune: int, rows: list[dict]) -> dict:
    id_acc = np.array([r["identity"] for r in rows])
    kept = (np.array([r["tuned"] for r in rows]) - id_acc) * 100
    oracle = (np.array([r["oracle"] for r in rows]) - id_acc) * 100
    s = {"case": name, "n_tune": n_tune, "splits": len(rows), "n_held": rows[0]["n_held"],
         "identity": float(id_acc.mean() * 100), "oracle_gain": float(oracle.mean()),
         "kept_gain": float(kept.mean()), "kept_worst": float(kept.min()), "kept_best": float(kept.max()),
         "share": float(kept.mean() / oracle.mean()) if oracle.mean() > 0 else float("nan"),
         "losses": int((kept < -LOSS_POINTS - 1e-9).sum()), "fall_back_rate": float(np.mean([r["fell_back"]
                                                                                               for r in rows])),
         "mean_views": float(np.mean([r["views"] for r in rows]))}
    ad = [r["adaptive"] for r in rows if "adaptive" in r]
    if ad:
        from ..tuning.tune import gain_kept

        ok = np.concatenate([a["ok"] for a in ad])
        ok_full = np.concatenate([a["ok_full"] for a in ad])
        ok_id = np.concatenate([a["ok_id"] for a in ad])
        share, lo, hi = gain_kept(ok, ok_full, ok_id)
        s["adaptive"] = {"share": share, "ci": [lo, hi], "forwards": float(np.mean([a["forwards"] for a in ad])),
                         "max_forwards": None, "splits": len(ad)}
    return s


#: the table cases: (data set, model family) from the tabular study's offline data
TABLE_CASES = (("breast_cancer", "knn"), ("wine", "knn"), ("penguins_species", "forest"),
               ("seattle_weather", "forest"), ("breast_cancer", "logistic"))
#: a table split counts as a loss when TTA's held-out log-loss exceeds no TTA's by more than this (relative)
TABLE_LOSS_RELATIVE = 0.01


def run_table_case(dataset: str, family: str, splits: int = 20, folds: int = 5, seed: int = 0) -> dict:
    """Repeated stratified k-fold (``splits`` test folds in all) of one table
    and model family: ``TTAClassifier`` with the guard and without it
    (``guard_alpha=1``: every prefix passes the loss test, the search's
    best is kept), scored on each test fold against the estimator alone."""
    from sklearn.model_selection import StratifiedKFold

    from ..evaluation.rows import classification_scores
    from ..sklearn import TTAClassifier
    from .tabular import load, make_model

    x, y = load(dataset)
    rows = []
    for r in range(max(1, splits // folds)):
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed + r).split(x, y):
            out = {}
            for arm, alpha in (("guarded", None), ("unguarded", 1.0)):
                kw = {} if alpha is None else {"guard_alpha": alpha}
                meta = TTAClassifier(make_model(family, False, seed + r), random_state=seed + r, **kw)
                meta.fit(x[train], y[train])
                labels = np.searchsorted(meta.classes_, y[test])
                base = classification_scores(meta.estimator_.predict_proba(x[test]), labels)
                tta = classification_scores(meta.predict_proba(x[test]), labels)
                out[arm] = {"log_loss": tta["log_loss"] - base["log_loss"], "base_log_loss": base["log_loss"],
                            "accuracy": tta["accuracy"] - base["accuracy"], "fell_back": bool(meta.fell_back_)}
            rows.append(out)
    g = np.array([r["guarded"]["log_loss"] for r in rows])
    u = np.array([r["unguarded"]["log_loss"] for r in rows])
    base = np.array([r["guarded"]["base_log_loss"] for r in rows])
    from ..evaluation.paired import mean_ci

    um, ulo, uhi = mean_ci(u)
    gm, glo, ghi = mean_ci(g)
    return {"case": f"{dataset} / {family}", "splits": len(rows),
            "unguarded": {"log_loss": um, "ci": [ulo, uhi]}, "guarded": {"log_loss": gm, "ci": [glo, ghi]},
            "unguarded_helps": bool(uhi < 0), "fall_back_rate": float(np.mean([r["guarded"]["fell_back"]
                                                                                 for r in rows])),
            "guarded_losses": int((g > TABLE_LOSS_RELATIVE * base).sum()),
            "guarded_accuracy_losses": int(sum(r["guarded"]["accuracy"] < -LOSS_POINTS / 100 - 1e-9 for r in rows)),
            "base_log_loss": float(base.mean()), "rows": rows}


def conformal_coverage(probs: np.ndarray, y: np.ndarray, splits: int = 20, seed: int = 0) -> dict:
    """Coverage and set size of LAC, APS and RAPS with their default
    arguments at a 90% target, over ``splits`` random halves of the pool
    (calibrate on one half, measure on the other), without TTA."""
    from ..conformal import repeated_splits

    out = {}
    for method in ("lac", "aps", "raps"):
        r = repeated_splits({"no TTA": probs.astype(np.float64)}, y, method=method, alpha=0.1, splits=splits,
                            seed=seed)["results"]["no TTA"]
        out[method] = {"coverage": r["coverage"], "mean_size": r["mean_size"]["mean"]}
    return out


def run(cfg: PanelConfig, log=print) -> dict:
    t0 = time.perf_counter()
    cases, tables, conformal, dense = [], [], {}, []
    for name in cfg.cases:
        if name in DENSE_CASES:
            dense.append(run_dense(name, cfg, _cache_dir(cfg), log))
            continue
        if name == "tables":
            for dataset, family in TABLE_CASES:
                t1 = time.perf_counter()
                r = run_table_case(dataset, family, cfg.splits, seed=cfg.seed)
                r["seconds"] = time.perf_counter() - t1
                tables.append(r)
                log(f"{r['case']}: unguarded {r['unguarded']['log_loss']:+.4f} [{r['unguarded']['ci'][0]:+.4f}, "
                    f"{r['unguarded']['ci'][1]:+.4f}], guarded {r['guarded']['log_loss']:+.4f}, fell back "
                    f"{r['fall_back_rate']:.0%}, losses {r['guarded_losses']}")
            continue
        probs, y, pool = case_cache(name, cfg, log)
        if name in cfg.conformal_models:
            conformal[name] = conformal_coverage(probs[0], y, cfg.splits, cfg.seed)
        sizes = cfg.sizes if name in IMAGE_CASES else (450,)
        splits = cfg.splits if name in IMAGE_CASES else cfg.digits_splits
        for n_tune in sizes:
            if n_tune >= len(y):
                continue
            adaptive = name in IMAGE_CASES and n_tune == cfg.adaptive_size
            t1 = time.perf_counter()
            rows = [run_split(probs, y, pool, n_tune, 1000 * (cfg.seed + 1) + s, cfg, adaptive)
                    for s in range(splits)]
            summ = summarise_case(name, n_tune, rows)
            if "adaptive" in summ:
                summ["adaptive"]["max_forwards"] = cfg.max_forwards
            summ["seconds"] = time.perf_counter() - t1
            summ["rows"] = [{k: v for k, v in r.items() if k != "adaptive"} for r in rows]
            cases.append(summ)
            log(_line(summ))
    return {"config": {k: v for k, v in cfg.__dict__.items() if k not in ("cache_dir",)}, "cases": cases,
            "tables": tables, "conformal": conformal, "dense": dense, "seconds": time.perf_counter() - t0}


def _line(s: dict) -> str:
    line = (f"{s['case']:>9} n={s['n_tune']:<5} identity {s['identity']:.2f}%  oracle {s['oracle_gain']:+.2f}  "
            f"kept {s['kept_gain']:+.2f} (worst {s['kept_worst']:+.2f})  share {s['share']:.0%}  "
            f"losses {s['losses']}/{s['splits']}  fell back {s['fall_back_rate']:.0%}  views {s['mean_views']:.1f}")
    if "adaptive" in s:
        a = s["adaptive"]
        line += f"  adaptive {a['share']:.0%} [{a['ci'][0]:.0%}, {a['ci'][1]:.0%}] at {a['forwards']:.2f} fwd"
    return line


def headline(result: dict) -> dict:
    """The issue's targets, measured: mean share of the oracle gain kept at
    1,000 tuning images over the cases whose oracle gain exceeds 0.5 points,
    splits worse than no TTA by more than 0.2 points, adaptive shares."""
    at = [c for c in result["cases"] if c["n_tune"] == 1000 and c["oracle_gain"] > 0.5]
    return {"share_at_1000": float(np.mean([c["share"] for c in at])) if at else float("nan"),
            "cases_at_1000": [c["case"] for c in at],
            "losses": sum(c["losses"] for c in [*result["cases"], *result.get("dense", [])]),
            "splits": sum(c["splits"] for c in [*result["cases"], *result.get("dense", [])])}


def render(result: dict) -> str:
    cfg = result["config"]
    h = headline(result)
    lines = ["# The tuning panel: does `tune` keep the gain and never lose?", "",
             "Command: `ttakit reproduce tuning-panel` (cached per-view predictions are kept in "
             "`~/.cache/ttakit/panel`; the first run computes them, a few minutes per CIFAR model on 2 cores).", "",
             f"Each case: a pool of inputs, every candidate view of the `{cfg['candidates']}` pool run once; each "
             f"split draws a random tuning set, runs `ttakit.tune` on it (budget {cfg['budget']}, 5-fold cross-fitted "
             "guard, defaults otherwise) and scores the tuned policy on the rest of the pool. *Oracle*: the greedy "
             "search run on the held-out inputs themselves, the best held-out accuracy of its prefixes (an "
             "optimistic ceiling). *Kept*: the tuned policy's held-out accuracy minus no TTA's. *Losses*: splits "
             f"worse than no TTA by more than {LOSS_POINTS} points. Accuracy points throughout.", "",
             f"**Headline.** At 1,000 tuning images, over the cases whose oracle gain exceeds 0.5 points "
             f"({', '.join(h['cases_at_1000'])}), the tuned policies keep **{h['share_at_1000']:.1%}** of the oracle "
             f"gain on average; **{h['losses']} of {h['splits']}** splits are worse than no TTA by more than "
             f"{LOSS_POINTS} points (of accuracy, or of the dense case's metric x 100).", "",
             "| case | tuning images | held out | splits | no TTA | oracle gain | kept gain (mean) | worst split "
             "| share of oracle | losses | fell back | views |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in result["cases"]:
        lines.append(f"| {c['case']} | {c['n_tune']} | {c['n_held']} | {c['splits']} | {c['identity']:.2f}% | "
                     f"{c['oracle_gain']:+.2f} | {c['kept_gain']:+.2f} | {c['kept_worst']:+.2f} | "
                     f"{c['share']:.0%} | {c['losses']} | {c['fall_back_rate']:.0%} | {c['mean_views']:.1f} |")
    ad = [c for c in result["cases"] if "adaptive" in c]
    if ad:
        lines += ["", f"## Adaptive: at most {ad[0]['adaptive']['max_forwards']:g} forwards per input", "",
                  "`tune(max_forwards=1.5)` on the same splits; held-out share of the full tuned policy's "
                  "accuracy gain that the adaptive version keeps (pooled over splits, 95% bootstrap CI over "
                  "splits' inputs), and its mean forwards per held-out input.", "",
                  "| case | tuning images | share of the full policy's gain kept [95% CI] | forwards per input |",
                  "|---|---:|---:|---:|"]
        for c in ad:
            a = c["adaptive"]
            lines.append(f"| {c['case']} | {c['n_tune']} | {a['share']:.0%} [{a['ci'][0]:.0%}, {a['ci'][1]:.0%}] "
                         f"| {a['forwards']:.2f} |")
    if result.get("tables"):
        lines += ["", "## Tables", "",
                  "`TTAClassifier` with its defaults (views tuned on cross-fitted clones, guarded) against the "
                  "same estimator alone, and the same search without the guard (`guard_alpha=1`), on "
                  f"{result['tables'][0]['splits']} test folds (5-fold x 4 repeats). Change in held-out log-loss "
                  "(lower is better) with a t-interval over folds; *losses*: folds where the guarded result's "
                  f"log-loss exceeds no TTA's by more than {TABLE_LOSS_RELATIVE:.0%} of it (and, in brackets, "
                  f"accuracy worse by more than {LOSS_POINTS} points).", "",
                  "| data / model | no TTA log-loss | unguarded change [95% CI] | guarded change [95% CI] "
                  "| unguarded helps | guard fell back | losses |", "|---|---:|---:|---:|---|---:|---:|"]
        for t in result["tables"]:
            u, g = t["unguarded"], t["guarded"]
            lines.append(f"| {t['case']} | {t['base_log_loss']:.4f} | {u['log_loss']:+.4f} [{u['ci'][0]:+.4f}, "
                         f"{u['ci'][1]:+.4f}] | {g['log_loss']:+.4f} [{g['ci'][0]:+.4f}, {g['ci'][1]:+.4f}] | "
                         f"{'yes' if t['unguarded_helps'] else 'no'} | {t['fall_back_rate']:.0%} | "
                         f"{t['guarded_losses']} ({t['guarded_accuracy_losses']}) |")
    if result.get("conformal"):
        lines += ["", "## Conformal sets with default arguments", "",
                  "`SplitConformal(method, alpha=0.1)` with nothing else set, on each model's no-TTA "
                  "probabilities of the pool, calibrated on a random half and measured on the other, "
                  f"{cfg['splits']} splits.", "",
                  "| model | method | coverage mean | min - max | mean set size |", "|---|---|---:|---:|---:|"]
        for m, by in result["conformal"].items():
            for meth, r in by.items():
                cv = r["coverage"]
                lines.append(f"| {m} | {meth.upper()} | {cv['mean']:.2%} | {cv['min']:.2%} - {cv['max']:.2%} | "
                             f"{r['mean_size']:.2f} |")
    if result.get("dense"):
        lines += render_dense(result["dense"])
    lines += ["", f"Run time: {result['seconds'] / 60:.0f} min.", ""]
    return "\n".join(lines)


def write(result: dict, out) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    slim = {**result, "cases": [{k: v for k, v in c.items() if k != "rows"} for c in result["cases"]],
            "tables": [{k: v for k, v in t.items() if k != "rows"} for t in result.get("tables", [])],
            "dense": [{k: v for k, v in c.items() if k != "rows"} for c in result.get("dense", [])]}
    (out / "panel.json").write_text(json.dumps(slim, indent=1, default=float) + "\n")
    (out.parent / f"{out.name}.md").write_text(render(result))
    return out


__all__ = ["PanelConfig", "run", "run_split", "summarise_case", "case_cache", "write", "render", "headline",
           "run_table_case", "conformal_coverage", "LOSS_POINTS", "TABLE_CASES"]
