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
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError, ModelRunError
from .images import Failure, ImageStream, find_images, parse_size, plan_size


@dataclass
class Predictions:
    """The predictions for a set of image files, ready to write."""

    paths: list[str]            #: the files read, one per row of ``result``
    result: object              #: the :class:`~ttakit.ClassificationResult`
    failures: list[Failure]     #: ``(path, reason)`` of the files that could not be read
    policy: object              #: the :class:`~ttakit.Policy` as given (before dedupe)
    merge: str                  #: the merge, as its spec
    classes: list[str] | None
    model: str                  #: the model's name (its file, when given one)
    seconds: float              #: wall time, reading included


def predict_files(model, inputs: Sequence[str | Path], policy="identity + hflip", merge=None, *,
                  output_kind: str = "auto", batch_size: int | None = None, preprocess=None, size=None,
                  mode: str = "RGB", recursive: bool = False, classes: Sequence[str] | None = None,
                  progress: bool = False, model_name: str | None = None) -> Predictions:
    """Classify the image files ``inputs`` (files, or folders of them).

    ``model`` is a model adapter, a model object or a model file: anything
    :func:`ttakit.as_model` takes (to choose a file's layout or device, load
    it first with :func:`ttakit.models.loading.load_model_file`). ``policy``
    is a spec string, a :class:`~ttakit.Policy`, a view or a list of views;
    ``merge`` as for the Classifier. Images are read in ``mode`` (``RGB`` or
    ``L``) at ``size`` (``(H, W)``, ``"HxW"``...; default: what the model
    expects, else the images' common size). ``recursive`` also takes the
    images in sub-folders. ``model_name`` names the model in the output
    (default: its file name, else its type).

    Files that cannot be read are listed in ``failures``, the others are
    classified. Raises :class:`~ttakit.errors.ModelRunError` (the model's
    own exception chained) when the model fails on the images.
    """
    from ..models import as_model
    from ..policy import Policy
    from ..tasks import Classifier

    t0 = time.perf_counter()
    pol = Policy.coerce(policy)
    paths = find_images(inputs, recursive=recursive)
    adapter = as_model(model)
    if model_name is None:
        model_name = str(model) if isinstance(model, (str, Path)) else type(model).__name__
    clf = Classifier(adapter, pol, merge, data_layout="NHWC", output=output_kind, preprocess=preprocess,
                     batch_size=batch_size, classes=classes, progress=False)
    target, failures = plan_size(paths, parse_size(size), getattr(adapter, "expected_size", None))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths) - len(failures), unit="img", desc="ttakit", file=sys.stderr)
    stream = ImageStream(paths, mode, target, failures=failures,
                         on_read=(lambda _p: bar.update(1)) if bar is not None else None)
    try:
        result = clf.run(stream)
    except ModelError as e:  # the model itself failed: usually a wrong layout, size or mode
        cause = e.__cause__ or e
        first = (str(cause).strip().splitlines() or [""])[0][:500]
        raise ModelRunError(
            f"the model failed on the images ({type(cause).__name__}: {first}). Check the model's input layout "
            f"(model_layout={adapter.layout!r}), the image size (size=) and mode (mode={mode!r})") from cause
    finally:
        if bar is not None:
            bar.close()
    return Predictions(paths=stream.good, result=result, failures=stream.failures, policy=pol,
                       merge=repr(clf.effective_merge), classes=clf.classes, model=model_name,
                       seconds=time.perf_counter() - t0)


__all__ = ["Predictions", "predict_files"]
