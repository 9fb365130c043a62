"""MediaPipe's legacy solutions (Google, Apache-2.0) as ttakit models: the
selfie segmentation and BlazePose wrapped as per-image callables, the way a
user wraps any model that takes one image at a time.

A MediaPipe solution's ``process`` takes one RGB ``uint8`` image of any
size and returns its own result object. ttakit calls a model with a float
batch (here channel-last, ``data_layout="NHWC"``, pixels in ``[0, 1]``):
each wrapper turns every image of the batch back into ``uint8`` RGB, calls
``process`` on it, and stacks the answers as arrays ttakit understands:

- :class:`SelfieSegmentation`: ``(n, 1, H, W)`` person probabilities (a
  one-channel foreground map for :class:`ttakit.Segmenter`).
- :class:`PoseKeypoints`: ``(n, 17, 3)`` COCO keypoints ``x, y`` in pixels of
  the image it was given, with BlazePose's per-landmark visibility as the
  confidence (all zero where no person was found), for
  :class:`ttakit.KeypointDetector` with ``flip_pairs=COCO_FLIP_PAIRS``.

    >>> seg = ttakit.Segmenter(SelfieSegmentation(), "identity + hflip", data_layout="NHWC", output="probs")
    >>> person = seg.run(image[None]).labels[0] == 1          # image: uint8 (H, W, 3) RGB

mediapipe is not a dependency of ttakit: install it as
``pip install --no-deps mediapipe==0.10.14`` plus ``pip install 'ttakit[mediapipe]'``
(its light dependencies, with ``protobuf<5``: BlazePose's graph setup
fails on protobuf 7). ``make mediapipe`` builds such an environment in
``.venv-mp``. Only ``model_complexity=1`` of Pose ships inside the wheel (0
and 2 download their model at run time).
"""

from __future__ import annotations

import abc
import threading

import numpy as np

from ..errors import ModelLoadError, ModelOutputError

MEDIAPIPE_VERSION = "0.10.14"

#: BlazePose's 33 landmark indices of the 17 COCO keypoints, in COCO order
#: (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles; left first).
BLAZEPOSE_TO_COCO = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
#: COCO's (left, right) keypoint index pairs, swapped under mirroring views.
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def import_mediapipe():
    """The ``mediapipe`` module, or a :class:`~ttakit.ModelLoadError` that says how to install it."""
    try:
        import mediapipe
    except ImportError:
        raise ModelLoadError(f"MediaPipe models need mediapipe {MEDIAPIPE_VERSION}: "
                             f"pip install --no-deps mediapipe=={MEDIAPIPE_VERSION} && "
                             "pip install 'ttakit[mediapipe]' (or make mediapipe)") from None
    if not hasattr(mediapipe, "solutions"):
        raise ModelLoadError(f"this mediapipe ({getattr(mediapipe, '__version__', '?')}) has no legacy "
                             f"mp.solutions API; install mediapipe=={MEDIAPIPE_VERSION}")
    return mediapipe


def to_rgb_uint8(batch) -> np.ndarray:
    """A float NHWC batch in ``[0, 1]`` back to ``uint8`` RGB pixels."""
    x = np.asarray(batch)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ModelOutputError(f"MediaPipe models take RGB images (n, H, W, 3): use data_layout='NHWC' "
                               f"(or model_layout='NHWC'); got a batch of shape {x.shape}")
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


class _PerImage(abc.ABC):
    """One MediaPipe solution object per wrapper, built on first use and
    called one image at a time under a lock (a solution is a stateful graph)."""

    def __init__(self):
        self._solution = None
        self._lock = threading.Lock()

    @abc.abstractmethod
    def _build(self):
        """The MediaPipe solution object."""

    @abc.abstractmethod
    def _one(self, solution, image: np.ndarray) -> np.ndarray:
        """The model's answer for one ``uint8`` RGB image, as an array."""

    def __call__(self, batch) -> np.ndarray:
        images = to_rgb_uint8(batch)
        with self._lock:
            if self._solution is None:
                self._solution = self._build()
            return np.stack([self._one(self._solution, np.ascontiguousarray(im)) for im in images])

    def close(self) -> None:
        """Release the MediaPipe graph (built again on the next call)."""
        with self._lock:
            if self._solution is not None:
                self._solution.close()
                self._solution = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_solution", "_lock")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._solution, self._lock = None, threading.Lock()


class SelfieSegmentation(_PerImage):
    """MediaPipe selfie segmentation: ``(n, 1, H, W)`` person probabilities.

    ``model_selection=0`` is the general model (256x256 input), ``1`` the
    landscape one (144x256); MediaPipe resizes every image to it and the mask
    back to the image's size."""

    def __init__(self, model_selection: int = 0):
        super().__init__()
        if model_selection not in (0, 1):
            raise ModelLoadError(f"model_selection must be 0 (general) or 1 (landscape), got {model_selection!r}")
        self.model_selection = model_selection

    def _build(self):
        mp = import_mediapipe()
        return mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=self.model_selection)

    def _one(self, solution, image):
        mask = solution.process(image).segmentation_mask
        if mask is None or mask.shape != image.shape[:2]:
            raise ModelOutputError(f"MediaPipe returned no mask of the image's size {image.shape[:2]}")
        return np.asarray(mask, np.float32)[None]


class PoseKeypoints(_PerImage):
    """MediaPipe Pose (BlazePose, 33 landmarks) as the 17 COCO keypoints:
    ``(n, 17, 3)`` with ``x, y`` in pixels and the landmark's visibility as
    confidence; a person not found gives zeros (confidence 0), which a
    confidence-weighted merge ignores."""

    def __init__(self, model_complexity: int = 1, min_detection_confidence: float = 0.5):
        super().__init__()
        self.model_complexity, self.min_detection_confidence = model_complexity, min_detection_confidence

    def _build(self):
        mp = import_mediapipe()
        return mp.solutions.pose.Pose(static_image_mode=True, model_complexity=self.model_complexity,
                                      min_detection_confidence=self.min_detection_confidence)

    def _one(self, solution, image):
        found = solution.process(image).pose_landmarks
        out = np.zeros((len(BLAZEPOSE_TO_COCO), 3), np.float32)
        if found is None:
            return out
        h, w = image.shape[:2]
        lm = found.landmark
        for j, k in enumerate(BLAZEPOSE_TO_COCO):
            out[j] = (lm[k].x * w, lm[k].y * h, lm[k].visibility)
        return out
