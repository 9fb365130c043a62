"""ttakit: test-time augmentation for any model.

    >>> import ttakit
    >>> tta = ttakit.Classifier(model, "identity + hflip", data_layout="NHWC")
    >>> probs = tta.predict_proba(images)

Layers, each importing only from those before it: ``views`` (what a view
does and how to undo it) -> ``policy`` (which views, which weights) ->
``models`` (adapters) -> ``engine`` (bounded batches) -> ``merge`` ->
``tasks`` -> ``interfaces`` (CLI).
"""

from .errors import InputError, ModelLoadError, ModelOutputError, PolicyError, TTAKitError
from .merge import get_merge
from .models import Normalize, as_model
from .policy import Policy
from .tasks import ClassificationResult, Classifier
from .evaluation import EvaluationReport, evaluate
from .tuning import TuneResult, tune
from .views import register_view

__version__ = "0.1.0"

__all__ = [
    "Classifier", "ClassificationResult", "Policy", "evaluate", "EvaluationReport", "tune", "TuneResult", "Normalize", "as_model", "get_merge", "register_view",
    "TTAKitError", "InputError", "PolicyError", "ModelOutputError", "ModelLoadError", "__version__",
]
