"""Tasks on the one run loop: what each view's output means and how it is
merged (classification; segmentation, detection, keypoints and rows build on
the same :class:`~ttakit.tasks.base.Task` interface), and the prediction
cache that evaluation and tuning run on."""

from .base import ResultBuffer, Task, TaskRun
from .cache import PredictionCache
from .classification import ClassificationResult, ClassificationTask, Classifier
from .detection import DetectionResult, DetectionTask, Detector
from .keypoints import KeypointDetector, KeypointResult, KeypointTask
from .segmentation import SegmentationResult, SegmentationTask, Segmenter

__all__ = ["Task", "TaskRun", "ResultBuffer", "Classifier", "ClassificationTask", "ClassificationResult",
           "PredictionCache", "Segmenter", "SegmentationTask", "SegmentationResult",
           "Detector", "DetectionTask", "DetectionResult",
           "KeypointDetector", "KeypointTask", "KeypointResult"]
