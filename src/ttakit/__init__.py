"""ttakit: test-time augmentation for any model.

    >>> import ttakit
    >>> tta = ttakit.Classifier(model, "identity + hflip", data_layout="NHWC")
    >>> probs = tta.predict_proba(images)

Layers, each importing only from those before it (``tests/test_architecture.py``
checks it): ``errors`` -> ``views`` (what a view does and how to undo it),
``datasets`` -> ``merge`` (accumulators over views) -> ``policy`` (which
views, which weights, which merge), ``inputs`` (validation per modality) ->
``models`` (adapters) -> ``engine`` (the one run loop), ``zoo``, ``graph`` (TTA as one graph) -> ``tasks``
(what an output means; the prediction cache) -> ``evaluation`` -> ``tuning``
-> ``io`` (files in and out) -> ``experiments`` -> ``interfaces`` (CLI).
"""

from .errors import InputError, ModelLoadError, ModelOutputError, PolicyError, TTAKitError
from .merge import get_merge, register_merge
from .models import Normalize, as_model
from .policy import AdaptivePolicy, Policy
from .tasks import (ClassificationResult, Classifier, DetectionResult, Detector, KeypointDetector, KeypointResult,
                    SegmentationResult, Segmenter)
from .evaluation import EvaluationReport, evaluate
from .tuning import TuneResult, tune
from .views import register_view
from .graph import export

from .version import __version__

__all__ = [
    "Classifier", "ClassificationResult", "Segmenter", "SegmentationResult", "Detector",
    "DetectionResult", "KeypointDetector", "KeypointResult", "Policy", "AdaptivePolicy", "evaluate", "EvaluationReport", "tune", "TuneResult", "Normalize",
    "as_model", "get_merge", "register_merge", "register_view", "export",
    "TTAKitError", "InputError", "PolicyError", "ModelOutputError", "ModelLoadError", "__version__",
]
