"""Datasets used by ttakit's demos, tests and benchmarks."""

from .bccd import BCCD_CLASSES, BCCDSplit, load_bccd
from .cifar10 import CIFAR10, CLASS_NAMES as CIFAR10_CLASSES, cache_dir, cifar10, download_cifar10
from .isbi_membrane import load_isbi_membrane

__all__ = ["BCCDSplit", "BCCD_CLASSES", "CIFAR10", "CIFAR10_CLASSES", "cache_dir", "cifar10", "download_cifar10",
           "load_bccd", "load_isbi_membrane"]
