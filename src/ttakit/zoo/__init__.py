"""Reference models: the CIFAR ResNets of He et al. and the tutorial CNN.

Importing this package does not import Keras; :func:`tutorial_cnn_keras`
imports it when called.

The pretrained CIFAR ResNet weights loaded by :func:`load_cifar_resnet` are
not part of ttakit: they are Yerlan Idelbayev's (BSD 2-Clause, "Copyright (c)
2018, Yerlan Idelbayev. All rights reserved."; redistributions must keep the
notice). See :mod:`ttakit.zoo.cifar_resnet`.
"""

from .cifar_resnet import (
    CIFAR_RESNET_MEAN,
    CIFAR_RESNET_STD,
    CifarResNet,
    cifar_resnet,
    cifar_resnet_preprocess,
    load_cifar_resnet,
    shared_resnet_path,
)
from .tutorial_cnn import (
    TUTORIAL_CNN_PARAMS,
    TutorialCNN,
    train_tutorial_cnn_torch,
    tutorial_cnn_keras,
    tutorial_cnn_torch,
)

__all__ = [
    "CIFAR_RESNET_MEAN",
    "CIFAR_RESNET_STD",
    "CifarResNet",
    "TUTORIAL_CNN_PARAMS",
    "TutorialCNN",
    "cifar_resnet",
    "cifar_resnet_preprocess",
    "load_cifar_resnet",
    "shared_resnet_path",
    "train_tutorial_cnn_torch",
    "tutorial_cnn_keras",
    "tutorial_cnn_torch",
]
