"""Tuning: greedy policy search, learned aggregation, temperature scaling,
with a guard split so the result is never worse than no TTA on it."""

from .aggregation import fit_weights
from .candidates import POOLS, candidate_views
from .greedy import greedy_search
from .temperature import apply_temperature, calibrated_nll, fit_temperature
from .tune import TuneResult, tune

__all__ = ["tune", "TuneResult", "greedy_search", "fit_weights", "fit_temperature", "apply_temperature",
           "calibrated_nll", "candidate_views", "POOLS"]
