"""Views: deterministic transforms of image batches that know how to undo
themselves on dense outputs, boxes and points.

Add your own with :func:`register_view` (a :class:`View` subclass with a
``name``, ``params()`` and ``apply()``)."""

from .affine import Affine, Crop, Rotate, Scale, Shift, five_crop
from .base import GeometricView, View
from .compose import Compose, compose
from .dihedral import Dihedral, d4, hflip, identity, rot90, transpose, transverse, vflip
from .photometric import Add, ChannelShift, Contrast, GaussianNoise, Multiply
from .registry import GROUPS, VIEWS, make_views, register_view, valid_names, view_from_dict

__all__ = [
    "View", "GeometricView", "Compose", "compose", "Dihedral",
    "identity", "hflip", "vflip", "rot90", "transpose", "transverse", "d4",
    "Shift", "Scale", "Rotate", "Affine", "Crop", "five_crop",
    "Multiply", "Add", "Contrast", "ChannelShift", "GaussianNoise",
    "VIEWS", "GROUPS", "make_views", "register_view", "valid_names", "view_from_dict",
]
