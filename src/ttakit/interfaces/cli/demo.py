"""``ttakit demo`` (``make demo``): the tutorial's experiment on one trained
model, with a short text on how to read the table."""

from __future__ import annotations

import argparse
import os
import sys

from .common import EXIT_OK, Command
from .reproduce import add_tutorial_args

TEXT = """\
What the table says: every row is the same trained model on the same {n} test
images, so the 'lift' column is a paired comparison (no retraining noise).
'fixed/broken' counts images that TTA turned from wrong to right and from right
to wrong; 'p' is an exact McNemar test of those two counts. 'fwd/img' is the
cost: forward passes per image. The tutorial's 7 random flips are only 2
distinct views, so ttakit gets the identical result with 2 forward passes.
Horizontal flips help a CIFAR-10 model; vertical flips and rotations (D4) hurt,
because upside-down trucks are not in the training data.
Full report: {out}/report.md (plot: {out}/accuracy.png).
For the 10-repeat experiment: ttakit reproduce tutorial --repeats 10"""


def configure(p: argparse.ArgumentParser) -> None:
    add_tutorial_args(p, repeats=1, runtime="onnx")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from ...experiments import tutorial

    out = args.out or "results/demo"
    cfg = tutorial.TutorialConfig(repeats=args.repeats, epochs=args.epochs, batch_size=args.batch_size,
                                  seed=args.seed, data=args.data, out=out, train_limit=args.train_limit,
                                  test_limit=args.test_limit, progress=args.progress, runtime=args.runtime,
                                  policies=list(tutorial.DEMO_POLICIES))
    res = tutorial.run(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    print()
    print(res["table"])
    print()
    print(TEXT.format(n=res["checks"][0]["n"], out=out))
    return EXIT_OK


COMMAND = Command("demo", "train the tutorial CNN once and show what TTA does to it (make demo)",
                  configure=configure, run=run,
                  description="The tutorial's experiment with one trained model: trains the Keras CNN "
                              "(3 epochs), evaluates no TTA, the tutorial's 7 random flips (literal and "
                              "deduplicated), hflip, small shifts and D4 on the CIFAR-10 test set, and "
                              "prints the paired table. 'ttakit reproduce tutorial' adds more policies "
                              "and repeats.")
