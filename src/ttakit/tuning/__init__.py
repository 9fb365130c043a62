"""Tuning: greedy policy search, learned aggregation, temperature scaling,
guarded by cross-fitted evidence and a fixed-sequence test (:mod:`ttakit.tuning.guard`)."""

from .aggregation import fit_weights
from .candidates import POOLS, candidate_views
from .greedy import greedy_search
from .temperature import apply_temperature, calibrated_nll, fit_temperature
from .tune import TuneResult, tune

__all__ = ["tune", "TuneResult", "greedy_search", "fit_weights", "fit_temperature", "apply_temperature",
           "calibrated_nll", "candidate_views", "POOLS"]
