"""Weighted Boxes Fusion: ttakit (NumPy, vectorised over classes) against
ensemble-boxes (the reference implementation) on the issue's case: 8 views x
300 boxes per view, labels over 80 classes, one image.

    python bench/bench_wbf.py [--images 20] [--repeats 7] [--skewed] [--merges wbf,nms,soft_nms]

The boxes are realistic TTA output: 300 objects' worth of boxes per view,
each view's boxes jittered copies of the same underlying detections (so
clusters form), scores uniform. Both get identical inputs; the fused results
are checked equal (1e-5) before timing. The two are timed side by side,
interleaved, ``--repeats`` rounds over all images; prints per implementation
the median time per image (min-max over the rounds) and the ratio of the
medians (min-max of the per-round ratios). ``--skewed`` puts half the boxes
in one class (the sequential depth of WBF is the box count of the largest
group of one class's boxes whose x and y ranges chain together, so the ratio
drops). ``--merges`` also
times NMS and soft-NMS (Gaussian) against ensemble-boxes' ``nms`` and
``soft_nms``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

MERGES = ("wbf", "nms", "soft_nms")


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


def _pairs(merge):
    """(reference on per-view lists, ttakit on stacked arrays) for one merge."""
    import ensemble_boxes as eb

    from ttakit.merge import boxes as tb

    ones = np.ones(8)
    if merge == "wbf":
        return (lambda bl, sl, ll: eb.weighted_boxes_fusion(bl, sl, ll, iou_thr=0.55),
                lambda b, s, l, v: tb.wbf(b, s, l, v, ones, iou_thr=0.55))
    if merge == "nms":
        return (lambda bl, sl, ll: eb.nms(bl, sl, ll, iou_thr=0.5),
                lambda b, s, l, v: tb.nms(b, s, l, v, ones, iou_thr=0.5))
    # ensemble-boxes' soft_nms rescales its inputs in place: it gets copies (copying is timed too,
    # and is a small fraction of its time); ttakit returns the original scores as it does
    return (lambda bl, sl, ll: eb.soft_nms([x.copy() for x in bl], [x.copy() for x in sl], ll, method=2,
                                           sigma=0.5, thresh=0.001),
            lambda b, s, l, v: tb.soft_nms(b, s, l, v, ones, method="gaussian", sigma=0.5, score_thr=0.001,
                                           rescore=False))


def run(merge, cases, stacked, repeats):
    ref, mine = _pairs(merge)
    for c, st in zip(cases, stacked):  # correctness first
        rb, rs, rl = ref(*c)
        got = mine(*st)
        o, p = np.lexsort((-rs, rl)), np.lexsort((-got.scores, got.labels))
        np.testing.assert_allclose(rb[o], got.boxes[p], atol=1e-5)
        np.testing.assert_allclose(rs[o], got.scores[p], atol=1e-5)
    mine(*stacked[0])  # warm
    t_ref, t_ours = [], []
    for _ in range(repeats):  # interleaved rounds: the machine may be shared
        t0 = time.perf_counter()
        for c in cases:
            ref(*c)
        t_ref.append((time.perf_counter() - t0) / len(cases))
        t0 = time.perf_counter()
        for st in stacked:
            mine(*st)
        t_ours.append((time.perf_counter() - t0) / len(cases))
    return np.array(t_ref), np.array(t_ours)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--skewed", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds over all images (median reported)")
    ap.add_argument("--merges", default="wbf", help=f"comma-separated, of {', '.join(MERGES)} (default: wbf)")
    a = ap.parse_args(argv)
    merges = [m.strip() for m in a.merges.split(",") if m.strip()]
    if not merges or any(m not in MERGES for m in merges):
        ap.error(f"--merges takes names from {', '.join(MERGES)}, got {a.merges!r}")
    warnings.filterwarnings("ignore")
    from ttakit.merge.boxes import stack_views

    rng = np.random.default_rng(a.seed)
    cases = [make_case(rng, skewed=a.skewed) for _ in range(a.images)]
    stacked = [stack_views(*c) for c in cases]
    kind = "skewed (half the boxes in one class)" if a.skewed else "labels uniform over 80 classes"
    for merge in merges:
        t_ref, t_ours = run(merge, cases, stacked, a.repeats)
        ratios = t_ref / t_ours
        print(f"{merge}, 8 views x 300 boxes, {kind}, {a.images} images, {a.repeats} rounds (median, min-max)")
        print(f"  ensemble-boxes {_version()}: {np.median(t_ref) * 1e3:8.2f} ms/image "
              f"({t_ref.min() * 1e3:.2f}-{t_ref.max() * 1e3:.2f})")
        print(f"  ttakit                : {np.median(t_ours) * 1e3:8.2f} ms/image "
              f"({t_ours.min() * 1e3:.2f}-{t_ours.max() * 1e3:.2f})")
        print(f"  ratio                 : {np.median(t_ref) / np.median(t_ours):8.1f}x "
              f"(per round {ratios.min():.1f}-{ratios.max():.1f})")


if __name__ == "__main__":
    main()
