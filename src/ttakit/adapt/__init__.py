"""Test-time adaptation of PyTorch models while they predict, composed with
any policy: :class:`Norm` (normalisation statistics from the test stream,
mixed with the model's own by a prior strength), :class:`Tent` (entropy
minimisation of the normalisation layers' affine parameters) and
:class:`Memo` (marginal entropy over the policy's views, per input).

Every call adapts a private deep copy of the model (:class:`AdaptedModel`):
the user's module is never changed, no state is carried from one call to
the next, and concurrent calls do not share anything. Guarded: the model's
own statistics and parameters are kept until enough inputs have been seen
and while the stream's statistics do not differ from the model's (see
docs/adaptation.md)."""

from .methods import METHODS, SHIFT_THRESHOLD, Memo, Norm, Tent, coerce, may_adapt
from .session import AdaptedModel, ClassScores, check_adaptable

__all__ = ["METHODS", "SHIFT_THRESHOLD", "AdaptedModel", "ClassScores", "Memo", "Norm", "Tent", "check_adaptable",
           "coerce", "may_adapt"]
