"""Datasets used by ttakit's demos, tests and benchmarks."""

from .cifar10 import CIFAR10, CLASS_NAMES as CIFAR10_CLASSES, cache_dir, cifar10, download_cifar10

__all__ = ["CIFAR10", "CIFAR10_CLASSES", "cache_dir", "cifar10", "download_cifar10"]
