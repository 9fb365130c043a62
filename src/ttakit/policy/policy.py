"""Policies: which views, with which weights.

A :class:`Policy` is an ordered list of ``(view, weight)`` entries. It may
hold the same view several times (``Policy.random`` does, like the Keras
tutorial's 7 random flips); :meth:`Policy.unique` merges equal views into
one entry whose weight is the sum, which gives exactly the same weighted
merge for one forward pass per distinct view.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PolicyError
from ..views import View, compose, make_views, view_from_dict
from ..views.registry import GROUPS, VIEWS
from . import random as _random
from . import spec as _spec

FORMAT = "ttakit.policy"
VERSION = 1


class Policy:
    """An ordered list of views with weights.

    Build one from a spec (``Policy.parse("identity + hflip")``), from views
    (``Policy([identity(), hflip()])``), from Keras-style random draws
    (``Policy.random(n=7, seed=0, horizontal_flip=True)``) or from a file
    (``Policy.load("policy.yaml")``). ``+`` concatenates policies, ``*``
    takes their product (every pair of views, composed left to right), and
    ``0.5 * policy`` scales weights.
    """

    def __init__(self, views: Iterable[View] | View, weights: Sequence[float] | None = None,
                 *, source: str | None = None, aggregation: dict | None = None):
        if isinstance(views, View):
            views = [views]
        views = list(views)
        for v in views:
            if not isinstance(v, View):
                raise PolicyError(f"a policy holds views, got {type(v).__name__}: {v!r}")
        if not views:
            raise PolicyError("a policy needs at least one view (use 'identity' for no TTA)")
        if weights is None:
            weights = [1.0] * len(views)
        weights = [float(w) for w in weights]
        if len(weights) != len(views):
            raise PolicyError(f"{len(views)} views but {len(weights)} weights")
        if any(not np.isfinite(w) or w < 0 for w in weights):
            raise PolicyError(f"weights must be finite and >= 0, got {weights}")
        if sum(weights) <= 0:
            raise PolicyError("at least one weight must be positive")
        self._views = tuple(views)
        self._weights = tuple(weights)
        self.source = source
        #: learned aggregation parameters saved with the policy (see ttakit.tuning)
        self.aggregation = aggregation

    # -- construction ---------------------------------------------------
    @classmethod
    def parse(cls, spec: str) -> "Policy":
        """Build a policy from a spec string (see :mod:`ttakit.policy.spec`)."""
        policy = _spec.parse(spec, _build_call)
        policy.source = spec
        return policy

    @classmethod
    def random(cls, n: int = 7, seed: int | None = 0, **keras_params: Any) -> "Policy":
        """``n`` random views with Keras ``ImageDataGenerator`` parameters
        (``horizontal_flip=True``, ``width_shift_range=0.1``, ...), drawn
        once from ``seed`` and kept as concrete views, duplicates included."""
        views = _random.draw_views(n, seed, **keras_params)
        args = ", ".join([str(n), f"seed={seed}"] + [f"{k}={_spec_value(v)}" for k, v in keras_params.items()])
        return cls(views, source=f"random({args})")

    @classmethod
    def coerce(cls, policy: "Policy | str | View | Sequence[View] | None") -> "Policy":
        """Accept a Policy, a spec string, a view, a list of views, or None
        (no TTA)."""
        if policy is None:
            return cls.parse("identity")
        if isinstance(policy, Policy):
            return policy
        if isinstance(policy, str):
            return cls.parse(policy)
        if isinstance(policy, View):
            return cls([policy])
        if isinstance(policy, (list, tuple)):
            return cls(policy)
        raise PolicyError(f"cannot make a policy from {type(policy).__name__}; "
                          "pass a spec string such as 'identity + hflip', a view, a list of views or a Policy")

    # -- inspection -------------------------------------------------------
    @property
    def views(self) -> tuple[View, ...]:
        return self._views

    @property
    def weights(self) -> np.ndarray:
        return np.asarray(self._weights, dtype=np.float64)

    def __len__(self) -> int:
        return len(self._views)

    def __iter__(self):
        return iter(zip(self._views, self._weights))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and self._views == other._views and self._weights == other._weights

    def __hash__(self) -> int:
        return hash((self._views, self._weights))

    def __repr__(self) -> str:
        return f"Policy({self.spec!r})"

    @property
    def spec(self) -> str:
        """A spec string that parses back to this policy."""
        parts = []
        for v, w in self:
            text = repr(v)
            if " * " in text:
                text = f"({text})"
            parts.append(text if w == 1 else f"{_num(w, exact=True)} * {text}")
        return " + ".join(parts)

    @property
    def is_identity(self) -> bool:
        return all(v == _IDENTITY for v in self._views)

    def unique(self) -> "Policy":
        """Equal views merged into one entry with the summed weight, in order
        of first appearance. Merging with these weights gives exactly the
        result of the full list."""
        order: dict[View, float] = {}
        for v, w in self:
            order[v] = order.get(v, 0.0) + w
        return Policy(list(order), list(order.values()), source=self.source, aggregation=self.aggregation)

    def describe(self) -> str:
        """A table of the distinct views, their weights and the cost."""
        u = self.unique()
        total = u.weights.sum()
        width = max(len(repr(v)) for v in u.views)
        lines = [f"{'#':>3}  {'view':<{width}}  {'weight':>8}  {'share':>6}"]
        for i, (v, w) in enumerate(u):
            lines.append(f"{i:>3}  {repr(v):<{width}}  {_num(w):>8}  {w / total:>6.1%}")
        lines.append(f"{len(self)} views, {len(u)} distinct: {len(u)} forward passes per input"
                     + (f" (dedupe saves {len(self) / len(u):.2f}x)" if len(u) < len(self) else ""))
        return "\n".join(lines)

    # -- algebra ------------------------------------------------------------
    def __add__(self, other: "Policy") -> "Policy":
        other = Policy.coerce(other)
        return Policy(self._views + other._views, self._weights + other._weights)

    def __mul__(self, other: "Policy | float") -> "Policy":
        if isinstance(other, (int, float)):
            return self.scaled(other)
        other = Policy.coerce(other)
        views, weights = [], []
        for a, wa in self:
            for b, wb in other:
                views.append(compose(a, b))
                weights.append(wa * wb)
        return Policy(views, weights)

    def __rmul__(self, other: float) -> "Policy":
        if isinstance(other, (int, float)):
            return self.scaled(other)
        return NotImplemented

    def scaled(self, factor: float) -> "Policy":
        return Policy(self._views, [w * factor for w in self._weights])

    # -- files ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "views": [{**v.to_dict(), "weight": w} for v, w in self],
        }
        if self.source:
            d["source"] = self.source
        if self.aggregation is not None:
            d["aggregation"] = self.aggregation
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Policy":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise PolicyError(f"not a ttakit policy (expected a mapping with format: {FORMAT})")
        version = d.get("version", VERSION)
        if isinstance(version, bool) or not isinstance(version, int):
            raise PolicyError(f"policy file version must be an integer, got {version!r}")
        if version > VERSION:
            raise PolicyError(f"policy file version {d['version']} is newer than this ttakit "
                              f"understands ({VERSION}); upgrade ttakit")
        entries = d.get("views")
        if not isinstance(entries, list) or not entries:
            raise PolicyError("a policy file needs a non-empty 'views' list")
        views, weights = [], []
        for i, e in enumerate(entries):
            e = dict(e) if isinstance(e, dict) else e
            try:
                weights.append(float(e.pop("weight", 1.0)))
                views.append(view_from_dict(e))
            except PolicyError as err:
                raise PolicyError(f"view #{i} of the policy: {err}") from None
            except (AttributeError, TypeError, ValueError) as err:
                raise PolicyError(f"view #{i} of the policy is malformed: {e!r}") from err
        return cls(views, weights, source=d.get("source"), aggregation=d.get("aggregation"))

    def save(self, path: str | Path) -> Path:
        """Write YAML (``.yaml``/``.yml``) or JSON (any other suffix)."""
        path = Path(path)
        d = self.to_dict()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(d, sort_keys=False)
        else:
            text = json.dumps(d, indent=2) + "\n"
        path.write_text(text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise PolicyError(f"cannot read policy file {path}: {e.strerror or e}") from None
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as e:  # yaml and json raise their own error types
            raise PolicyError(f"policy file {path} does not parse: {e}") from None
        try:
            return cls.from_dict(data)
        except PolicyError as e:
            raise PolicyError(f"policy file {path}: {e}") from None


_IDENTITY = make_views("identity")[0]


def _num(w: float, exact: bool = False) -> str:
    """A weight as text; ``exact`` keeps every digit (for specs that must
    parse back to the same weights)."""
    if float(w).is_integer():
        return str(int(w))
    return repr(float(w)) if exact else repr(round(w, 10))


def _spec_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_spec_value(x) for x in v) + ")"
    return str(v)


def _build_call(name: str, args: list, kwargs: dict) -> Policy:
    if name == "random":
        if len(args) > 1:
            raise PolicyError("random takes one positional value (the number of copies), "
                              "then named Keras ImageDataGenerator parameters")
        n = args[0] if args else kwargs.pop("n", 7)
        seed = kwargs.pop("seed", 0)
        kw = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
        return Policy.random(n, seed, **kw)
    if name == "policy" or name == "file":
        if len(args) != 1:
            raise PolicyError(f"{name}(PATH) takes one path")
        return Policy.load(args[0])
    return Policy(make_views(name, *args, **kwargs))


__all__ = ["Policy", "VIEWS", "GROUPS"]
