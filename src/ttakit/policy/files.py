"""Reading policy files without letting the file decide how much work that is.

:func:`read_document` refuses a file over ``max_file_bytes`` before reading it
whole (and reads at most one byte more, so ``/dev/zero`` is refused too),
text that is not UTF-8, YAML aliases and anchors (a 500-byte "billion
laughs" document expands to gigabytes), and lists or mappings nested deeper
than ``max_depth``. YAML is read with the safe loader only (libyaml's when
installed): loading a policy never runs code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import PolicyError
from ..limits import Limits

YAML_SUFFIXES = (".yaml", ".yml")


def _cut(text: str, width: int = 300) -> str:
    return text if len(text) <= width else text[:width] + "..."


def read_bytes(path: Path, limits: Limits) -> bytes:
    """The file's bytes, refused over ``max_file_bytes`` before reading them whole."""
    what = f"policy file {path} is too large (bytes)"
    try:
        with open(path, "rb") as f:
            limits.check("max_file_bytes", os.fstat(f.fileno()).st_size, what)
            data = f.read(limits.max_file_bytes + 1)  # devices and pipes report no size
    except OSError as e:
        raise PolicyError(f"cannot read policy file {path}: {e.strerror or e}") from None
    limits.check("max_file_bytes", len(data), what)
    return data


def check_yaml(text: str, path: Path, limits: Limits, loader) -> None:
    """Refuse aliases, anchors and deep nesting by scanning the YAML events
    (the parser keeps its own stack: no recursion on nesting)."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise PolicyError(f"policy file {path} uses a YAML anchor or alias ('&' or '*'), which policy files "
                              f"may not: write the values out")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            limits.check("max_depth", depth, f"policy file {path} nests lists or mappings too deeply")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _depth(data: Any, limits: Limits, path: Path) -> None:
    """Refuse lists and mappings nested deeper than ``max_depth`` (iteratively)."""
    stack = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (list, dict)):
            depth += 1
            limits.check("max_depth", depth, f"policy file {path} nests lists or mappings too deeply")
            stack.extend((child, depth) for child in (node.values() if isinstance(node, dict) else node))


def read_document(path: Path, limits: Limits) -> Any:
    """The parsed contents of a policy file (YAML for .yaml/.yml, else JSON)."""
    data = read_bytes(path, limits)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyError(f"policy file {path} is not UTF-8 text (byte {e.start})") from None
    try:
        if path.suffix.lower() in YAML_SUFFIXES:
            import yaml

            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            check_yaml(text, path, limits, loader)
            doc = yaml.load(text, Loader=loader)  # the safe loader: plain data only
        else:
            doc = json.loads(text)
    except PolicyError:
        raise
    except Exception as e:  # yaml and json raise their own error types (RecursionError on deep JSON too)
        raise PolicyError(f"policy file {path} does not parse: {_cut(str(e))}") from None
    _depth(doc, limits, path)
    return doc
