"""Policies: which views to run, with which weights, and how to write them."""

from .adaptive import AdaptivePolicy, Rule
from .policy import Policy

__all__ = ["Policy", "AdaptivePolicy", "Rule"]
