"""Row views: seeded random perturbations of tabular rows ``(N, F)``.

Each view is a value: its family, strength, seed and the fingerprint of its
:class:`~ttakit.views.rows.FeatureStats` define it, so equal views compare and
hash alike (a policy runs duplicates once) and ``output_shape`` is unchanged.

The randomness of a row depends on the row itself, not on where it sits:
the view hashes each row's values (bit patterns, wrapping integer
arithmetic) to pick one of ``PATTERNS`` rows of a table of random numbers
drawn once from the view's seed. So a row's augmented copy is the same
whatever the batch, chunk size, order or subset it comes in
(scikit-learn's invariance checks hold), at the cost of one hash and one
gather per view instead of fresh random numbers. Two different rows may
share a pattern (the noise is still independent of their values); the
copies of one row under different seeds are independent draws.

After a change, integer features are rounded and numeric and integer
features are clipped to the training range (no age of -3, no 2.7
children); categorical features only take values seen in training;
``ignore`` features are never changed.

**Integer features take integer steps.** Rounding a small Gaussian step
back to the nearest integer would leave them where they were (a noise of
0.07 on a 1-5 rating never moves it). So noise and jitter draw, for an
integer feature, the change ``z`` they would make to a real number and
step by ``floor(z)`` or ``floor(z) + 1``, the second with probability
``z - floor(z)`` (stochastic rounding, from a second seeded table): the
mean step is ``z``, and a feature whose ``|z|`` is below 1 moves by one
with probability ``|z|`` (on average about 0.8 times the noise's standard
deviation).
"""

from __future__ import annotations

import abc
import threading
import weakref
from typing import ClassVar

import numpy as np
import torch

from ...errors import InputError, PolicyError
from ..base import View, check_number
from .stats import FeatureStats

#: rows of each view's table of random numbers (a power of two)
PATTERNS = 8192
_MIX1 = -49064778989728563    # 0xff51afd7ed558ccd as int64
_MIX2 = -4265267296055464877  # 0xc4ceb9fe1a85ec53 as int64


_MULTIPLIERS: dict = {}


def _column_multipliers(f: int, device) -> torch.Tensor:
    key = (f, str(device))
    m = _MULTIPLIERS.get(key)
    if m is None:
        g = np.random.default_rng(0x5EED)
        odd = g.integers(1, 2**62, size=f, dtype=np.int64) * 2 + 1
        m = _MULTIPLIERS[key] = torch.from_numpy(odd).to(device)
    return m


def row_patterns(x: torch.Tensor, patterns: int = PATTERNS) -> torch.Tensor:
    """For each row of ``x`` ``(N, F)``, an index in ``[0, patterns)``
    that depends only on the row's values (``patterns`` a power of two)."""
    y = x + 0.0  # -0.0 and 0.0 are one value
    if y.dtype == torch.float64:
        bits = y.contiguous().view(torch.int64)
    elif y.dtype == torch.float32:
        bits = y.contiguous().view(torch.int32).to(torch.int64)
    else:
        bits = y.to(torch.float64).contiguous().view(torch.int64)
    bits.mul_(_column_multipliers(x.shape[1], x.device))
    h = bits.sum(1)  # wraps: a hash, not a number
    for mult in (_MIX1, _MIX2):
        h ^= h >> 33
        h *= mult
    h ^= h >> 33
    return h.bitwise_and_(patterns - 1)


class _LastPatterns(threading.local):
    """The patterns of the last rows hashed in this thread: the views of a
    policy all see the same chunk, which is hashed once, not once per view.
    Keyed by the tensor itself (a weak reference) and its version counter,
    so a different or modified tensor is hashed again."""

    ref = None
    version = -1
    patterns = None


_LAST = _LastPatterns()


def _patterns_of(x: torch.Tensor) -> torch.Tensor:
    try:
        version = x._version
    except RuntimeError:  # an inference tensor has no version counter: no cache
        return row_patterns(x)
    last = _LAST
    if last.ref is not None and last.ref() is x and last.version == version:
        return last.patterns
    p = row_patterns(x)
    last.ref, last.version, last.patterns = weakref.ref(x), version, p
    return p


def stochastic_round(z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``floor(z)``, plus one where ``u < z - floor(z)``: for ``u`` uniform
    in [0, 1), a whole number whose mean is ``z``."""
    low = torch.floor(z)
    return low + (u < z - low).to(z.dtype)


class RowView(View):
    """Base of the row views: ``strength``, ``seed`` and the fitted stats."""

    name: ClassVar[str] = "row_view"
    #: the roles of the features noise and jitter change (``|``-separated); the others stay as they are
    moves: ClassVar[str] = "numeric|integer"
    #: how many random numbers per feature each row draws (uniforms or normals)
    draws: ClassVar[int] = 1
    normal: ClassVar[bool] = True

    def __init__(self, stats: FeatureStats, strength: float = 0.1, seed: int = 0):
        if not isinstance(stats, FeatureStats):
            raise PolicyError(f"a row view needs fitted FeatureStats, got {type(stats).__name__}")
        stats.check_fitted()
        check_number("strength", strength)
        if strength < 0:
            raise PolicyError(f"strength must be >= 0, got {strength}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise PolicyError(f"seed must be a non-negative integer, got {seed!r}")
        self.stats = stats
        self.strength = float(strength)
        self.seed = int(seed)
        self._tables: dict = {}

    def params(self):
        return {"strength": self.strength, "seed": self.seed, "stats": self.stats.fingerprint}

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_tables"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._tables = {}

    def output_shape(self, shape):
        return tuple(shape)

    def check_input(self, x, start=0):
        if x.ndim != 2 or x.shape[1] != self.stats.n_features:
            raise InputError(f"{self.name} expects rows (n, {self.stats.n_features}) like its training data, "
                             f"got shape {tuple(x.shape)} (chunk starting at row {start})")

    # -- randomness -----------------------------------------------------------
    def table(self, f: int, dtype, device) -> torch.Tensor:
        """The view's random numbers ``(PATTERNS, draws * F)``."""
        key = (f, dtype, str(device))
        t = self._tables.get(key)
        if t is None:
            family = sum(self.name.encode()) * 1_000_003
            g = np.random.default_rng([self.seed, family])
            size = (PATTERNS, self.draws * f)
            t = g.standard_normal(size) if self.normal else g.random(size)
            t = torch.from_numpy(t).to(device=device, dtype=dtype)
            self._tables[key] = t
        return t

    def uniforms(self, f: int, dtype, device) -> torch.Tensor:
        """A second table ``(PATTERNS, F)`` of uniform numbers in [0, 1),
        independent of :meth:`table`: the stochastic rounding of integer steps."""
        key = ("uniforms", f, dtype, str(device))
        t = self._tables.get(key)
        if t is None:
            family = sum(self.name.encode()) * 1_000_003
            g = np.random.default_rng([self.seed, family, 1])
            t = self._tables[key] = torch.from_numpy(g.random((PATTERNS, f))).to(device=device, dtype=dtype)
        return t

    def draw(self, x: torch.Tensor) -> torch.Tensor:
        """Each row's random numbers ``(N, draws * F)``."""
        return self.table(x.shape[1], x.dtype, x.device).index_select(0, _patterns_of(x))

    def cached(self, x: torch.Tensor, name: str, make):
        """``make()``, computed once per feature count, dtype and device of
        ``x`` (what a view derives from its table and statistics)."""
        key = (name, x.shape[1], x.dtype, str(x.device))
        t = self._tables.get(key)
        if t is None:
            t = self._tables[key] = make()
        return t

    def constants(self, x: torch.Tensor, *names: str) -> list[torch.Tensor]:
        s = self.stats
        out = []
        for n in names:
            def make(n=n):
                v = getattr(s, n) if n in ("low", "high", "scale", "centre") else s.mask(*n.split("|"))
                return torch.as_tensor(v, device=x.device, dtype=torch.bool if v.dtype == bool else x.dtype)
            out.append(self.cached(x, n, make))
        return out

    def finish(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Round integer features, clip numeric ones to the training range,
        leave the others (categorical, ignored, and those of a role the view
        does not move) as they were. ``y`` is the view's
        own tensor (new, or the slice of a batch it writes into): it is
        changed in place and returned."""
        low, high, integer, moved = self.constants(x, "low", "high", "integer", self.moves)
        any_integer, all_moved = self.cached(x, "flags", lambda: (bool(integer.any()), bool(moved.all())))
        if any_integer:
            torch.where(integer, torch.round(y), y, out=y)
        torch.clamp_(y, low, high)
        if not all_moved:
            torch.where(moved, y, x, out=y)
        return y

    def integer_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """The integer features (a boolean ``(F,)`` tensor), and whether there are any."""
        (integer,) = self.constants(x, "integer")
        return integer, self.cached(x, "any_integer", lambda: bool(integer.any()))

    @staticmethod
    def _gather(table: torch.Tensor, x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        """Each row's line of ``table`` (into ``out`` when given)."""
        if out is None:
            return table.index_select(0, _patterns_of(x))
        return torch.index_select(table, 0, _patterns_of(x), out=out)

    def apply_into(self, x, out):
        if self.strength == 0 or not x.is_floating_point() or out.dtype != x.dtype:
            out.copy_(self.apply(x))
            return
        y = self.augment(x, out)
        if y is not out:
            out.copy_(y)

    def apply(self, x):
        if self.strength == 0:
            return x
        if not x.is_floating_point():
            x = x.to(torch.float64)
        return self.augment(x)

    @abc.abstractmethod
    def augment(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The view of float rows ``x`` (strength > 0), written into ``out``
        when the view can (else a new tensor)."""


class RowNoise(RowView):
    """Additive Gaussian noise of ``strength`` times each feature's robust
    spread (IQR/1.349) on numeric and integer features."""

    name = "row_noise"

    def augment(self, x, out=None):
        def make():
            (scale,) = self.constants(x, "scale")
            steps = self.table(x.shape[1], x.dtype, x.device) * (scale * self.strength)
            integer, any_integer = self.integer_mask(x)
            if any_integer:  # integer features: a whole step, stochastically rounded (see the module doc)
                u = self.uniforms(x.shape[1], x.dtype, x.device)
                torch.where(integer, stochastic_round(steps, u), steps, out=steps)
            return steps

        y = self._gather(self.cached(x, "steps", make), x, out)  # each row's noise
        return self.finish(x, y.add_(x))


class NumericNoise(RowNoise):
    """:class:`RowNoise` on the numeric (real-valued) features only; integer
    features stay as they are. With :class:`IntegerNoise`, the search can
    give the two groups different strengths."""

    name = "row_noise_numeric"
    moves = "numeric"


class IntegerNoise(RowNoise):
    """:class:`RowNoise` on the integer features only (whole steps, see the
    module doc); numeric features stay as they are."""

    name = "row_noise_integer"
    moves = "integer"


class RowJitter(RowView):
    """Multiplicative jitter: each numeric or integer value times
    ``1 + strength * N(0, 1)`` (a relative error; zero stays zero)."""

    name = "row_jitter"

    def augment(self, x, out=None):
        factors = self.cached(x, "factors", lambda: 1 + self.strength * self.table(x.shape[1], x.dtype, x.device))
        y = self._gather(factors, x, out).mul_(x)
        integer, any_integer = self.integer_mask(x)
        if any_integer:  # integer features: a whole step, stochastically rounded (see the module doc)
            u = self._gather(self.uniforms(x.shape[1], x.dtype, x.device), x, None)
            torch.where(integer, x + stochastic_round(y - x, u), y, out=y)
        return self.finish(x, y)


class FeatureDropout(RowView):
    """Each feature (not ``ignore``) is replaced, with probability
    ``strength``, by its training median (numeric, integer) or mode
    (categorical): a missing value filled in."""

    name = "feature_dropout"
    normal = False

    def augment(self, x, out=None):
        centre, active = self.constants(x, "centre", "numeric|integer|categorical")
        dropped = self.cached(x, "dropped",
                              lambda: (self.table(x.shape[1], x.dtype, x.device) < self.strength) & active)
        drop = self._gather(dropped, x, None)
        return torch.where(drop, centre, x) if out is None else torch.where(drop, centre, x, out=out)


class CategoryResample(RowView):
    """Each categorical feature is replaced, with probability ``strength``,
    by a value drawn from its training frequencies."""

    name = "category_resample"
    normal = False
    draws = 2

    def augment(self, x, out=None):
        levels = self.stats.levels
        if not levels:
            return x
        u = self.draw(x)
        f = x.shape[1]
        y = x.clone()
        for j, (values, cdf) in levels.items():
            pick = u[:, j] < self.strength
            idx = torch.searchsorted(torch.as_tensor(cdf, device=x.device, dtype=x.dtype), u[:, f + j].contiguous())
            new = torch.as_tensor(values, device=x.device, dtype=x.dtype)[idx.clamp_max(len(values) - 1)]
            y[:, j] = torch.where(pick, new, x[:, j])
        return y


FAMILIES: dict[str, type[RowView]] = {c.name: c for c in (RowNoise, RowJitter, FeatureDropout, CategoryResample,
                                                           NumericNoise, IntegerNoise)}
#: short names accepted wherever a family is named
ALIASES = {"noise": "row_noise", "jitter": "row_jitter", "dropout": "feature_dropout",
           "resample": "category_resample", "noise_numeric": "row_noise_numeric",
           "noise_integer": "row_noise_integer"}
#: strengths tried by default when tuning each family
DEFAULT_STRENGTHS = {"row_noise": (0.05, 0.1, 0.2), "row_jitter": (0.02, 0.05, 0.1),
                     "feature_dropout": (0.05, 0.1, 0.2), "category_resample": (0.05, 0.1, 0.2),
                     "row_noise_numeric": (0.05, 0.1, 0.2), "row_noise_integer": (0.1, 0.2, 0.4)}


def family(name: str) -> type[RowView]:
    """A row view class by name (``"noise"``, ``"row_noise"``...)."""
    if not isinstance(name, str):
        raise PolicyError(f"a row view family is a name, got {type(name).__name__}")
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in FAMILIES:
        raise PolicyError(f"unknown row view {name!r}; valid: {', '.join([*ALIASES, *FAMILIES])}")
    return FAMILIES[key]


def copies(name: str, stats: FeatureStats, strength: float, n: int, first_seed: int = 0) -> list[RowView]:
    """``n`` seeded copies of one family at one strength (seeds
    ``first_seed ... first_seed + n - 1``)."""
    cls = family(name)
    return [cls(stats, strength, first_seed + k) for k in range(n)]
