"""Zoo models by name: ``zoo:resnet20`` and ``zoo:resnet32``, the published
CIFAR-10 ResNets, which the command line and :mod:`ttakit.scale` take in
place of a model file, with what they need to predict right: their
normalisation, their output kind (logits) and the CIFAR-10 class names.

    path = zoo_checkpoint("zoo:resnet20", weights)   # resolved once, where the job starts
    model = load_zoo_model("zoo:resnet20", path)     # wherever it runs (a Ray actor, a replica)
    Classifier(model, policy, **zoo_options("zoo:resnet20"))
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError
from .cifar_resnet import CIFAR_RESNET_MEAN, CIFAR_RESNET_STD, load_cifar_resnet, shared_resnet_path

#: the model names that stand for the published CIFAR ResNets
ZOO = ("zoo:resnet20", "zoo:resnet32")


def is_zoo_name(model) -> bool:
    """Whether ``model`` is a ``zoo:`` name (known or not)."""
    return isinstance(model, str) and model.startswith("zoo:")


def _depth(name: str) -> int:
    if name not in ZOO:
        raise UsageError(f"unknown zoo model {name!r}; available: {', '.join(ZOO)}")
    return int(name.split("resnet")[1])


def zoo_checkpoint(name: str, weights=None) -> Path:
    """The checkpoint file of the zoo model ``name``, as an absolute path:
    ``weights`` itself when it is a file, else found in the folder
    ``weights`` or ``$TTAKIT_MODELS``. Raises :class:`~ttakit.errors.UsageError`
    for an unknown name and :class:`~ttakit.errors.ZooError` when no
    checkpoint is found."""
    depth = _depth(name)
    if weights is not None and Path(os.fspath(weights)).expanduser().is_file():
        return Path(os.fspath(weights)).expanduser().resolve()
    return shared_resnet_path(depth, weights).resolve()


def load_zoo_model(name: str, weights=None):
    """The zoo model ``name`` (an eval-mode torch module) from its checkpoint
    (see :func:`zoo_checkpoint` for ``weights``)."""
    return load_cifar_resnet(zoo_checkpoint(name, weights))


def zoo_options(name: str, *, preprocess=None, output: str = "auto", classes=None) -> dict:
    """The :class:`~ttakit.Classifier` options the zoo model ``name`` needs:
    ``preprocess`` (default: its normalisation), ``output`` (``auto`` means
    its logits) and ``classes`` (default: the CIFAR-10 names)."""
    from ..datasets import CIFAR10_CLASSES
    from ..models import Normalize

    _depth(name)
    return {"preprocess": preprocess if preprocess is not None else Normalize(CIFAR_RESNET_MEAN, CIFAR_RESNET_STD),
            "output": "logits" if output == "auto" else output,
            "classes": list(classes) if classes else list(CIFAR10_CLASSES)}


__all__ = ["ZOO", "is_zoo_name", "load_zoo_model", "zoo_checkpoint", "zoo_options"]
