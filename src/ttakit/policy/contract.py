"""What a tuned policy assumes about its inputs and its model.

A policy tuned with ``Normalize(mean, std)``, a model layout, an output
kind and class names gives its tuned predictions only with the same ones.
:class:`InputContract` records them in the policy file, and a
:class:`~ttakit.Classifier` given the policy adopts them when the caller
leaves them unset, and refuses options that contradict them (naming both).
The data's own layout is not part of it: ttakit converts any layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import PolicyError

OUTPUTS = ("probs", "logits")
LAYOUTS = ("NCHW", "NHWC")


def _floats(name: str, values) -> tuple[float, ...] | None:
    if values is None:
        return None
    try:
        out = tuple(float(v) for v in (values if isinstance(values, (list, tuple)) else [values]))
    except (TypeError, ValueError):
        raise PolicyError(f"the policy's {name} must be numbers, got {str(values)[:100]}") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise PolicyError(f"the policy's {name} must be finite numbers, got {str(values)[:100]}")
    return out


@dataclass(frozen=True)
class InputContract:
    """The preprocessing, model layout, output kind and classes a policy was tuned with."""

    mean: tuple[float, ...] | None = None   #: Normalize mean (on the 0-1 scale), or None
    std: tuple[float, ...] | None = None    #: Normalize std, or None
    model_layout: str | None = None         #: the layout the model consumes, when it was given
    output: str | None = None               #: "probs" or "logits": how the model's outputs were read
    classes: tuple[str, ...] | None = None  #: class names, in the model's order

    def __post_init__(self):
        object.__setattr__(self, "mean", _floats("normalize mean", self.mean))
        object.__setattr__(self, "std", _floats("normalize std", self.std))
        if (self.mean is None) != (self.std is None):
            raise PolicyError("the policy's normalisation needs both mean and std")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise PolicyError(f"the policy's normalize std must be positive, got {self.std}")
        if self.model_layout is not None and self.model_layout not in LAYOUTS:
            raise PolicyError(f"the policy's model_layout must be one of {LAYOUTS}, got {self.model_layout!r}")
        if self.output is not None and self.output not in OUTPUTS:
            raise PolicyError(f"the policy's output must be one of {OUTPUTS}, got {self.output!r}")
        if self.classes is not None:
            if not isinstance(self.classes, (list, tuple)) or not all(isinstance(c, str) for c in self.classes):
                raise PolicyError("the policy's classes must be a list of names")
            object.__setattr__(self, "classes", tuple(self.classes))

    @property
    def empty(self) -> bool:
        return all(getattr(self, k) is None for k in ("mean", "model_layout", "output", "classes"))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.mean is not None:
            d["normalize"] = {"mean": list(self.mean), "std": list(self.std)}
        for k in ("model_layout", "output"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.classes is not None:
            d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d) -> "InputContract":
        if not isinstance(d, dict):
            raise PolicyError(f"a policy's 'inputs' must be a mapping, got {type(d).__name__}")
        unknown = set(d) - {"normalize", "model_layout", "output", "classes"}
        if unknown:
            raise PolicyError(f"a policy's 'inputs' has unknown keys: {', '.join(sorted(map(str, unknown)))[:200]}")
        norm = d.get("normalize")
        if norm is not None and not isinstance(norm, dict):
            raise PolicyError("a policy's inputs.normalize must be a mapping with mean and std")
        return cls(mean=(norm or {}).get("mean"), std=(norm or {}).get("std"), model_layout=d.get("model_layout"),
                   output=d.get("output"), classes=d.get("classes"))

    def describe(self) -> str:
        parts = []
        if self.mean is not None:
            parts.append(f"Normalize(mean={list(self.mean)}, std={list(self.std)})")
        if self.model_layout:
            parts.append(f"model_layout={self.model_layout!r}")
        if self.output:
            parts.append(f"output={self.output!r}")
        if self.classes:
            parts.append(f"{len(self.classes)} classes")
        return ", ".join(parts) or "nothing"
