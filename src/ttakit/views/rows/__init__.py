"""Views of tabular rows ``(N, F)``: noise scaled by each feature's robust
spread, multiplicative jitter, feature dropout to the median or mode, and
categorical resampling by training frequency, all respecting integer and
bounded features; the feature statistics they need (:class:`FeatureStats`)."""

from .stats import IQR_TO_SIGMA, NAN_POLICIES, ROLES, Decoder, FeatureStats, is_dataframe, robust_scale
from .views import (ALIASES, DEFAULT_STRENGTHS, FAMILIES, PATTERNS, CategoryResample, FeatureDropout, IntegerNoise,
                    NumericNoise, RowJitter, RowNoise, RowView, copies, family, row_patterns)

__all__ = ["FeatureStats", "Decoder", "ROLES", "NAN_POLICIES", "IQR_TO_SIGMA", "robust_scale", "is_dataframe",
           "RowView", "RowNoise", "NumericNoise", "IntegerNoise", "RowJitter", "FeatureDropout", "CategoryResample", "FAMILIES", "ALIASES",
           "DEFAULT_STRENGTHS", "PATTERNS", "family", "copies", "row_patterns"]
