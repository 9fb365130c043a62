"""Tasks: what the merged prediction means (classification, ...)."""

from .classification import ClassificationResult, Classifier

__all__ = ["Classifier", "ClassificationResult"]
