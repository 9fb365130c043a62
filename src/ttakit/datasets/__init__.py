"""Datasets used by ttakit's demos, tests and benchmarks."""

from .cifar10 import CIFAR10, cache_dir, cifar10, download_cifar10

__all__ = ["CIFAR10", "cache_dir", "cifar10", "download_cifar10"]
