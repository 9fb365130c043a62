"""Inputs by modality: chunking, validation and conversion for the run loop."""

from .base import Inputs
from .image import LAYOUTS, ImageInputs, check_layout, check_shape

__all__ = ["Inputs", "ImageInputs", "LAYOUTS", "check_layout", "check_shape"]
