"""Models ttakit trains itself for an experiment (no pretrained weights
exist for its data), cached as plain ``state_dict`` files: written once,
read back with ``torch.load(weights_only=True)`` (tensors only, no pickled
code), beside a JSON note of how they were trained."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..datasets import cache_dir
from ..errors import InputError
from ..files import write_atomic


def weights_folder(cache: str | os.PathLike | None) -> Path:
    """``cache`` when given, else ``<user cache>/trained`` (``~/.cache/ttakit/trained``)."""
    return Path(cache).expanduser() if cache else cache_dir() / "trained"


def shared_folder(shared: str | os.PathLike, *parts: str) -> Path:
    """``shared/parts...``, with the README's hint when it is missing."""
    path = Path(shared).joinpath(*parts)
    if not path.exists():
        raise InputError(f"no {path}: pass --shared (the folder holding data/bccd and data/isbi2012-membrane; "
                         "read their READMEs)")
    return path


def cached_model(path: Path, build: Callable[[], torch.nn.Module], train: Callable[[], tuple],
                 log=print) -> tuple[torch.nn.Module, dict, bool]:
    """The model whose weights are at ``path`` (``build()`` then its state
    dict) and its training note, or, when the file is missing, a model from
    ``train()`` (returning ``(model, note)``), saved there first. The last
    value says whether it was trained now."""
    note_path = path.with_suffix(".json")
    if path.exists():
        model = build()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.eval()
        note = json.loads(note_path.read_text()) if note_path.exists() else {}
        log(f"loaded cached weights {path}")
        return model, note, False
    model, note = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    write_atomic(note_path, json.dumps(note, indent=1) + "\n")
    log(f"saved weights {path}")
    return model, note, True
