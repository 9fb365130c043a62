"""Distribution shift to measure against: the corruptions of CIFAR-10-C /
ImageNet-C (Hendrycks & Dietterich, ICLR 2019) at five severities, seeded and
vectorised over a batch, at the images' own resolution.

Made here: gaussian, shot, impulse and speckle noise; gaussian, defocus,
glass, motion and zoom blur; snow and fog; brightness, contrast, elastic,
pixelate, JPEG and saturate. Not made (:data:`NOT_AVAILABLE` says why):
frost (the original frost photographs are not available) and spatter.
Motion blur is ImageMagick's kernel re-implemented (a one-sided Gaussian of
``2 ceil(radius) + 1`` taps along the angle, whole-pixel offsets, edges
repeated); warps use SciPy where the original used OpenCV. Needs SciPy
(``pip install ttakit[shift]``)."""

from .corrupt import CORRUPTIONS, NOT_AVAILABLE, PROTOCOL, corrupt
from .params import CIFAR, IMAGENET

__all__ = ["CIFAR", "CORRUPTIONS", "IMAGENET", "NOT_AVAILABLE", "PROTOCOL", "corrupt"]
