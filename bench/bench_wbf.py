"""Box merges: ttakit (NumPy, vectorised over classes) against ensemble-boxes
(the reference implementation), as a table over the input: views, boxes per
view, classes, box sizes.

    python bench/bench_wbf.py [--views 2 8] [--boxes 100 300] [--classes 3 80]
                              [--sizes 0.02-0.17 0.02-0.5] [--images 5] [--repeats 5]
                              [--skewed] [--merges wbf,nms,soft_nms] [--per-image]

Each row is one input kind: ``--images`` images, each with ``boxes`` objects
(labels uniform over ``classes``; ``--skewed``: half of them in class 0) of
widths and heights uniform in the size range, seen by ``views`` views as
jittered copies (so clusters form), scores uniform. ttakit fuses the row's
images as one chunk, as the Detector does with each chunk of its inputs
(``BoxMerge.many``: WBF runs the chunk's images in the same steps; NMS and
soft-NMS go image by image); ``--per-image``: one call per image, as a
caller of ``ttakit.merge.boxes.wbf`` on single images gets. Both
implementations get identical inputs; the fused results are checked equal (1e-5) before timing
(a near tie, where ensemble-boxes' float32 rounding decides the other way,
is reported and the row still timed). The two are timed side by side,
interleaved, ``--repeats`` rounds over all the row's images, under the
protocol of ``protocol.py``. Printed per row: ms per image of each (median
over rounds) and the speed-up (ensemble-boxes time / ttakit time, median and
min-max over rounds; and the median of the same in CPU time). Where the speed-up comes from: ttakit's loop runs once
per box *rank* within a class (every class of every image of the chunk at
once), ensemble-boxes' once per box, so the speed-up falls with few classes
(long classes), with big boxes (classes that chain into one spatial part)
and, per image, with fewer images in a chunk.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import warnings

import _common as C
import numpy as np

MERGES = ("wbf", "nms", "soft_nms")


def make_case(rng, views=8, boxes=300, classes=80, skewed=False, sizes=(0.02, 0.17)):
    objects = rng.random((boxes, 2)) * 0.8 + 0.1
    wh = rng.random((boxes, 2)) * (sizes[1] - sizes[0]) + sizes[0]
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


def _pairs(merge, views, per_image=False):
    """(reference on one image's per-view lists, ttakit on a chunk of images' stacked arrays) for
    one merge."""
    import ensemble_boxes as eb

    from ttakit.merge import boxes as tb

    ones = np.ones(views)
    if merge == "wbf":
        if per_image:
            return (lambda bl, sl, ll: eb.weighted_boxes_fusion(bl, sl, ll, iou_thr=0.55),
                    lambda chunk: [tb.wbf(*st, ones, iou_thr=0.55) for st in chunk])
        fuse = tb.WBF(iou_thr=0.55)  # the Detector's merge, on a chunk of images
        return (lambda bl, sl, ll: eb.weighted_boxes_fusion(bl, sl, ll, iou_thr=0.55),
                lambda chunk: fuse.many(chunk, ones))
    if merge == "nms":
        return (lambda bl, sl, ll: eb.nms(bl, sl, ll, iou_thr=0.5),
                lambda chunk: [tb.nms(*st, ones, iou_thr=0.5) for st in chunk])
    # ensemble-boxes' soft_nms rescales its inputs in place: it gets copies (copying is timed too,
    # and is a small fraction of its time); ttakit returns the original scores as it does
    return (lambda bl, sl, ll: eb.soft_nms([x.copy() for x in bl], [x.copy() for x in sl], ll, method=2,
                                           sigma=0.5, thresh=0.001),
            lambda chunk: [tb.soft_nms(*st, ones, method="gaussian", sigma=0.5, score_thr=0.001, rescore=False)
                           for st in chunk])


def mismatches(ref, mine, cases, stacked) -> int:
    """Images whose fused results differ by more than 1e-5."""
    bad = 0
    for c, got in zip(cases, mine(stacked)):
        rb, rs, rl = ref(*c)
        o, p = np.lexsort((-rs, rl)), np.lexsort((-got.scores, got.labels))
        same = len(o) == len(p) and np.allclose(rb[o], got.boxes[p], atol=1e-5) and \
            np.allclose(rs[o], got.scores[p], atol=1e-5)
        bad += not same
    return bad


def parse_sizes(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition("-")
    try:
        lo, hi = float(lo), float(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size range is LOW-HIGH (e.g. 0.02-0.17), got {text!r}") from None
    if not 0 < lo <= hi < 1:
        raise argparse.ArgumentTypeError(f"box sizes must satisfy 0 < LOW <= HIGH < 1, got {text!r}")
    return lo, hi


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--views", type=int, nargs="+", default=[2, 8])
    ap.add_argument("--boxes", type=int, nargs="+", default=[100, 300], help="boxes (objects) per view")
    ap.add_argument("--classes", type=int, nargs="+", default=[3, 80])
    ap.add_argument("--sizes", type=parse_sizes, nargs="+", default=[(0.02, 0.17), (0.02, 0.5)],
                    metavar="LOW-HIGH", help="box width and height range (fractions of the image)")
    ap.add_argument("--images", type=int, default=5, help="images per row")
    ap.add_argument("--skewed", action="store_true", help="half the objects in class 0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds over the row's images")
    ap.add_argument("--merges", default="wbf", help=f"comma-separated, of {', '.join(MERGES)}")
    ap.add_argument("--per-image", action="store_true",
                    help="ttakit merges image by image (default: the row's images as one chunk, as the Detector)")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    C.add_protocol_args(ap)
    a = ap.parse_args(argv)
    merges = [m.strip() for m in a.merges.split(",") if m.strip()]
    if not merges or any(m not in MERGES for m in merges):
        ap.error(f"--merges takes names from {', '.join(MERGES)}, got {a.merges!r}")
    warnings.filterwarnings("ignore")
    from ttakit.merge.boxes import stack_views

    C.begin(f"bench_wbf: box merges, ttakit vs ensemble-boxes {_version()}", a)
    results = []
    for merge in merges:
        rows = []
        for views, boxes, classes, sizes in itertools.product(a.views, a.boxes, a.classes, a.sizes):
            rng = np.random.default_rng(a.seed)
            cases = [make_case(rng, views, boxes, classes, a.skewed, sizes) for _ in range(a.images)]
            stacked = [stack_views(*c) for c in cases]
            ref, mine = _pairs(merge, views, a.per_image)
            bad = mismatches(ref, mine, cases, stacked)
            times = C.interleave({"ensemble-boxes": lambda: [ref(*c) for c in cases],
                                  "ttakit": lambda: mine(stacked)}, a.repeats)
            per = {k: statistics.median(v) / len(cases) * 1e3 for k, v in times.items()}
            speed = C.summary(C.ratios(times["ensemble-boxes"], times["ttakit"]))
            speed_cpu = C.summary(C.ratios(times.cpu["ensemble-boxes"], times.cpu["ttakit"]))
            results.append({"merge": merge, "views": views, "boxes": boxes, "classes": classes,
                            "sizes": sizes, "ms_per_image": per, "speedup": speed, "speedup_cpu": speed_cpu,
                            "mismatched_images": bad,
                            "seconds": times, "cpu_seconds": times.cpu})
            rows.append([views, boxes, classes, f"{sizes[0]:g}-{sizes[1]:g}", f"{per['ensemble-boxes']:.2f}",
                         f"{per['ttakit']:.2f}", C.fmt_ratio(speed, 1), f"{speed_cpu['median']:.1f}", bad or ""])
            print(" ".join(str(c) for c in rows[-1]), flush=True)
        how = "ttakit image by image" if a.per_image or merge != "wbf" else "ttakit on the row's images as one chunk"
        C.say(f"\n{merge}{' (skewed: half the objects in class 0)' if a.skewed else ''}, {a.images} images "
              f"per row ({how}), {a.repeats} interleaved rounds:")
        C.say(C.table(rows, ["views", "boxes/view", "classes", "box sizes", "ensemble-boxes ms/img",
                             "ttakit ms/img", "speed-up (median, min-max)", "in CPU time", "images not equal"]))
    C.finish(a, {"benchmark": "wbf", "machine": C.machine(), "args": vars(a), "rows": results}, a.json)


if __name__ == "__main__":
    main()
