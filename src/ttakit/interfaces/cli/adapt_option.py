"""``--adapt``: test-time adaptation of a PyTorch model while it predicts
(:mod:`ttakit.adapt`), the one flag ``predict``, ``evaluate`` and ``tune`` share."""

from __future__ import annotations

import argparse

CHOICES = ("none", "norm", "tent", "memo")


def add_adapt_option(group, command: str) -> None:
    what = {"predict": "these images", "evaluate": "the evaluated data (the report pairs it against none)",
            "tune": "the tuning data (the saved policy does not carry it)"}[command]
    group.add_argument("--adapt", choices=CHOICES, default="none",
                       help=f"adapt a PyTorch model with batch norm to {what}: norm, tent or memo "
                            "(docs/adaptation.md); used only where the inputs' statistics differ from the "
                            "model's own; the model file is never changed. Default: none")


def refuse_adapt(args: argparse.Namespace, where: str) -> None:
    """A usage error when ``--adapt`` was given where it does not apply."""
    if adapt_value(args) is not None:
        from ...errors import UsageError

        raise UsageError(f"--adapt is for image classification with a PyTorch model; it does not apply to {where}")


def adapt_value(args: argparse.Namespace):
    """The ``adapt`` keyword the flag stands for (None for none)."""
    value = getattr(args, "adapt", "none")
    return None if value == "none" else value
