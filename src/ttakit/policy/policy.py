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

from ..errors import PolicyError, TTAKitError
from ..files import write_atomic
from ..limits import LimitError, current
from ..merge import Merge, get_merge, merge_from_aggregation, merge_from_dict
from ..views import View, compose, identity, make_views, view_from_dict
from ..views.registry import GROUPS, VIEWS, count_views
from .contract import InputContract
from . import random as _random
from . import spec as _spec

FORMAT = "ttakit.policy"
VERSION = 2  # 2: the merge is saved as an object keyed by view (1: a positional "aggregation")
#: the newest file version read (3: adaptive policies, see :mod:`ttakit.policy.adaptive`)
NEWEST_VERSION = 3


#: what :meth:`Policy.describe` (and the command line, as a warning) says of a policy without the identity
NO_IDENTITY = ("no identity view: the input as it is is not among the views (a product keeps the identity only "
               "when every factor has it; write 'identity + ...', or a factor as '(identity + shift(dx=[-1, 1]))')")


class Policy:
    """An ordered list of views with weights.

    Build one from a spec (``Policy.parse("identity + hflip")``), from views
    (``Policy([identity(), hflip()])``), from Keras-style random draws
    (``Policy.random(n=7, seed=0, horizontal_flip=True)``) or from a file
    (``Policy.load("policy.yaml")``). ``+`` concatenates policies, ``*``
    takes their product (every pair of views, composed left to right), and
    ``0.5 * policy`` scales weights.
    """

    __slots__ = ("_views", "_weights", "_source", "_merge", "_inputs")

    #: the policy kind that reads staged specs (a ``|`` outside quotes) and files with ``stages``:
    #: the subclass declared with ``staged=True`` (:class:`~ttakit.policy.adaptive.AdaptivePolicy`,
    #: which ``ttakit.policy`` always imports), so that this module need not import it
    _staged_kind: type | None = None

    def __init_subclass__(cls, staged: bool = False, **kwargs):
        super().__init_subclass__(**kwargs)
        if staged:
            Policy._staged_kind = cls

    def __init__(self, views: Iterable[View] | View, weights: Sequence[float] | None = None,
                 *, source: str | None = None, merge=None, inputs: InputContract | dict | None = None):
        if isinstance(views, View):
            views = [views]
        views = list(views)
        for v in views:
            if not isinstance(v, View):
                raise PolicyError(f"a policy holds views, got {type(v).__name__}: {_short(v)}")
        if not views:
            raise PolicyError("a policy needs at least one view (use 'identity' for no TTA)")
        if weights is None:
            weights = [1.0] * len(views)
        try:
            weights = [float(w) for w in weights]
        except (TypeError, ValueError):
            raise PolicyError(f"weights must be numbers, got {_short(weights)}") from None
        if len(weights) != len(views):
            raise PolicyError(f"{len(views)} views but {len(weights)} weights")
        if any(not np.isfinite(w) or w < 0 for w in weights):
            raise PolicyError(f"weights must be finite and >= 0, got {_short(weights)}")
        if sum(weights) <= 0:
            raise PolicyError("at least one weight must be positive")
        if merge is not None and not isinstance(merge, Merge):
            merge = get_merge(merge)
        _check_size(views)
        object.__setattr__(self, "_views", tuple(views))
        object.__setattr__(self, "_weights", tuple(weights))
        object.__setattr__(self, "_source", source)
        #: the merge saved with the policy (a tuned temperature or learned weights), or None
        object.__setattr__(self, "_merge", merge)
        if isinstance(inputs, dict):
            inputs = InputContract.from_dict(inputs)
        if inputs is not None and not isinstance(inputs, InputContract):
            raise PolicyError(f"inputs must be an InputContract, got {type(inputs).__name__}")
        object.__setattr__(self, "_inputs", None if inputs is None or inputs.empty else inputs)

    def __setattr__(self, name, value):
        raise AttributeError(f"a Policy is immutable; build a new one (with_merge, scaled, +, *) "
                             f"instead of setting {name!r}")

    def __delattr__(self, name):
        raise AttributeError("a Policy is immutable")

    def __reduce__(self):
        return (_rebuild, (self._views, self._weights, self._source, self._merge, self._inputs))

    @property
    def source(self) -> str | None:
        """How the policy was written (a spec or a description); not part of
        its value: equal views, weights and merge make equal policies."""
        return self._source

    @property
    def merge(self):
        """The merge saved with the policy (None: the caller's choice, mean by default)."""
        return self._merge

    @property
    def aggregation(self) -> dict | None:
        """The saved merge as a mapping (None when the policy has none)."""
        return None if self._merge is None else self._merge.to_dict()

    @property
    def inputs(self) -> InputContract | None:
        """What the policy was tuned with (normalisation, model layout, output
        kind, classes), or None."""
        return self._inputs

    def with_merge(self, merge) -> "Policy":
        """The same views and weights with ``merge`` saved alongside (None: none)."""
        return Policy(self._views, self._weights, source=self._source, merge=merge, inputs=self._inputs)

    def with_source(self, source: str | None) -> "Policy":
        return Policy(self._views, self._weights, source=source, merge=self._merge, inputs=self._inputs)

    def with_inputs(self, inputs: InputContract | dict | None) -> "Policy":
        """The same policy with an input contract (None: none)."""
        return Policy(self._views, self._weights, source=self._source, merge=self._merge, inputs=inputs)

    # -- construction ---------------------------------------------------
    @classmethod
    def parse(cls, spec: str) -> "Policy":
        """Build a policy from a spec string (see :mod:`ttakit.policy.spec`);
        a spec with stages (``identity @ margin<0.2 | hflip``) gives an
        :class:`~ttakit.policy.adaptive.AdaptivePolicy`."""
        if cls is Policy and Policy._staged_kind is not None and _spec.is_staged(spec):
            return Policy._staged_kind.parse(spec)
        return _spec.parse(spec, _build_call, _count_call, cls.concat).with_source(spec)

    @classmethod
    def random(cls, n: int = 7, seed: int | None = 0, **keras_params: Any) -> "Policy":
        """``n`` random views with Keras ``ImageDataGenerator`` parameters
        (``horizontal_flip=True``, ``width_shift_range=0.1``, ...), drawn
        once from ``seed`` and kept as concrete views, duplicates included.
        ``n`` is at most the ``max_copies`` limit, and drawing stops as soon
        as the distinct views pass ``max_views`` (see :mod:`ttakit.limits`)."""
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
        return (isinstance(other, Policy) and self._views == other._views and self._weights == other._weights
                and self._merge == other._merge and self._inputs == other._inputs)

    def __hash__(self) -> int:
        return hash((self._views, self._weights, self._merge, self._inputs))

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

    @property
    def has_identity(self) -> bool:
        """True when one of the views is the identity (the input as it is).
        A product keeps the identity only when every factor has it:
        ``hflips * shift(dx=[-1, 1])`` has none, ``hflips * (identity +
        shift(dx=[-1, 1]))`` has it."""
        return any(v == _IDENTITY for v in self._views)

    def unique(self) -> "Policy":
        """Equal views merged into one entry with the summed weight, in order
        of first appearance. Merging with these weights gives exactly the
        result of the full list."""
        order: dict[View, float] = {}
        for v, w in self:
            order[v] = order.get(v, 0.0) + w
        return Policy(list(order), list(order.values()), source=self._source, merge=self._merge,
                      inputs=self._inputs)

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
        if not self.has_identity:
            lines.append(NO_IDENTITY)
        return "\n".join(lines)

    # -- algebra ------------------------------------------------------------
    def _combined_merge(self, other: "Policy", op: str):
        """The merge of ``self op other``: kept when both agree on a merge that
        holds nothing about particular views; an error when it would silently
        change meaning (learned weights for other views)."""
        return _join_merges(self._merge, other._merge, op)

    def _combined_inputs(self, other: "Policy", op: str):
        return _join_inputs(self._inputs, other._inputs, op)

    def __add__(self, other: "Policy") -> "Policy":
        return Policy.concat([self, other])

    @classmethod
    def concat(cls, policies: Iterable["Policy | str | View"]) -> "Policy":
        """``p1 + p2 + ...`` in one step (time linear in the total number of views)."""
        parts = [cls.coerce(p) for p in policies]
        if not parts:
            raise PolicyError("concat needs at least one policy")
        current().check("max_copies", sum(len(p) for p in parts),
                        "the sum of policies holds too many views, counting duplicates")
        merge, inputs = parts[0]._merge, parts[0]._inputs
        for p in parts[1:]:
            merge = _join_merges(merge, p._merge, "+")
            inputs = _join_inputs(inputs, p._inputs, "+")
        return Policy([v for p in parts for v in p._views], [w for p in parts for w in p._weights], merge=merge,
                      inputs=inputs)

    def __mul__(self, other: "Policy | float") -> "Policy":
        if isinstance(other, (int, float)):
            return self.scaled(other)
        other = Policy.coerce(other)
        merge = self._combined_merge(other, "*")
        inputs = self._combined_inputs(other, "*")
        limits = current()
        limits.check("max_copies", len(self) * len(other),
                     f"the product of policies of {len(self):,} and {len(other):,} views has too many views, "
                     "counting duplicates")
        track = len(self) * len(other) > limits.max_views
        seen: set[View] = set()
        views, weights = [], []
        for a, wa in self:
            for b, wb in other:
                view = compose(a, b)
                if track:
                    seen.add(view)
                    if len(seen) > limits.max_views:
                        limits.check("max_views", len(seen), "the product of policies has too many distinct views "
                                     "(forward passes per input), counted while composing")
                views.append(view)
                weights.append(wa * wb)
        return Policy(views, weights, merge=merge, inputs=inputs)

    def __rmul__(self, other: float) -> "Policy":
        if isinstance(other, (int, float)):
            return self.scaled(other)
        return NotImplemented

    def scaled(self, factor: float) -> "Policy":
        """Every weight times ``factor`` (the saved merge is kept: scaling all
        weights changes no merge's result)."""
        return Policy(self._views, [w * factor for w in self._weights], source=None, merge=self._merge,
                      inputs=self._inputs)

    # -- files ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "views": [{**v.to_dict(), "weight": w} for v, w in self],
        }
        if self._source:
            d["source"] = self._source
        if self._merge is not None:
            d["merge"] = self._merge.to_dict()
        if self._inputs is not None:
            d["inputs"] = self._inputs.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Policy":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise PolicyError(f"not a ttakit policy (expected a mapping with format: {FORMAT})")
        version = d.get("version", VERSION)
        if isinstance(version, bool) or not isinstance(version, int):
            raise PolicyError(f"policy file version must be an integer, got {version!r}")
        if version > NEWEST_VERSION:
            raise PolicyError(f"policy file version {d['version']} is newer than this ttakit "
                              f"understands ({NEWEST_VERSION}); upgrade ttakit")
        if "stages" in d and Policy._staged_kind is not None:
            return Policy._staged_kind.from_dict(d)
        entries = d.get("views")
        if not isinstance(entries, list) or not entries:
            raise PolicyError("a policy file needs a non-empty 'views' list")
        current().check("max_copies", len(entries), "the policy file lists too many views")
        views, weights = [], []
        for i, e in enumerate(entries):
            e = dict(e) if isinstance(e, dict) else e
            try:
                weights.append(_weight(e.pop("weight", 1.0)))
                views.append(view_from_dict(e))
            except PolicyError as err:
                raise type(err)(f"view #{i} of the policy: {err}") if not isinstance(err, LimitError) else err
            except (AttributeError, TypeError, ValueError, ArithmeticError) as err:
                raise PolicyError(f"view #{i} of the policy is malformed: {_short(e)}") from err
        try:
            if version == 1:  # a positional aggregation, aligned with the distinct views
                distinct = list(dict.fromkeys(views))
                merge = merge_from_aggregation(d["aggregation"], distinct) if d.get("aggregation") else None
            else:
                merge = merge_from_dict(d["merge"], view_from_dict) if d.get("merge") is not None else None
        except TTAKitError:
            raise
        except (AttributeError, TypeError, ValueError, ArithmeticError, KeyError, IndexError) as err:
            raise PolicyError(f"the policy's merge is malformed: {_short(d.get('merge', d.get('aggregation')))}"
                              ) from err
        source = d.get("source")
        inputs = InputContract.from_dict(d["inputs"]) if d.get("inputs") is not None else None
        return cls(views, weights, source=source if isinstance(source, str) else None, merge=merge, inputs=inputs)

    def save(self, path: str | Path) -> Path:
        """Write YAML (``.yaml``/``.yml``) or JSON (any other suffix),
        atomically: a temporary file in the same folder replaces ``path``
        once complete, so a reader never sees half a policy."""
        path = Path(path)
        d = self.to_dict()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(d, sort_keys=False)
        else:
            text = json.dumps(d, indent=2) + "\n"
        write_atomic(path, text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        """Read a policy file written by :meth:`save` (YAML for
        ``.yaml``/``.yml``, else JSON). Never runs code (YAML's safe loader);
        refuses files over the ``max_file_bytes`` limit before reading them
        whole, YAML aliases and anchors, and nesting deeper than ``max_depth``
        (see :mod:`ttakit.limits`)."""
        path = Path(path)
        from . import files

        data = files.read_document(path, current())
        try:
            return cls.from_dict(data)
        except LimitError as e:
            raise LimitError(f"policy file {path}: {e}", e.limit, e.value, e.found) from None
        except PolicyError as e:
            raise PolicyError(f"policy file {path}: {e}") from None


_IDENTITY = identity()


def _rebuild(views, weights, source, merge, inputs=None) -> Policy:
    return Policy(views, weights, source=source, merge=merge, inputs=inputs)


def _join_inputs(a, b, op: str):
    """The input contract of ``p op q``: one side's when the other has none."""
    if a is None or b is None or a == b:
        return a or b
    raise PolicyError(f"cannot combine policies with {op} that were tuned for different inputs "
                      f"({a.describe()} and {b.describe()})")


def _join_merges(a, b, op: str):
    """The merge of ``p op q`` for policies carrying merges ``a`` and ``b``."""
    if a is None and b is None:
        return None
    if a == b and not a.per_view:
        return a
    raise PolicyError(f"cannot combine policies with {op} when one carries a tuned merge ({a!r} and {b!r}): "
                      f"its weights belong to its own views. Drop it first with .with_merge(None)")


def _short(obj) -> str:
    text = repr(obj)
    return text if len(text) <= 200 else text[:200] + f"... ({len(text):,} characters)"


def _weight(w) -> float:
    """A view's weight from a policy file: a finite real number."""
    if isinstance(w, bool) or not isinstance(w, (int, float)):
        raise PolicyError(f"malformed weight: a number is needed, got {_short(w)}")
    try:
        return float(w)
    except OverflowError:
        raise PolicyError(f"malformed weight: a finite number is needed, got an integer of {len(str(w)):,} digits") from None


def _check_size(views: list) -> None:
    """Refuse more views than ``max_copies``, or more distinct views than
    ``max_views`` (hashing the views only when there are that many)."""
    limits = current()
    limits.check("max_copies", len(views), "a policy holds too many views, counting duplicates")
    if len(views) > limits.max_views:
        limits.check("max_views", len(set(views)), "a policy has too many distinct views (forward passes per input)")


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


def _no_files(name: str) -> PolicyError:
    return PolicyError(f"{name}(...) in a spec would read a file; files are not part of the spec grammar. Load a "
                       "policy file with Policy.load(path) in Python (and combine it: Policy.load(path) + "
                       "Policy.parse('hflip')), or pass --policy FILE on the command line")


def _count_call(name: str, args: list, kwargs: dict) -> int:
    """Views a spec call stands for, counted without building them."""
    if name == "random":
        n = args[0] if args else kwargs.get("n", 7)
        return _random.check_copies(n)
    if name in ("policy", "file"):
        raise _no_files(name)
    return count_views(name, *args, **kwargs)


def _build_call(name: str, args: list, kwargs: dict) -> Policy:
    if name == "random":
        if len(args) > 1:
            raise PolicyError("random takes one positional value (the number of copies), "
                              "then named Keras ImageDataGenerator parameters")
        kwargs = dict(kwargs)
        n = args[0] if args else kwargs.pop("n", 7)
        seed = kwargs.pop("seed", 0)
        kw = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
        return Policy.random(n, seed, **kw)
    if name in ("policy", "file"):
        raise _no_files(name)
    return Policy(make_views(name, *args, **kwargs))


__all__ = ["Policy", "VIEWS", "GROUPS"]
