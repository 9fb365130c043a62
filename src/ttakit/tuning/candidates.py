"""Candidate pools for policy search."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import PolicyError
from ..policy import Policy
from ..views import View, identity

_GEOMETRY = ("identity + shift(dx=[-2, -1, 1, 2]) + shift(dy=[-2, -1, 1, 2]) "
             "+ shift(dx=[-2, 2], dy=[-2, 2]) + scale(0.9, 1.1)")

#: named pools; each is a policy spec
POOLS: dict[str, str] = {
    # flips: the classic pair
    "flips": "hflips",
    # small, label-preserving views for natural images: 38 views
    "standard": (f"hflips * ({_GEOMETRY}) + multiply(0.9, 1.1) + contrast(0.8, 1.2) "
                 "+ random(4, seed=0, width_shift_range=0.1, height_shift_range=0.1, zoom_range=0.1, "
                 "horizontal_flip=true)"),
    # views that usually hurt on natural images: strong colour jitter, large rotations
    "harmful": ("contrast(0.3, 2.5) + multiply(0.4, 1.8) + add(-0.3, 0.3) + rotate(-45, 45) "
                "+ rot90(1, 3) + vflip"),
}


def _split_top_level(text: str) -> list[str]:
    """Split at commas that are not inside brackets or parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def candidate_views(candidates: "str | Policy | Sequence[View | str]") -> list[View]:
    """Distinct candidate views, identity first (always included: the search
    can then always fall back to no TTA).

    ``candidates`` is a pool name (``"standard"``), several joined with
    commas (``"standard,harmful"``), a policy spec, a Policy, or a list of
    views / specs.
    """
    items: list = []
    if isinstance(candidates, str):
        items = [c.strip() for c in _split_top_level(candidates) if c.strip()]
    elif isinstance(candidates, Policy):
        items = [candidates]
    elif isinstance(candidates, View):
        items = [candidates]
    else:
        items = list(candidates)
    if not items:
        raise PolicyError(f"the candidate pool is empty; use a pool name ({', '.join(POOLS)}) or view specs")
    views: list[View] = [identity()]
    for item in items:
        if isinstance(item, View):
            views.append(item)
            continue
        if isinstance(item, Policy):
            views.extend(item.views)
            continue
        spec = POOLS.get(item, item)
        try:
            views.extend(Policy.parse(spec).views)
        except PolicyError as e:
            raise PolicyError(f"candidate {item!r}: {e}\nCandidate pools: {', '.join(POOLS)}") from None
    return list(dict.fromkeys(views))
