"""``--adapt``: test-time adaptation of a PyTorch model while it predicts
(:mod:`ttakit.adapt`), the one flag ``predict``, ``evaluate``, ``tune`` and
``serve`` share (``predict`` and ``evaluate`` also with ``--task segment`` and
``--task detect``)."""

from __future__ import annotations

import argparse

CHOICES = ("none", "norm", "tent", "memo")
#: the dense tasks --adapt applies to (predict and evaluate), with the modes each takes
DENSE_MODES = {"segment": ("norm", "tent", "memo"), "detect": ("norm",)}


def add_adapt_option(group, command: str) -> None:
    what = {"predict": "these images", "evaluate": "the evaluated data (the report pairs it against none)",
            "tune": "the tuning data (the saved policy does not carry it)",
            "serve": "each request's images on their own (never across requests)"}[command]
    group.add_argument("--adapt", choices=CHOICES, default="none", metavar="MODE",
                       help=f"adapt a PyTorch model with batch norm to {what}: norm, tent or memo "
                            "(docs/adaptation.md); used only where the inputs' statistics differ from the "
                            "model's own; the model file is never changed. Default: none")


def refuse_adapt(args: argparse.Namespace, where: str) -> None:
    """A usage error when ``--adapt`` was given where it does not apply."""
    if adapt_value(args) is not None:
        from ...errors import UsageError

        raise UsageError(f"--adapt is for image classification (and segmentation and detection with predict and "
                         f"evaluate) with a PyTorch model; it does not apply to {where}")


def refuse_dense_adapt(args: argparse.Namespace) -> None:
    """A usage error unless ``--adapt`` (if given) applies to the dense task
    ``args.task`` (see :data:`DENSE_MODES`)."""
    value = adapt_value(args)
    if value is None:
        return
    modes = DENSE_MODES.get(args.task)
    if modes is None:
        refuse_adapt(args, f"--task {args.task}")
    if value not in modes:
        from ...errors import UsageError

        raise UsageError(f"--task {args.task} takes --adapt {' or '.join(modes)} only: tent and memo minimise the "
                         f"entropy of class predictions, and a detector's boxes (after its own score threshold and "
                         f"non-maximum suppression) give no differentiable class distribution per image")


def adapt_value(args: argparse.Namespace):
    """The ``adapt`` keyword the flag stands for (None for none)."""
    value = getattr(args, "adapt", "none")
    return None if value == "none" else value
