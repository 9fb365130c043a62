"""Conformal prediction sets on (merged) class probabilities: sets that hold
the true label with a guaranteed probability, with or without TTA.

    from ttakit.conformal import SplitConformal, set_metrics
    cp = SplitConformal("aps", alpha=0.1).calibrate(p_cal, y_cal)   # held-out data
    sets = cp.predict_set(p_test)                                   # (N, C) booleans
    set_metrics(sets, y_test)        # coverage, mean size, coverage by size and class

TTA gives sharper, better-ranked probabilities, so the sets shrink at the
same coverage (Shanmugam et al. 2025); `ttakit reproduce conformal` measures it.
"""

from .coverage import SIZE_BINS, coverage_by_size, repeated_splits, set_metrics
from .predictor import MIN_CALIBRATION, SplitConformal, conformal_quantile
from .scores import METHODS, label_scores, score_matrix

__all__ = ["SplitConformal", "conformal_quantile", "score_matrix", "label_scores", "set_metrics",
           "coverage_by_size", "repeated_splits", "METHODS", "SIZE_BINS", "MIN_CALIBRATION"]
