"""``--adapt``: test-time adaptation of a PyTorch model while it predicts
(:mod:`ttakit.adapt`), the one flag ``predict``, ``evaluate`` and ``tune`` share."""

from __future__ import annotations

import argparse

CHOICES = ("none", "norm", "tent", "memo")


def add_adapt_option(group, command: str) -> None:
    what = {"predict": "the images of this run",
            "evaluate": "the evaluated data; the report adds adaptation paired against none, for the baseline "
                        "and for the policy",
            "tune": "the tuning data: the views are searched on the adapted model's predictions (the saved "
                    "policy does not carry it: pass --adapt again to predict or evaluate)"}[command]
    group.add_argument("--adapt", choices=CHOICES, default="none",
                       help=f"adapt a PyTorch model with batch-norm layers to {what}: norm (batch-norm statistics "
                            "of the inputs, mixed with the model's own), tent (also entropy minimisation of the "
                            "normalisation layers' scales and shifts), memo (per input, over the policy's views). "
                            "Guarded: the model is used as it is unless the inputs' statistics differ from its "
                            "own. The model file is never changed. Default: none")


def refuse_adapt(args: argparse.Namespace, where: str) -> None:
    """A usage error when ``--adapt`` was given where it does not apply."""
    if adapt_value(args) is not None:
        from ...errors import UsageError

        raise UsageError(f"--adapt is for image classification with a PyTorch model; it does not apply to {where}")


def adapt_value(args: argparse.Namespace):
    """The ``adapt`` keyword the flag stands for (None for none)."""
    value = getattr(args, "adapt", "none")
    return None if value == "none" else value
