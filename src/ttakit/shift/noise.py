"""The four noise corruptions on float images ``(N, H, W, C)`` in ``[0, 1]``."""

from __future__ import annotations

import numpy as np


def gaussian_noise(x, c, rng):
    """Additive N(0, c^2) per pixel and channel."""
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1)


def shot_noise(x, c, rng):
    """Poisson photon counts with ``c`` photons at full intensity."""
    return np.clip(rng.poisson(x * c) / c, 0, 1)


def impulse_noise(x, c, rng):
    """Salt and pepper: each value is replaced with probability ``c``, by 0
    or 1 with equal odds (scikit-image's ``random_noise(mode='s&p')``)."""
    hit = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    return np.where(hit, salt.astype(x.dtype), x)


def speckle_noise(x, c, rng):
    """Multiplicative: ``x + x * N(0, c^2)``."""
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1)
