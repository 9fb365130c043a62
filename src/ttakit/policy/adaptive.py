"""Adaptive policies: views run in stages, and an input goes on to the next
stage only while its merged prediction is still uncertain.

A spec lists the stages separated by ``|``; every stage but the last ends
with ``@ rule``, the condition under which an input goes on::

    identity @ margin<0.2 | hflip @ margin<0.1 | vflip + rot90

- ``margin<t``: the top merged probability minus the second is below ``t``,
- ``maxprob<t``: the top merged probability is below ``t``,
- ``entropy>t``: the entropy of the merged probabilities (nats) is above ``t``.

The merged prediction after a stage is the policy's merge over the views
run so far (each with its weight). An input that goes through every stage
gets exactly the full policy's result (:attr:`AdaptivePolicy.full`); the
others stop early and cost fewer forward passes. Each distinct view belongs
to one stage. Everything that does not know about stages (evaluation on a
prediction cache, policy algebra) sees the full policy: an
:class:`AdaptivePolicy` is a :class:`~ttakit.Policy` whose views are the
stages' views in order.

Files: ``version: 3`` with a ``stages`` list (each ``views`` and, but for the
last, ``continue_if: "margin<0.2"``); plain policies still write version 2.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import PolicyError
from ..limits import current
from .contract import InputContract
from .policy import FORMAT, Policy
from .spec import is_staged as is_adaptive_spec, split_stages

#: file version of adaptive policies (plain policies keep version 2)
ADAPTIVE_VERSION = 3
#: how uncertainty is measured, and which side of the threshold goes on
MEASURES = {"margin": "<", "maxprob": "<", "entropy": ">"}
_RULE = re.compile(r"^\s*([A-Za-z_]+)\s*([<>])\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Rule:
    """When an input goes on to the next stage: ``measure`` of its merged
    probabilities on the uncertain side of ``threshold``."""

    measure: str
    threshold: float

    def __post_init__(self):
        if self.measure not in MEASURES:
            raise PolicyError(f"an adaptive rule measures one of {', '.join(MEASURES)}, got {self.measure!r}")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise PolicyError(f"an adaptive rule's threshold must be a finite number, got {t!r}")
        object.__setattr__(self, "threshold", float(t))

    @classmethod
    def parse(cls, text: str) -> "Rule":
        m = _RULE.match(str(text))
        if not m:
            raise PolicyError(f"cannot read the adaptive rule {str(text)[:60]!r}: write 'margin<0.2', "
                              f"'maxprob<0.9' or 'entropy>0.5'")
        name, op, value = m.groups()
        if name not in MEASURES:
            raise PolicyError(f"an adaptive rule measures one of {', '.join(MEASURES)}, got {name!r}")
        if op != MEASURES[name]:
            raise PolicyError(f"the rule on {name} continues while it is {MEASURES[name]} a threshold: write "
                              f"'{name}{MEASURES[name]}{value}'")
        return cls(name, float(value))

    def __str__(self) -> str:
        return f"{self.measure}{MEASURES[self.measure]}{self.threshold!r}"

    def values(self, probs):
        """The measure of each row of ``probs`` (NumPy or torch, ``(N, C)``)."""
        return measure(probs, self.measure)

    def uncertain(self, probs):
        """True for the rows of ``probs`` that go on to the next stage."""
        v = self.values(probs)
        return v > self.threshold if MEASURES[self.measure] == ">" else v < self.threshold


def measure(probs, name: str):
    """``margin``, ``maxprob`` or ``entropy`` of each row of ``probs``."""
    if isinstance(probs, torch.Tensor):
        if name == "entropy":
            return -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        top = probs.topk(min(2, probs.shape[-1]), dim=-1).values
        if name == "maxprob":
            return top[:, 0]
        return top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0.0)
    p = np.asarray(probs)
    if name == "entropy":
        return -(p * np.log(np.clip(p, 1e-12, None))).sum(-1)
    if name == "maxprob":
        return p.max(-1)
    part = np.partition(p, p.shape[-1] - 2, axis=-1) if p.shape[-1] > 1 else np.concatenate(
        [np.zeros_like(p), p], -1)
    return part[:, -1] - part[:, -2]


class AdaptivePolicy(Policy, staged=True):
    """A policy run in stages (see the module doc).

    ``AdaptivePolicy([p1, p2, p3], ["margin<0.2", "margin<0.1"])`` from
    policies (or specs) and one rule per stage but the last;
    ``AdaptivePolicy.parse("identity @ margin<0.2 | hflip")`` from a spec.
    ``merge`` and ``inputs`` are the whole policy's (a stage's own are refused)."""

    __slots__ = ("_stages", "_rules")

    def __init__(self, stages, rules, *, source: str | None = None, merge=None,
                 inputs: InputContract | dict | None = None):
        stages = [Policy.coerce(s) for s in stages]
        rules = [r if isinstance(r, Rule) else Rule.parse(r) for r in rules]
        if len(stages) < 1:
            raise PolicyError("an adaptive policy needs at least one stage")
        if len(rules) != len(stages) - 1:
            raise PolicyError(f"an adaptive policy of {len(stages)} stages needs {len(stages) - 1} rule(s) (one "
                              f"after every stage but the last), got {len(rules)}")
        seen: dict = {}
        for k, s in enumerate(stages, 1):
            if s.merge is not None or s.inputs is not None:
                raise PolicyError(f"stage {k} carries its own merge or input contract: give them to the whole "
                                  f"adaptive policy instead")
            for v in dict.fromkeys(s.views):
                if v in seen:
                    raise PolicyError(f"view {v!r} is in stages {seen[v]} and {k}: each distinct view runs in "
                                      f"one stage")
                seen[v] = k
        current().check("max_copies", sum(len(s) for s in stages), "an adaptive policy holds too many views")
        super().__init__([v for s in stages for v in s.views], [w for s in stages for w in s.weights],
                         source=source, merge=merge, inputs=inputs)
        object.__setattr__(self, "_stages", tuple(s.with_source(None) for s in stages))
        object.__setattr__(self, "_rules", tuple(rules))

    def __reduce__(self):
        return (_rebuild_adaptive, (self._stages, self._rules, self._source, self._merge, self._inputs))

    # -- inspection ---------------------------------------------------------
    @property
    def stages(self) -> tuple[Policy, ...]:
        return self._stages

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    @property
    def full(self) -> Policy:
        """The same views, weights and merge as one plain policy (every view for every input)."""
        return Policy(self.views, self.weights, source=None, merge=self._merge, inputs=self._inputs)

    def stage_of_views(self, views) -> list[int]:
        """The stage (0-based) each of ``views`` belongs to."""
        where = {v: k for k, s in enumerate(self._stages) for v in s.views}
        try:
            return [where[v] for v in views]
        except KeyError as e:
            raise PolicyError(f"view {e.args[0]!r} is in no stage of this adaptive policy") from None

    @property
    def spec(self) -> str:
        parts = []
        for k, s in enumerate(self._stages):
            parts.append(s.spec + (f" @ {self._rules[k]}" if k < len(self._rules) else ""))
        return " | ".join(parts)

    def __repr__(self) -> str:
        return f"AdaptivePolicy({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, AdaptivePolicy) and super().__eq__(other) and self._stages == other._stages
                and self._rules == other._rules)

    def __hash__(self) -> int:
        return hash((super().__hash__(), self._stages, self._rules))

    def describe(self) -> str:
        lines = []
        for k, s in enumerate(self._stages, 1):
            rule = f"; inputs with {self._rules[k - 1]} go on" if k <= len(self._rules) else ""
            lines.append(f"stage {k}: {s.spec} ({len(s.unique())} forward passes per input reaching it){rule}")
        return "\n".join(lines) + "\n\nas a full policy:\n" + self.full.describe()

    # -- the same policy with one thing changed --------------------------------
    def with_merge(self, merge) -> "AdaptivePolicy":
        return AdaptivePolicy(self._stages, self._rules, source=self._source, merge=merge, inputs=self._inputs)

    def with_source(self, source: str | None) -> "AdaptivePolicy":
        return AdaptivePolicy(self._stages, self._rules, source=source, merge=self._merge, inputs=self._inputs)

    def with_inputs(self, inputs) -> "AdaptivePolicy":
        return AdaptivePolicy(self._stages, self._rules, source=self._source, merge=self._merge, inputs=inputs)

    def with_rules(self, rules) -> "AdaptivePolicy":
        return AdaptivePolicy(self._stages, rules, source=None, merge=self._merge, inputs=self._inputs)

    # -- spec and files ---------------------------------------------------------
    @classmethod
    def parse(cls, spec: str) -> "AdaptivePolicy":
        current().check("max_spec_chars", len(spec), "the policy spec is too long (characters)")
        stages, rules = [], []
        parts = split_stages(spec)
        for k, part in enumerate(parts):
            text, _, rule = part.rpartition("@") if "@" in part else (part, "", "")
            if k < len(parts) - 1:
                if not rule.strip():
                    raise PolicyError(f"stage {k + 1} of {spec!r} needs a rule: '... @ margin<0.2 | ...'")
                rules.append(Rule.parse(rule))
            elif rule.strip():
                raise PolicyError(f"the last stage of {spec!r} has a rule ({rule.strip()!r}) but no stage follows")
            if not text.strip():
                raise PolicyError(f"stage {k + 1} of {spec!r} names no views")
            stages.append(Policy.parse(text.strip()))
        return cls(stages, rules, source=spec)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()  # format, source, merge and inputs as a plain policy writes them
        d["version"] = ADAPTIVE_VERSION
        del d["views"]
        d["stages"] = []
        for k, s in enumerate(self._stages):
            entry: dict[str, Any] = {"views": s.to_dict()["views"]}
            if k < len(self._rules):
                entry["continue_if"] = str(self._rules[k])
            d["stages"].append(entry)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AdaptivePolicy":
        stages = d.get("stages")
        if not isinstance(stages, list) or not stages:
            raise PolicyError("an adaptive policy file needs a non-empty 'stages' list")
        rest = {k: v for k, v in d.items() if k not in ("stages", "version")}
        parts, rules = [], []
        for k, s in enumerate(stages, 1):
            if not isinstance(s, dict):
                raise PolicyError(f"stage {k} of the adaptive policy is not a mapping")
            try:
                parts.append(Policy.from_dict({"format": FORMAT, "version": 2, "views": s.get("views")}))
            except PolicyError as e:
                raise type(e)(f"stage {k}: {e}") from None
            if k < len(stages):
                if "continue_if" not in s:
                    raise PolicyError(f"stage {k} of the adaptive policy needs 'continue_if' (e.g. 'margin<0.2')")
                rules.append(Rule.parse(s["continue_if"]))
            elif "continue_if" in s:
                raise PolicyError("the last stage of an adaptive policy has 'continue_if' but no stage follows")
        whole = Policy.from_dict({**rest, "version": 2, "views": [e for s in stages for e in s["views"]]})
        return cls(parts, rules, source=whole.source, merge=whole.merge, inputs=whole.inputs)


def _rebuild_adaptive(stages, rules, source, merge, inputs) -> AdaptivePolicy:
    return AdaptivePolicy(stages, rules, source=source, merge=merge, inputs=inputs)


__all__ = ["AdaptivePolicy", "Rule", "MEASURES", "measure", "split_stages", "is_adaptive_spec"]
