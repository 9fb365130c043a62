"""``ttakit reproduce shift``: the zoo CIFAR ResNets under the CIFAR-10-C
corruptions (made by :mod:`ttakit.shift`), with views, test-time
adaptation (:mod:`ttakit.adapt`) and both, paired against no TTA.

Protocol: ``n_images`` test images drawn by ``seed``; each corruption at each
severity applied to all of them (seeded); every method predicts the stream
in one call with chunks of ``batch_size`` images (the adaptation's stream is
the call's). Error per corruption and severity; per severity the mean over
corruptions with a 95% paired bootstrap CI of its difference to no TTA
(resampling images: an image's error is its mean over corruptions)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

#: (name, policy, adaptation); MEMO runs on the first ``memo_images`` images only
METHODS = {
    "none": ("identity", None),
    "views": ("identity + hflip", None),
    "norm": ("identity", "norm"),
    "norm+views": ("identity + hflip", "norm"),
    "tent": ("identity", "tent"),
    "tent+views": ("identity + hflip", "tent"),
    "memo": ("hflips * (identity + shift(dx=[-2, 2]) + shift(dy=[-2, 2]))", "memo"),
}
DEFAULT_METHODS = ("none", "views", "norm", "norm+views", "tent", "memo")


@dataclass
class ShiftConfig:
    depths: tuple = (20, 32)
    corruptions: tuple = ()          #: default: ttakit.shift.PROTOCOL (the issue's nine)
    severities: tuple = (1, 3, 5)
    methods: tuple = DEFAULT_METHODS
    n_images: int = 2000
    memo_images: int = 200
    batch_size: int = 200
    seed: int = 0
    n_boot: int = 1000
    weights: str | None = None
    data: str | None = None
    out: str = "results/shift"
    docs: str | None = None          #: also write the report here (docs/results/shift.md)
    extra: dict = field(default_factory=dict)


def run(cfg: ShiftConfig, log=print) -> dict:
    from ..tasks.classification import Classifier
    from ..datasets import cifar10
    from ..models import Normalize
    from ..shift import PROTOCOL, corrupt
    from ..zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet

    test = cifar10(cfg.data, split="test", download=True, progress=False)
    idx = np.random.default_rng(cfg.seed).permutation(len(test.labels))[:cfg.n_images]
    x, y = test.images[idx], test.labels[idx]
    corruptions = tuple(cfg.corruptions) or PROTOCOL
    pre = Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD)
    cells = [("clean", 0)] + [(c, s) for s in cfg.severities for c in corruptions]
    results = {"config": asdict(cfg), "corruptions": list(corruptions), "models": {}}
    data_cache: dict = {}
    for depth in cfg.depths:
        model = load_cifar_resnet(depth, root=cfg.weights)
        per = {m: {"correct": {}, "seconds": 0.0, "images": 0} for m in cfg.methods}
        for k, (name, sev) in enumerate(cells):
            if (name, sev) not in data_cache:
                data_cache[(name, sev)] = x if sev == 0 else corrupt(x, name, sev, seed=cfg.seed + 1000 * k)
            xs = data_cache[(name, sev)]
            line = []
            for m in cfg.methods:
                policy, adapt = METHODS[m]
                n = cfg.memo_images if m == "memo" else len(y)
                clf = Classifier(model, policy, data_layout="NHWC", preprocess=pre, output="logits",
                                 batch_size=cfg.batch_size, adapt=adapt)
                t0 = time.perf_counter()
                pred = clf.predict(xs[:n])
                per[m]["seconds"] += time.perf_counter() - t0
                per[m]["images"] += n
                per[m]["correct"][f"{name}/{sev}"] = (pred == y[:n]).tolist()
                line.append(f"{m} {100 * (1 - np.mean(pred == y[:n])):.1f}")
            log(f"ResNet-{depth} {name} {sev}: " + ", ".join(line))
        results["models"][f"resnet{depth}"] = per
    results["summary"] = summarise(results, cfg)
    return results


def summarise(results: dict, cfg: ShiftConfig) -> dict:
    """Per model, method and severity (0: clean): mean error over
    corruptions, and the paired difference to ``none`` with its CI."""
    from ..evaluation.paired import bootstrap_ci

    out = {}
    for model, per in results["models"].items():
        rows = {}
        for m, r in per.items():
            sev_rows = {}
            for sev in [0] + list(cfg.severities):
                keys = ["clean/0"] if sev == 0 else [f"{c}/{sev}" for c in results["corruptions"]]
                own = np.array([r["correct"][k] for k in keys], dtype=float)   # (corruptions, n)
                n = own.shape[1]
                base = np.array([per["none"]["correct"][k][:n] for k in keys], dtype=float) \
                    if "none" in per else None
                err = 100 * (1 - own.mean())
                row = {"error": err, "n": n}
                if base is not None and m != "none":
                    diff = 100 * ((1 - own.mean(0)) - (1 - base.mean(0)))   # per image, error points
                    lo, hi = bootstrap_ci(diff, n_boot=cfg.n_boot, seed=cfg.seed)
                    row.update(diff=float(diff.mean()), ci=(lo, hi))
                sev_rows[sev] = row
            rows[m] = {"severities": sev_rows, "ms_per_image": 1000 * r["seconds"] / max(r["images"], 1)}
        out[model] = rows
    return out


def render(results: dict) -> str:
    cfg = results["config"]
    sevs = [0] + list(cfg["severities"])
    head = "| method | " + " | ".join("clean" if s == 0 else f"severity {s}" for s in sevs) + " | ms/image |"
    sep = "|---" * (len(sevs) + 2) + "|"
    parts = []
    for model, rows in results["summary"].items():
        lines = [f"### {model.replace('resnet', 'ResNet-')}", "", head, sep]
        for m, r in rows.items():
            cells = []
            for s in sevs:
                c = r["severities"][s]
                txt = f"{c['error']:.2f}"
                if "diff" in c:
                    txt += f" ({c['diff']:+.2f} [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}])"
                cells.append(txt)
            name = m + (f" ({r['severities'][0]['n']} images)" if m == "memo" else "")
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['ms_per_image']:.2f} |")
        per_corr = _per_corruption(results, model)
        parts.append("\n".join(lines) + "\n\n" + per_corr)
    return "\n\n".join(parts)


def _per_corruption(results: dict, model: str) -> str:
    cfg = results["config"]
    worst = max(cfg["severities"])
    per = results["models"][model]
    head = "| method | " + " | ".join(results["corruptions"]) + " |"
    lines = [f"Error (%) per corruption at severity {worst}:", "", head, "|---" * (len(results["corruptions"]) + 1)
             + "|"]
    for m, r in per.items():
        errs = [100 * (1 - np.mean(r["correct"][f"{c}/{worst}"])) for c in results["corruptions"]]
        lines.append(f"| {m} | " + " | ".join(f"{e:.1f}" for e in errs) + " |")
    return "\n".join(lines)


def command(cfg: ShiftConfig) -> str:
    d = ShiftConfig()
    parts = ["ttakit reproduce shift"]
    if tuple(cfg.depths) != d.depths:
        parts += [f"--depth {v}" for v in cfg.depths]
    if tuple(cfg.severities) != d.severities:
        parts.append("--severities " + ",".join(map(str, cfg.severities)))
    if tuple(cfg.corruptions):
        parts.append("--corruptions " + ",".join(cfg.corruptions))
    if tuple(cfg.methods) != d.methods:
        parts.append("--methods " + ",".join(cfg.methods))
    for k in ("n_images", "memo_images", "batch_size", "seed"):
        if getattr(cfg, k) != getattr(d, k):
            parts.append(f"--{k.replace('_', '-')} {getattr(cfg, k)}")
    return " ".join(parts)


def plot(results: dict, path: Path) -> Path | None:
    """Error against severity, one line per method, one panel per model (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    summary = results["summary"]
    sevs = [0] + list(results["config"]["severities"])
    fig, axes = plt.subplots(1, len(summary), figsize=(5 * len(summary), 4), squeeze=False)
    for ax, (model, rows) in zip(axes[0], summary.items()):
        for m, r in rows.items():
            ax.plot(sevs, [r["severities"][s]["error"] for s in sevs], marker="o", label=m)
        ax.set_title(model.replace("resnet", "ResNet-"))
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel("error (%), mean over corruptions")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write(results: dict, out: str, docs: str | None = None) -> Path:
    from ..shift import NOT_AVAILABLE

    cfg = ShiftConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in results["config"].items()})
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shift.json").write_text(json.dumps(results, default=float))
    targets = [folder / "shift.md"] + ([Path(docs)] if docs else [])
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        image = plot(results, target.with_suffix(".png"))
        methods = "; ".join(f"*{m}*: policy `{METHODS[m][0]}`, adapt={METHODS[m][1] or 'none'}"
                            for m in results["summary"][next(iter(results["summary"]))])
        text = "\n".join([
            "# Predictions under distribution shift: views, test-time adaptation, both",
            "",
            f"Command: `{command(cfg)}`",
            "",
            f"{cfg.n_images} CIFAR-10 test images drawn with seed {cfg.seed} (the JPEG-decoded copy in "
            "../shared); the corruptions of CIFAR-10-C made by `ttakit.shift` with Hendrycks & Dietterich's CIFAR "
            f"parameters ({', '.join(results['corruptions'])}); every method predicts each stream in one call, "
            f"in chunks of {cfg.batch_size} images (an adaptation's stream is the call's). Not made: "
            + "; ".join(f"{k} ({v})" for k, v in NOT_AVAILABLE.items()) + ".",
            "",
            f"Methods: {methods}.",
            "",
            "Cells: error (%) averaged over the corruptions; in brackets the paired difference to *none* in "
            "error points and its 95% bootstrap CI over images (an image's error is its mean over the "
            "corruptions). *ms/image*: wall time of the predictions over all cells (not the corruptions), on "
            "the machine that ran it; not a benchmark figure unless that machine was quiet.",
            "",
            render(results),
            "",
            f"![error against severity]({image.name})" if image else "",
        ])
        target.write_text(text + "\n")
    return targets[-1]
