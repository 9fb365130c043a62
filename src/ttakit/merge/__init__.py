"""Merges: reduce the views' outputs to one prediction, view by view.

Built in: ``mean`` (soft voting), ``sum``, ``gmean``, ``logits``, ``max``,
``min``, ``vote``, ``sharpen(T)``, ``weighted(...)``, ``learned`` (fitted
weights) and any merge with a temperature. :func:`register_merge` adds a
user's merge: it then works by name in :func:`get_merge`, in policy files
and in ``ttakit views``.
"""

from __future__ import annotations

import re

from ..errors import PolicyError, did_you_mean
from .base import KINDS, Accumulator, Merge, normalise, to_log_probs, to_probs
from .boxes import BoxMerge, BoxSet, NMS, SoftNMS, WBF, get_box_merge
from .learned import LearnedMerge, TemperatureScaled
from .probabilities import (BUILT_IN, GeometricMean, Max, Mean, MeanLogits, Min, Sharpen, Sum, Vote,
                            WeightedMean)

MERGES: dict[str, type[Merge]] = {cls.name: cls for cls in BUILT_IN}
ALIASES = {"soft": "mean", "average": "mean", "geometric_mean": "gmean", "mean_logits": "logits",
           "hard": "vote", "temperature": "sharpen"}
_SAVED_ONLY = {"learned": LearnedMerge, "temperature_scaled": TemperatureScaled}


def register_merge(cls: type[Merge], *, replace: bool = False) -> type[Merge]:
    """Make a :class:`Merge` subclass available by its ``name`` (in
    :func:`get_merge`, ``Classifier(merge="name")``, policy files and
    ``ttakit views``). Its constructor takes the values of :meth:`Merge.params`
    as keyword arguments. Usable as a class decorator."""
    if not (isinstance(cls, type) and issubclass(cls, Merge)):
        raise PolicyError(f"register_merge needs a Merge subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise PolicyError(f"a merge's name must be an identifier, got {name!r}")
    if (name in MERGES or name in _SAVED_ONLY or name in ALIASES) and not replace:
        raise PolicyError(f"a merge named {name!r} already exists; pass replace=True to replace it")
    MERGES[name] = cls
    return cls


def get_merge(merge: "str | Merge") -> Merge:
    """A merge from its name (``"mean"``, ``"sharpen(0.3)"``...) or itself."""
    if isinstance(merge, Merge):
        return merge
    if not isinstance(merge, str):
        raise PolicyError(f"merge must be a name or a Merge, got {type(merge).__name__}")
    text = merge if len(merge) <= 200 else merge[:200] + "..."
    m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*", merge, flags=re.S)
    if not m:
        raise PolicyError(f"cannot read merge {text!r}; valid: {', '.join(MERGES)}")
    name, arg = m.group(1).lower(), m.group(2)
    name = ALIASES.get(name, name)
    if name not in MERGES:
        raise PolicyError(f"unknown merge {m.group(1)!r}.{did_you_mean(name, MERGES)} Valid: {', '.join(MERGES)}")
    cls = MERGES[name]
    try:
        if cls is WeightedMean:
            if not arg:
                raise PolicyError("the weighted merge needs weights: weighted(1, 0.5, ...) or WeightedMean([...])")
            return cls([float(v) for v in arg.strip("[] ").split(",")])
        if arg:
            value = arg.split("=")[-1]
            return cls(float(value))
        return cls()
    except PolicyError:
        raise
    except (TypeError, ValueError) as e:
        raise PolicyError(f"bad parameters for merge {text!r}: {e}") from None


def merge_from_dict(d, view_from_dict=None) -> Merge:
    """Inverse of :meth:`Merge.to_dict` (``view_from_dict`` reads the views
    that learned weights are keyed by)."""
    if not isinstance(d, dict) or not isinstance(d.get("merge"), str):
        raise PolicyError(f"a merge entry must be a mapping with a 'merge' name, got {_short(d)}")
    d = dict(d)
    name = d.pop("merge")
    if name == "learned":
        return LearnedMerge.from_dict(d, view_from_dict)
    if name == "temperature_scaled":
        if "base" not in d or "temperature" not in d:
            raise PolicyError("a temperature_scaled merge needs 'base' and 'temperature'")
        return TemperatureScaled(merge_from_dict(d["base"], view_from_dict), d["temperature"])
    cls = MERGES.get(ALIASES.get(name, name))
    if cls is None:
        raise PolicyError(f"unknown merge {name!r}.{did_you_mean(name, MERGES)} Valid: {', '.join(MERGES)}")
    if cls is WeightedMean and d.get("weights") and isinstance(d["weights"][0], dict):
        raise PolicyError("a saved weighted merge keyed by view is not supported; save weights by position")
    try:
        return cls(**d)
    except PolicyError:
        raise
    except (TypeError, ValueError) as e:
        raise PolicyError(f"bad parameters for merge {name!r}: {e}") from None


def merge_from_aggregation(aggregation: dict | None, views=None) -> Merge:
    """The merge a version-1 policy file's ``aggregation`` entry describes
    (mean when none). Its learned weights are aligned with ``views`` (the
    policy's distinct views) by position."""
    if not aggregation:
        return Mean()
    if not isinstance(aggregation, dict):
        raise PolicyError(f"a policy's aggregation must be a mapping, got {_short(aggregation)}")
    name = aggregation.get("merge", "mean")
    if name == "learned":
        if "weights" not in aggregation:
            raise PolicyError("a learned aggregation needs 'weights'")
        return LearnedMerge(aggregation["weights"], aggregation.get("temperature", 1.0), views)
    base = get_merge(name)
    t = aggregation.get("temperature")
    return TemperatureScaled(base, float(t)) if t not in (None, 1, 1.0) else base


def _short(obj) -> str:
    text = repr(obj)
    return text if len(text) <= 200 else text[:200] + "..."


__all__ = ["Merge", "Accumulator", "Mean", "Sum", "GeometricMean", "MeanLogits", "Max", "Min", "Vote", "Sharpen",
           "WeightedMean", "LearnedMerge", "TemperatureScaled", "MERGES", "KINDS", "get_merge", "register_merge",
           "merge_from_dict", "merge_from_aggregation", "to_probs", "to_log_probs", "normalise",
           "BoxMerge", "BoxSet", "NMS", "SoftNMS", "WBF", "get_box_merge"]
