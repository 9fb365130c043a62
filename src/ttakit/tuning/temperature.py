"""Temperature scaling, as tuning uses it (the functions live in
:mod:`ttakit.evaluation.temperature`, where evaluation's fair baselines use
them too)."""

from ..evaluation.temperature import apply_temperature, calibrated_nll, fit_temperature, nll_at, per_input_nll

__all__ = ["apply_temperature", "calibrated_nll", "fit_temperature", "nll_at", "per_input_nll"]
