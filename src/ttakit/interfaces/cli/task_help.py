"""One ``--help`` per task: ``ttakit predict --task detect --help`` shows the
options of detection only, ``ttakit predict --data new.csv --help`` those of
tables, ``ttakit predict --engine ray --help`` those of Ray, and a plain
``ttakit predict --help`` those of classifying image files, with a footer
naming the other helps.

The task is read from the command line before parsing (:func:`task_of`);
:func:`focus` then hides (``argparse.SUPPRESS``) the options of the other
tasks, by argument group and by option (:data:`SHOWN_FOR`), and keeps the
examples of the epilog that are about this task.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from pathlib import Path

#: the tasks a help page can be about
TASKS = ("image", "ray", "table", "detect", "segment", "keypoints")
IMAGE = frozenset({"image", "ray"})
DENSE = frozenset({"detect", "segment", "keypoints"})
TABLE = frozenset({"table"})
ALL = frozenset(TASKS)
#: the commands with one help per task
COMMANDS = ("predict", "evaluate", "tune")

#: argument group title (its start) -> the tasks its options are shown for
GROUPS = {"tables": TABLE, "dense tasks": DENSE, "scale-out": frozenset({"ray"})}

#: (command or "*", option dest) -> the tasks the option is shown for; unlisted: its group's, else all
SHOWN_FOR: dict[tuple[str, str], frozenset] = {
    ("*", "images"): IMAGE | DENSE, ("*", "task"): IMAGE | DENSE,
    ("*", "output_kind"): IMAGE | {"segment"}, ("*", "model_layout"): IMAGE | DENSE,
    ("*", "batch_size"): IMAGE | DENSE, ("*", "mean"): IMAGE | DENSE, ("*", "std"): IMAGE | DENSE,
    ("*", "device"): frozenset({"image"}) | DENSE, ("*", "runtime"): frozenset({"image"}), ("*", "weights"): IMAGE,
    ("*", "size"): IMAGE | DENSE, ("*", "mode"): IMAGE | DENSE, ("*", "max_pixels"): IMAGE | DENSE,
    ("*", "recursive"): IMAGE | DENSE, ("*", "progress"): IMAGE,
    ("predict", "merge"): IMAGE | DENSE, ("predict", "classes"): IMAGE | {"detect"}, ("predict", "top_k"): IMAGE,
    ("predict", "format"): frozenset({"image"}), ("predict", "engine"): IMAGE,
    # evaluate and tune: the labelled-data options of classification
    ("*", "data_root"): frozenset({"image"}), ("*", "download"): frozenset({"image"}),
    ("*", "data_layout"): frozenset({"image"}), ("*", "subset"): frozenset({"image"}),
    ("*", "holdout_fraction"): frozenset({"image"}), ("*", "split_seed"): frozenset({"image"}),
    ("evaluate", "size"): DENSE, ("tune", "size"): DENSE, ("evaluate", "mode"): DENSE, ("tune", "mode"): DENSE, ("evaluate", "max_pixels"): DENSE,
    ("tune", "max_pixels"): DENSE,
    ("evaluate", "classes"): frozenset({"image"}), ("tune", "classes"): frozenset({"image"}),
    ("evaluate", "calibrate_on"): frozenset({"image"}),
    ("tune", "candidates"): frozenset({"image", "detect", "segment"}),
    ("tune", "budget"): frozenset({"image"}), ("tune", "objective"): frozenset({"image"}),
    ("tune", "aggregation"): frozenset({"image"}), ("tune", "max_forwards"): frozenset({"image"}),
    ("tune", "budget_objective"): frozenset({"image"}), ("tune", "guard_folds"): frozenset({"image", "detect", "segment"}),
    ("tune", "guard_alpha"): frozenset({"image", "detect", "segment"}), ("*", "adapt"): frozenset({"image"}),
    ("predict", "adapt"): frozenset({"image", "detect", "segment"}),
    ("evaluate", "adapt"): frozenset({"image", "detect", "segment"}),
    # the dense group, option by option
    ("*", "decode"): frozenset({"detect"}), ("*", "box_format"): frozenset({"detect"}),
    ("*", "normalized_boxes"): frozenset({"detect", "keypoints"}), ("*", "category_ids"): frozenset({"detect"}),
    ("*", "score_threshold"): frozenset({"detect"}), ("*", "baseline_merge"): frozenset({"detect"}),
    ("*", "merges"): frozenset({"detect", "segment"}), ("*", "dense_objective"): frozenset({"detect"}),
    ("*", "flip_pairs"): frozenset({"keypoints"}), ("*", "mask_suffix"): frozenset({"segment"}),
    ("*", "binary_masks"): frozenset({"segment"}), ("*", "cache_bytes"): frozenset({"segment"}),
}

#: (option dest, task) -> the option's help in that task's page (the general text names every task)
HELP_IN = {
    ("merge", "detect"): "the box merge: wbf (the default), nms or soft_nms, with parameters as "
                         "wbf(iou_thr=0.6, conf_type=max)",
    ("merge", "segment"): "the class merge: mean (the default), gmean, max or vote",
    ("merge", "keypoints"): "points merge by the confidence-weighted mean; no other merge applies",
    ("task", "*"): "what the model does: classify (default), detect, segment or keypoints; each task has "
                   "its own --help",
    ("model", "table"): "a fitted scikit-learn model (.skops; pickles with --allow-pickle)",
    ("model", "dense"): "model file (.onnx, TorchScript .pt/.pth/.ts, .keras)",
    ("images", "image"): "image files or folders of them",
    ("images", "dense"): "image files or folders of them",
    ("adapt", "segment"): "norm, tent or memo: adapt a PyTorch model's batch norm to the images (predict: per "
                          "256 files; evaluate: both sides; docs/adaptation.md). Default: none",
    ("adapt", "detect"): "norm (only): adapt a PyTorch model's batch norm to the images (predict: per 256 "
                         "files; evaluate: both sides; docs/adaptation.md). Default: none",
    ("policy", "dense"): "the views to run: a spec such as 'd4' or 'identity + hflip + scale(0.9, 1.1)', or a "
                         "policy file (.yaml, .yml, .json). Default: 'identity + hflip'. See 'ttakit views'",
}
#: the note at the head of the dense task's options in evaluate and tune
DENSE_NOTE = "--data is a folder of images."
#: how each task's help is asked for (after ``ttakit COMMAND``), and what it is
OTHER_HELPS = {
    "image": ("", "classify image files"), "ray": ("--engine ray", "the same as a batch job on Ray"),
    "table": ("--data TABLE.csv", "rows of a table, a scikit-learn model"),
    "detect": ("--task detect", "boxes"), "segment": ("--task segment", "masks"),
    "keypoints": ("--task keypoints", "points"),
}
#: the tasks each command has
COMMAND_TASKS = {"predict": TASKS, "evaluate": ("image", "table", "detect", "segment", "keypoints"),
                 "tune": ("image", "detect", "segment")}
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
SKLEARN_SUFFIXES = (".skops", ".pkl", ".pickle", ".joblib")


def _value(argv: Sequence[str], flag: str) -> str | None:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def task_of(argv: Sequence[str]) -> str:
    """The task a command line (after the command's name) is about."""
    task = _value(argv, "--task")
    if task in DENSE:
        return task
    data = _value(argv, "--data") or ""
    if Path(data).suffix.lower() in TABLE_SUFFIXES or any(
            Path(a).suffix.lower() in SKLEARN_SUFFIXES for a in argv if not a.startswith("-")):
        return "table"
    if _value(argv, "--engine") == "ray":
        return "ray"
    return "image"


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def shown(command: str, dest: str, group: str, task: str) -> bool:
    """Whether the option ``dest`` of argument group ``group`` is shown in
    the help of ``task``."""
    for key in ((command, dest), ("*", dest)):
        if key in SHOWN_FOR:
            return task in SHOWN_FOR[key]
    for start, tasks in GROUPS.items():
        if group.startswith(start):
            return task in tasks
    return True


def focus(parser: argparse.ArgumentParser, command: str, task: str, descriptions: dict | None = None) -> None:
    """Hide from ``parser``'s help the options that are not about ``task``;
    take its description from ``descriptions[task]`` when there is one, and
    keep the epilog's examples about ``task``, with a footer naming the
    other helps."""
    if task not in COMMAND_TASKS.get(command, TASKS):
        task = "image"  # a task this command does not have: its error comes once the help is read
    kept = []
    for group in parser._action_groups:
        for action in group._group_actions:
            if action.help != argparse.SUPPRESS and not shown(command, action.dest, group.title or "", task):
                action.help = argparse.SUPPRESS
            kinds = (task, "dense" if task in DENSE else task, "*")
            text = next((HELP_IN[(action.dest, k)] for k in kinds if (action.dest, k) in HELP_IN), None)
            if action.help != argparse.SUPPRESS and text is not None:
                action.help = text
        if not any(a.help != argparse.SUPPRESS for a in group._group_actions):
            continue  # nothing of it shown: not even its title and description
        if (group.title or "").startswith("dense tasks"):
            group.title = f"{task} options"
            group.description = DENSE_NOTE if command != "predict" else None
        kept.append(group)
    parser._action_groups[:] = kept
    flag = {"image": "", "ray": " --engine ray", "table": " --data TABLE"}.get(task, f" --task {task}")
    positional = "MODEL" if task == "table" or command != "predict" else "MODEL IMAGES..."
    parser.usage = f"ttakit {command} {positional}{flag} [options]"
    if descriptions and task in descriptions:
        parser.description = "\n\n".join(textwrap.fill(" ".join(par.split()), 79)
                                          for par in descriptions[task].split("\n\n") if par.strip()) + "\n"
    lines = (parser.epilog or "").splitlines()
    examples = [ln for ln in lines if ln.startswith("  ttakit ") and task_of(ln.split()[1:]) == task]
    head = [ln for ln in lines if ln and not ln.startswith("  ")][:1]
    others = [t for t in COMMAND_TASKS.get(command, ()) if t != task]
    if not others:
        return
    footer = ["the help of the other tasks:"] + [
        f"  {f'ttakit {command} {OTHER_HELPS[t][0]} --help'.replace('  ', ' '):<44} {OTHER_HELPS[t][1]}"
        for t in others]
    parser.epilog = "\n".join((head + examples + [""] if examples else []) + footer)


__all__ = ["TASKS", "COMMANDS", "task_of", "wants_help", "shown", "focus"]
