"""Named detection decoders: how a detector's raw outputs become boxes, and
what input the model expects (its size, how images are fitted into it, its
preprocessing), declared together so that a command line can name them.

    >>> spec = get_decoder("yolox")          # YOLOX's ONNX export: letterbox 416, BGR 0-255
    >>> spec.make(416)                       # the decode function for ttakit.Detector(decode=...)

``"none"`` is for models that already return boxes (one record per image,
or padded arrays with a count: see :mod:`ttakit.tasks.detection`).

A ``"module:function"`` spec imports ``module`` and uses ``function`` as
the decode function: **this runs that module's code**, so it is only ever
done when the user names it (like uvicorn's ``app`` string), never by
default. The function takes the model's raw output for a batch and returns
one ``(boxes, scores, labels)`` per image (or padded arrays with a count).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UsageError
from . import yolox

#: how images are fitted into the model's square input
FITS = ("letterbox", "stretch")


@dataclass(frozen=True)
class DecoderSpec:
    """A named decoder and the input its model expects."""

    name: str
    summary: str
    make: Callable[[int], Callable | None]   #: input size -> decode function (None: the outputs are boxes already)
    size: int | None = None                  #: the model's input size (square), None: the user says
    fit: str = "stretch"                     #: letterbox (keep the aspect, pad) or stretch (resize to the size)
    pad_value: int = 0                       #: letterbox padding, 0-255
    preprocess: Callable | None = None       #: applied after augmentation (RGB in [0, 1], NCHW)
    data_layout: str = "NHWC"


DECODERS: dict[str, DecoderSpec] = {
    "none": DecoderSpec("none", "the model returns boxes already (records or padded arrays with a count)",
                        lambda size: None),
    "yolox": DecoderSpec("yolox", "YOLOX ONNX export without decoding (ttakit.zoo.yolox): grid decode, "
                                  "score > 0.001, class-wise NMS 0.65; letterbox 416, pad 114, BGR 0-255",
                         lambda size: yolox.decoder(size), size=416, fit="letterbox", pad_value=yolox.PAD_VALUE,
                         preprocess=yolox.bgr_255),
}


def import_function(spec: str) -> Callable:
    """``module:function`` imported: runs the module's code (only ever on the
    user's explicit request)."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise UsageError(f"a decode function is given as module:function, got {spec!r}")
    try:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except ImportError as e:
        raise UsageError(f"cannot import {module!r} for the decode function {spec!r}: {e}") from None
    except AttributeError:
        raise UsageError(f"module {module!r} has no {name!r} (decode function {spec!r})") from None
    if not callable(obj):
        raise UsageError(f"{spec!r} is not a function")
    return obj


def get_decoder(spec: str) -> DecoderSpec:
    """The decoder named ``spec`` (:data:`DECODERS`), or the user's function
    ``module:function`` (imported: that is running their code)."""
    if ":" in spec:
        fn = import_function(spec)
        return DecoderSpec(spec, f"the user's function {spec}", lambda size: fn)
    if spec not in DECODERS:
        raise UsageError(f"unknown decoder {spec!r}; named decoders: {', '.join(DECODERS)} "
                         "(or module:function for your own, which imports and runs that module)")
    return DECODERS[spec]


__all__ = ["DECODERS", "DecoderSpec", "FITS", "get_decoder", "import_function"]
