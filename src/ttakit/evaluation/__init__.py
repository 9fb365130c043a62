"""Evaluation: metrics, paired comparisons and the prediction cache."""

from ..tasks.cache import PredictionCache
from .metrics import accuracy, brier, ece, nll, reliability, summary, top_k_accuracy
from .report import EvaluationReport, evaluate
from .paired import PairedResult, bootstrap_ci, mcnemar_exact, mean_ci, paired_accuracy, paired_t_pvalue

__all__ = [
    "PredictionCache", "evaluate", "EvaluationReport", "accuracy", "top_k_accuracy", "nll", "brier", "ece", "reliability", "summary",
    "PairedResult", "paired_accuracy", "mcnemar_exact", "bootstrap_ci", "mean_ci", "paired_t_pvalue",
]
