"""Classify image files: :func:`predict_files` and its :class:`Predictions`.

What ``ttakit predict`` does but parsing its options and writing the output:
find the files, decide one image size, stream the images in bounded chunks
through a :class:`~ttakit.Classifier`, and keep the files that could not be
read apart instead of failing the whole run. A server or a batch job calls
it with a model (an adapter, a model object or a model file) and a policy,
and writes the result with :mod:`ttakit.io.writers`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelError, ModelRunError
from .images import MAX_PIXELS, Failure, ImageStream, check_size, describe_notes, find_images, parse_size, plan_size


@dataclass
class Predictions:
    """The predictions for a set of image files, ready to write."""

    paths: list[str]            #: the files read, one per row of ``result`` (failed rows included)
    result: object              #: the :class:`~ttakit.ClassificationResult`
    failures: list[Failure]     #: ``(path, reason)`` of the files that could not be read or predicted
    policy: object              #: the :class:`~ttakit.Policy` as given (before dedupe)
    merge: str                  #: the merge, as its spec
    classes: list[str] | None
    model: str                  #: the model's name (its file, when given one)
    seconds: float              #: wall time, reading included
    #: what was converted with a loss: kind (``alpha``, ``cmyk``, ``animated``) -> ``(path, frames)``
    notes: dict = field(default_factory=dict)

    @property
    def failed_rows(self) -> dict[int, str]:
        """Rows of ``result`` the model failed on (``result.failed``), with their reason."""
        return failed_rows(self.result)

    def describe_notes(self) -> str:
        """One line saying what was converted (alpha dropped, CMYK, animated), or ''."""
        return describe_notes(self.notes)


def cause_line(cause: BaseException) -> str:
    """The line of a model's exception that says what went wrong: the
    first, or for TorchScript (whose first lines are a trace of the
    scripted code) the last line naming an error."""
    lines = [ln.strip() for ln in str(cause).strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    if len(lines) > 1 and "TorchScript interpreter" in lines[0]:
        named = [ln for ln in lines if ln.split(":")[0].endswith(("Error", "Exception"))]
        line = named[-1] if named else lines[-1]
        prefix = f"{type(cause).__name__}: "
        return (line[len(prefix):] if line.startswith(prefix) else line)[:500]
    return lines[0][:500]


def failed_rows(result) -> dict[int, str]:
    """``{row: reason}`` for the rows a result marks as failed (its boolean
    ``failed`` array and ``errors``, a mapping from row to reason)."""
    failed = getattr(result, "failed", None)
    if failed is None:
        return {}
    reasons = getattr(result, "errors", None) or {}
    rows = np.flatnonzero(np.asarray(failed, dtype=bool))
    out = {}
    for i in rows.tolist():
        why = None
        if isinstance(reasons, dict):
            why = reasons.get(i)
        elif len(reasons) == len(failed):
            why = reasons[i]
        out[i] = str(why) if why else "the model returned inf or NaN"
    return out


def _other(choice: str) -> str:
    """The other value of a two-way choice: the layout or the colour mode."""
    return {"NCHW": "NHWC", "NHWC": "NCHW", "RGB": "L", "L": "RGB"}.get(choice, choice)


def predict_files(model, inputs: Sequence[str | Path], policy="identity + hflip", merge=None, *,
                  output_kind: str = "auto", batch_size: int | None = None, preprocess=None, size=None,
                  mode: str = "RGB", recursive: bool = False, classes: Sequence[str] | None = None,
                  progress: bool = False, model_name: str | None = None,
                  max_pixels: int = MAX_PIXELS, adapt=None) -> Predictions:
    """Classify the image files ``inputs`` (files, or folders of them).

    ``model`` is a model adapter, a model object or a model file: anything
    :func:`ttakit.as_model` takes (to choose a file's layout or device, load
    it first with :func:`ttakit.models.loading.load_model_file`). ``policy``
    is a spec string, a :class:`~ttakit.Policy`, a view or a list of views;
    ``merge`` as for the Classifier. Images are read in ``mode`` (``RGB`` or
    ``L``) at ``size`` (``(H, W)``, ``"HxW"``...; default: what the model
    expects, else the images' common size). ``recursive`` also takes the
    images in sub-folders. ``model_name`` names the model in the output
    (default: its file name, else its type). An image with more than
    ``max_pixels`` pixels is refused from its header (a failure); so is a
    ``size`` larger than that (an :class:`~ttakit.InputError`). ``adapt``:
    test-time adaptation of a PyTorch model over these files, as the
    Classifier's.

    Files that cannot be found, listed or read, and the images the model
    returned inf or NaN for, are listed in ``failures``; the others are
    classified. Lossy conversions (alpha dropped, CMYK, animated images)
    are counted in ``notes``. Raises :class:`~ttakit.errors.ModelRunError` (the model's
    own exception chained) when the model fails on the images.
    """
    from ..models import as_model
    from ..policy import Policy
    from ..tasks import Classifier

    t0 = time.perf_counter()
    pol = Policy.coerce(policy)
    size = parse_size(size)
    check_size(size, max_pixels)
    unlisted: list[Failure] = []
    paths = find_images(inputs, recursive=recursive, failures=unlisted)
    adapter = as_model(model)
    if model_name is None:
        model_name = str(model) if isinstance(model, (str, Path)) else type(model).__name__
    clf = Classifier(adapter, pol, merge, data_layout="NHWC", output=output_kind, preprocess=preprocess,
                     batch_size=batch_size, classes=classes, progress=False, on_error="mark", adapt=adapt)
    target, failures = plan_size(paths, size, getattr(adapter, "expected_size", None), max_pixels)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths) - len(failures), unit="img", desc="ttakit", file=sys.stderr)
    stream = ImageStream(paths, mode, target, failures=failures, max_pixels=max_pixels,
                         on_read=(lambda _p: bar.update(1)) if bar is not None else None)
    try:
        result = clf.run(stream)
    except ModelError as e:  # the model itself failed: usually a wrong layout, size or mode
        cause = e.__cause__ or e
        raise ModelRunError(
            f"the model failed on the images ({type(cause).__name__}: {cause_line(cause)}). Check the model's input "
            f"layout (read as {adapter.layout}; the other is model_layout={_other(adapter.layout)!r}), the image size "
            f"(size=) and mode (now {mode}; the other is mode={_other(mode)!r})") from cause
    finally:
        if bar is not None:
            bar.close()
    failures = stream.failures + unlisted
    failures += [(stream.good[i], why) for i, why in failed_rows(result).items()]
    order = {p: i for i, p in reversed(list(enumerate(map(str, paths))))}
    failures.sort(key=lambda f: order.get(f[0], len(order)))
    return Predictions(paths=stream.good, result=result, failures=failures, policy=pol,
                       merge=repr(clf.effective_merge), classes=clf.classes, model=model_name,
                       seconds=time.perf_counter() - t0, notes=stream.notes)


__all__ = ["Predictions", "predict_files", "failed_rows", "cause_line"]
