#!/usr/bin/env python
"""What the HTML report adds to ``ttakit evaluate --out DIR`` on CIFAR-10.

One evaluation of the pretrained ResNet-20 (``zoo:resnet20``) on ``--n``
test images with ``--policy`` is timed in parts: ``evaluate`` (the views,
the metrics, the bootstrap, the cost curve, the gallery picks), ``save``
(report.md, report.json and the matplotlib plots), and ``html``
(index.html with its thumbnails: :func:`ttakit.report.write_classification`).
The headline is ``html / (evaluate + save)``, the share the page adds to
what ``evaluate --out`` did before it (the target is at most 0.10), and
``(save + html) / evaluate``. Repeats re-time the report parts on the same
evaluation (the model is not re-run).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings

import _common as C


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=C.default_data(), help="CIFAR-10 binary folder")
    p.add_argument("--n", type=int, default=10000, help="test images")
    p.add_argument("--policy", default="identity + hflip", help="the policy evaluated")
    p.add_argument("--repeats", type=int, default=3, help="timings of save and html")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    C.ensure_env()
    warnings.filterwarnings("ignore")
    from ttakit import evaluate
    from ttakit.report import write_classification
    from ttakit.models import Normalize
    from ttakit.zoo import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet

    C.header("HTML report cost (bench_report.py)", args)
    x, y = C.load_cifar(args.data, "test", args.n)
    model = load_cifar_resnet(20)
    opts = {"data_layout": "NHWC", "preprocess": Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD), "output": "logits"}
    t_eval, rep = C.timed(evaluate, model, x, y, args.policy, classes=None, **opts)
    saves, htmls = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            t, _ = C.timed(rep.save, out)
            saves.append(t)
            t, _ = C.timed(write_classification, rep, out, x, "NHWC")
            htmls.append(t)
    t_save, t_html = statistics.median(saves), statistics.median(htmls)
    rows = [["evaluate", f"{t_eval:.2f}"], ["save (md, json, plots)", f"{t_save:.2f}"],
            ["html (index.html, thumbnails)", f"{t_html:.3f}"]]
    print(C.table(rows, ["part", "seconds"]))
    share = t_html / (t_eval + t_save)
    print(f"\nhtml / (evaluate + save) = {share:.4f} (target <= 0.10); "
          f"(save + html) / evaluate = {(t_save + t_html) / t_eval:.4f}")
    C.write_json(args.json, {"n": args.n, "policy": args.policy, "seconds": {"evaluate": t_eval, "save": saves,
                                                                              "html": htmls},
                             "html_share": share, "machine": C.machine()})


if __name__ == "__main__":
    main()
