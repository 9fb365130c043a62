"""Policies of row views, written as specs and saved with their statistics.

Row views (:mod:`ttakit.views.rows`) need the feature statistics of the
training rows (column roles, robust spread, range, category frequencies), so
a policy of row views is only complete with them. Two ways to get one:

- a **spec** and statistics fitted on training rows::

      row_policy("noise(0.1) + dropout(0.05)", stats, n_copies=8, seed=0)

  Each term is a family (``noise``, ``jitter``, ``dropout``, ``resample``,
  or their full names) with an optional strength (default: the middle of the
  family's tuning grid), expanded to ``n_copies`` seeded copies weighted
  ``1 / n_copies``: term ``k`` uses seeds ``seed + 1000 k + 0 ... n_copies - 1``,
  as :class:`ttakit.sklearn.TTAClassifier` numbers its candidates. ``none``
  or ``identity`` is no TTA.
- a **row policy file** (JSON, or YAML for ``.yaml``/``.yml``), written by
  :func:`save_row_policy` (``TTAClassifier.save_policy``): the views (family,
  strength, seed, weight), the merge, the task and the statistics, so that
  predictions made from the file equal the meta-estimator's own. Reading one
  never runs code and obeys the policy file limits (:mod:`ttakit.limits`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, PolicyError
from ..files import write_atomic
from ..limits import current
from ..views import identity
from ..views.rows import DEFAULT_STRENGTHS, FeatureStats, RowView, family
from .files import YAML_SUFFIXES, read_document
from .policy import Policy

FORMAT = "ttakit.row_policy"
VERSION = 1
TASKS = ("classification", "regression")
ROW_MERGES = ("mean", "median")
#: seeds of term k of a spec start at seed + SEED_STRIDE * k
SEED_STRIDE = 1000
_TERM = re.compile(r"^\s*([A-Za-z_]+)\s*(?:\(\s*([^()]*?)\s*\))?\s*$")


@dataclass(frozen=True)
class RowPolicy:
    """Row views with their weights and statistics, the task they were
    chosen for (None: either) and how to merge regression copies."""

    policy: Policy
    stats: FeatureStats
    task: str | None = None
    merge: str = "mean"
    source: str | None = None


def row_policy(spec: str, stats: FeatureStats, *, n_copies: int = 8, seed: int = 0) -> Policy:
    """The policy a spec such as ``"noise(0.1) + dropout(0.05)"`` names (see
    the module doc)."""
    if not isinstance(spec, str) or not spec.strip():
        raise PolicyError("a row view spec is a non-empty string such as 'noise(0.1) + dropout(0.05)'")
    if isinstance(n_copies, bool) or not isinstance(n_copies, int) or n_copies < 1:
        raise PolicyError(f"n_copies must be a positive integer, got {n_copies!r}")
    terms = [t for t in spec.split("+")]
    current().check("max_copies", len(terms) * n_copies, "the row view spec asks for too many copies")
    views, weights = [], []
    for k, term in enumerate(terms):
        m = _TERM.match(term)
        if not m:
            raise PolicyError(f"cannot read {term.strip()!r} in the row view spec {spec!r}: write "
                              "family(strength) terms joined by '+', e.g. 'noise(0.1) + dropout(0.05)'")
        name, strength = m.group(1).lower(), m.group(2)
        if name in ("none", "identity"):
            if strength:
                raise PolicyError(f"{name} takes no strength, got {term.strip()!r}")
            views.append(identity())
            weights.append(1.0)
            continue
        cls = family(name)
        if strength is None or strength == "":
            value = sorted(DEFAULT_STRENGTHS[cls.name])[len(DEFAULT_STRENGTHS[cls.name]) // 2]
        else:
            try:
                value = float(strength)
            except ValueError:
                raise PolicyError(f"the strength of {term.strip()!r} must be one number") from None
        for c in range(n_copies):
            views.append(cls(stats, value, seed + SEED_STRIDE * k + c))
            weights.append(1.0 / n_copies)
    return Policy(views, weights, source=spec.strip())


def to_dict(rp: RowPolicy) -> dict:
    """The mapping :func:`save_row_policy` writes."""
    entries = []
    for view, w in rp.policy:
        if isinstance(view, RowView):
            if view.stats.fingerprint != rp.stats.fingerprint:
                raise PolicyError(f"view {view.name} was made with other feature statistics than the policy's")
            entries.append({"family": view.name, "strength": view.strength, "seed": view.seed, "weight": w})
        elif view == identity():
            entries.append({"family": "identity", "weight": w})
        else:
            raise PolicyError(f"a row policy holds row views and identity, got {view!r}")
    if rp.task not in (None, *TASKS):
        raise PolicyError(f"task must be one of {', '.join(TASKS)} or None, got {rp.task!r}")
    if rp.merge not in ROW_MERGES:
        raise PolicyError(f"merge must be one of {', '.join(ROW_MERGES)}, got {rp.merge!r}")
    d = {"format": FORMAT, "version": VERSION, "task": rp.task, "merge": rp.merge, "views": entries,
         "stats": rp.stats.to_dict()}
    if rp.source:
        d["source"] = rp.source
    return d


def from_dict(d) -> RowPolicy:
    """A :class:`RowPolicy` from :func:`to_dict`'s mapping."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise PolicyError(f"not a ttakit row policy (expected a mapping with format: {FORMAT}); a row policy "
                          "file is written by TTAClassifier.save_policy / TTARegressor.save_policy")
    version = d.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version > VERSION:
        raise PolicyError(f"row policy version {version!r} is not one this ttakit reads (<= {VERSION})")
    if d.get("task") not in (None, *TASKS):
        raise PolicyError(f"row policy task must be one of {', '.join(TASKS)}, got {d.get('task')!r}")
    if d.get("merge", "mean") not in ROW_MERGES:
        raise PolicyError(f"row policy merge must be one of {', '.join(ROW_MERGES)}, got {d.get('merge')!r}")
    try:
        stats = FeatureStats.from_dict(d["stats"])
    except KeyError:
        raise PolicyError("the row policy has no 'stats' (feature statistics)") from None
    except InputError as e:
        raise PolicyError(f"the row policy's {e}") from None
    entries = d.get("views")
    if not isinstance(entries, list) or not entries:
        raise PolicyError("a row policy needs a non-empty 'views' list")
    current().check("max_copies", len(entries), "the row policy lists too many views")
    views, weights = [], []
    for i, e in enumerate(entries):
        try:
            name = e["family"]
            weights.append(float(e.get("weight", 1.0)))
            views.append(identity() if name == "identity" else
                         family(name)(stats, float(e["strength"]), int(e["seed"])))
        except PolicyError as err:
            raise PolicyError(f"view #{i} of the row policy: {err}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise PolicyError(f"view #{i} of the row policy is malformed ({type(err).__name__}: {err})") from None
    source = d.get("source")
    return RowPolicy(Policy(views, weights, source=source if isinstance(source, str) else None), stats,
                     d.get("task"), d.get("merge", "mean"), source if isinstance(source, str) else None)


def save_row_policy(rp: RowPolicy, path: str | Path) -> Path:
    """Write ``rp`` to ``path`` (YAML for ``.yaml``/``.yml``, else JSON), atomically."""
    path = Path(path)
    d = to_dict(rp)
    if path.suffix.lower() in YAML_SUFFIXES:
        import yaml

        text = yaml.safe_dump(d, sort_keys=False)
    else:
        text = json.dumps(d, indent=1) + "\n"
    write_atomic(path, text)
    return path


def load_row_policy(path: str | Path) -> RowPolicy:
    """Read a file written by :func:`save_row_policy` (never runs code)."""
    path = Path(path)
    try:
        return from_dict(read_document(path, current()))
    except PolicyError as e:
        raise PolicyError(f"row policy file {path}: {e}") from None


def is_row_policy_file(path: str | Path) -> bool:
    """True when ``path`` names a policy file (by suffix) rather than a spec."""
    return Path(str(path)).suffix.lower() in (".json", *YAML_SUFFIXES)


__all__ = ["RowPolicy", "row_policy", "save_row_policy", "load_row_policy", "is_row_policy_file", "to_dict",
           "from_dict", "FORMAT", "TASKS", "ROW_MERGES", "SEED_STRIDE"]
