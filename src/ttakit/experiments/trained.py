"""Models ttakit trains itself for an experiment (no pretrained weights
exist for its data), cached as plain ``state_dict`` files: written once,
read back with ``torch.load(weights_only=True)`` (tensors only, no pickled
code), beside a JSON note of how they were trained."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
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


def warm_up(model: torch.nn.Module, x: np.ndarray) -> None:
    """One forward pass on the first input, so that the first arm's time is not the allocator's."""
    with torch.inference_mode():
        model(torch.from_numpy(x[:1]))


def timed(run: Callable[[], object], n: int) -> tuple[object, dict]:
    """``run()`` and its wall and CPU milliseconds per input (``n`` inputs)."""
    t0, c0 = time.perf_counter(), time.process_time()
    res = run()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return res, {"ms_per_image": 1000 * seconds / n, "cpu_ms_per_image": 1000 * cpu / n}


def summary_head(cfg, weights: Path, fresh: bool, note: dict) -> dict:
    """The first keys of a trained-model experiment's summary: its config, the machine's load, the
    weights file and how (and whether, this time) they were trained."""
    return {"config": asdict(cfg), "load_average": os.getloadavg(), "weights": weights.name, "trained_now": fresh,
            "training": note}


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


def minutes(seconds) -> str:
    return "? min" if seconds is None else f"{seconds / 60:.1f} min"


def training_words(cfg: dict, tr: dict) -> str:
    """How the training went, in words: steps done of those asked, wall time, threads, CPU share."""
    steps = f"{tr.get('steps', '?')} steps" + (f" of the {cfg['steps']} asked: stopped by the "
                                              f"{cfg['max_minutes']:g}-minute cap" if tr.get("stopped_by_time") else "")
    cpu = f", {tr['cpu_seconds'] / 60:.1f} min of CPU" if tr.get("cpu_seconds") else ""
    return (f"{steps}; {minutes(tr.get('seconds'))} wall{cpu} on {tr.get('threads', '?')} torch thread(s) of a "
            "2-core machine shared with other jobs")


def verdict(arms: list[dict], key: str, label: str, points: float = 100) -> str:
    """One plain sentence per TTA arm: helps (CI above 0), hurts (below) or
    no difference the CI can tell from zero."""
    base = arms[0]
    parts = []
    for r in arms[1:]:
        p = r["paired"][key] if key in r["paired"] else r["paired"]
        d = f"{points * p['difference']:+.2f} points"
        if p["ci_low"] > 0:
            word = f"helps ({d}, CI above zero)"
        elif p["ci_high"] < 0:
            word = f"hurts ({d}, CI below zero)"
        else:
            word = f"does not help measurably ({d}, CI includes zero)"
        t = "cpu_ms_per_image" if "cpu_ms_per_image" in r else "ms_per_image"
        parts.append(f"{r['arm']} {word} at {r[t] / base[t]:.1f}x the {'CPU ' if t.startswith('cpu') else ''}time")
    return f"On {label}: " + "; ".join(parts) + "."


def timing_note(summary: dict) -> str:
    """What the time per image means on the machine the run had."""
    load = summary.get("load_average")
    at = f"; 1-minute load average {load[0]:.1f} at the end of the run" if load else ""
    return (f"Times: CPU time of this process over each arm's whole run on {summary['config']['threads']} torch "
            f"thread(s) (wall time, in the JSON as ms_per_image, is meaningless here: the arms ran one after the "
            f"other on a 2-core machine shared with other jobs{at}).")
