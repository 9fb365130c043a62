"""The Ray Data step: :class:`TTAPredictor`, a callable class for
``ray.data.Dataset.map_batches``, and :func:`predict_dataset`, which adds it
to a dataset with an actor pool.

Ray runs the class in a pool of actors: each builds its model and its
:class:`~ttakit.Classifier` once (in ``__init__``), then every batch of rows
goes through ttakit's run loop. A batch is a dict of columns; the image
column holds encoded image files (bytes, as in Parquet shards), image
arrays ``(H, W, C)`` (as ``ray.data.read_images`` gives), or file paths.
The answer has one row per input row, in order:

* ``id``: the id column's value (``path`` when there is no id column, as
  ``read_images(include_paths=True)`` names it; else the row's position);
* ``label`` (-1 for an input that failed), ``class`` (with class names),
  ``confidence`` (merged probability of the label), ``entropy`` (nats),
  ``spread``, ``agreement`` and ``probs`` (all classes): what
  :class:`~ttakit.ClassificationResult` holds for the row;
* ``policy_id``: a short hash of the views, weights and merge run;
* ``error``: '' or why the input failed (an image that cannot be decoded,
  NaN pixels, a model output with NaN...): a failed row has NaN scores and
  never stops the others.

::

    import ray, ttakit.scale as ts
    ds = ray.data.read_images("s3://bucket/images/", include_paths=True, size=(32, 32))
    preds = ts.predict_dataset(ds, "model.onnx", "d4", actors=8)
    preds.write_parquet("s3://bucket/preds/")
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.images import MAX_PIXELS, failure_reason, parse_size, read_image
from ..zoo.named import is_zoo_name, load_zoo_model, zoo_options

#: images per call of the step (``map_batches``' ``batch_size``) when not given
IMAGES_PER_CALL = 1024
#: the columns the step adds, in order (``class`` only with class names)
RESULT_COLUMNS = ("id", "label", "class", "confidence", "entropy", "spread", "agreement", "probs", "policy_id",
                  "error")


def resize_array(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 ``(H, W, C)`` array resized to ``size = (H, W)`` with
    bilinear filtering, as :func:`~ttakit.io.images.read_image` resizes files."""
    from PIL import Image

    if arr.dtype != np.uint8:
        raise InputError(f"only uint8 image arrays can be resized (to {size[0]}x{size[1]}); this one is {arr.dtype}. "
                         "Resize them before, or leave size= unset")
    im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    out = np.asarray(im.resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.uint8)
    return out[:, :, None] if out.ndim == 2 else out


def to_image(value, mode: str = "RGB", size: tuple[int, int] | None = None,
             max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One input as an ``(H, W, C)`` array: encoded image bytes or a file
    path are decoded in ``mode``; an array is used as it is. Resized to
    ``size`` when given. Raises what decoding raises."""
    if isinstance(value, dict) and "bytes" in value:  # a Hugging Face style image struct
        value = value["bytes"]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return read_image(io.BytesIO(bytes(value)), mode, size, max_pixels=max_pixels)
    if isinstance(value, (str, Path)):
        return read_image(value, mode, size, max_pixels=max_pixels)
    if value is None:
        raise InputError("no image (an empty value in the image column)")
    arr = np.asarray(value)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise InputError(f"an image array must be (H, W) or (H, W, C); got shape {arr.shape}")
    if size is not None and arr.shape[:2] != tuple(size):
        arr = resize_array(arr, size)
    return arr


class TTAPredictor:
    """Test-time augmentation as a Ray Data step (see the module docstring
    for the columns in and out).

    ``model`` is a model file (loaded once per actor, with ``model_layout``
    and ``device``), a zoo model's name (``zoo:resnet20``: its checkpoint
    from ``weights``, a file or folder, else ``$TTAKIT_MODELS``; with its
    normalisation, logits and class names unless the options say otherwise)
    or a model object (anything :func:`ttakit.as_model`
    takes; Ray pickles it to each actor). ``policy`` and ``merge`` as for the
    :class:`~ttakit.Classifier`; ``classifier_options`` go to it too
    (``output``, ``preprocess``, ``batch_size``, ``classes``...).

    Images are decoded in ``mode`` and resized to ``size`` when given, else
    to the size the model expects when it says; else they must all have one
    size: ``require_size`` when given, else that of the first image of the
    call, and an image of another size fails alone. An image over
    ``max_pixels`` fails from its header. ``threads`` sets torch's thread
    count in the actor; ``tune_allocator`` tunes glibc's allocator there
    (:func:`ttakit.engine.tune_allocator`: the actor is a process of its own).
    """

    def __init__(self, model, policy="identity + hflip", merge=None, *, model_layout: str | None = None,
                 device=None, image_column: str = "image", id_column: str = "id", size=None, require_size=None,
                 mode: str = "RGB", max_pixels: int = MAX_PIXELS, threads: int | None = None,
                 tune_allocator: bool = False, weights=None, **classifier_options):
        import torch

        from ..engine import tune_allocator as tune
        from ..models.loading import load_model_file
        from ..tasks import Classifier
        from ..tasks.classification import policy_id

        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        if tune_allocator:
            tune()
        if is_zoo_name(model):
            zoo = zoo_options(model, preprocess=classifier_options.get("preprocess"),
                              output=classifier_options.get("output", "auto"),
                              classes=classifier_options.get("classes"))
            classifier_options.update(zoo, model_layout=model_layout, device=device)
            model = load_zoo_model(model, weights)
        elif isinstance(model, (str, Path)):
            model = load_model_file(model, layout=model_layout, device=device)
        else:
            classifier_options.update(model_layout=model_layout, device=device)
        classifier_options.pop("on_error", None)
        classifier_options.pop("data_layout", None)
        self.classifier = Classifier(model, policy, merge, data_layout="NHWC", on_error="mark", **classifier_options)
        self.policy_id = policy_id(self.classifier)
        self.classes = list(self.classifier.classes) if self.classifier.classes else None
        self.image_column = image_column
        self.id_column = id_column
        self.mode = mode
        self.max_pixels = int(max_pixels)
        self.size = parse_size(size) or getattr(self.classifier.adapter, "expected_size", None)
        self.require_size = parse_size(require_size) if self.size is None else None
        self.n_classes = len(self.classes) if self.classes else None

    # -- the Ray Data protocol ---------------------------------------------------------
    def __call__(self, batch: dict) -> dict:
        if self.image_column not in batch:
            raise InputError(f"the batch has no column {self.image_column!r} (columns: {', '.join(batch)}); pass "
                             "image_column=")
        values = batch[self.image_column]
        n = len(values)
        if self.id_column in batch:
            ids = [str(v) for v in batch[self.id_column]]
        elif "path" in batch:
            ids = [str(v) for v in batch["path"]]
        else:
            ids = [str(i) for i in range(n)]
        return self.predict(ids, values)

    # -- the work ------------------------------------------------------------------
    def decode(self, values: Sequence) -> tuple[list[np.ndarray | None], dict[int, str]]:
        """The inputs as arrays of one shape (None where one failed) and
        ``{row: reason}`` for the failures."""
        arrays: list[np.ndarray | None] = []
        errors: dict[int, str] = {}
        shape = None
        for i, v in enumerate(values):
            try:
                arr = to_image(v, self.mode, self.size, self.max_pixels)
            except Exception as e:  # Pillow raises many types for bad files
                arrays.append(None)
                errors[i] = failure_reason(e)
                continue
            want = self.size or self.require_size
            if want is not None and arr.shape[:2] != tuple(want):
                errors[i] = (f"the image is {arr.shape[0]}x{arr.shape[1]}, the others {want[0]}x{want[1]}; pass "
                             "size= to resize them all")
                arrays.append(None)
                continue
            if shape is not None and arr.shape != shape:
                errors[i] = (f"the image is {'x'.join(map(str, arr.shape))} (HxWxC), the first of the batch "
                             f"{'x'.join(map(str, shape))}; pass size= to resize them all")
                arrays.append(None)
                continue
            shape = arr.shape
            arrays.append(arr)
        return arrays, errors

    def predict(self, ids: Sequence[str], values: Sequence) -> dict[str, np.ndarray]:
        """The result columns for the inputs ``values`` (bytes, arrays or
        paths) named ``ids``."""
        n = len(values)
        arrays, errors = self.decode(values)
        good = [i for i in range(n) if arrays[i] is not None]
        c = self.n_classes or 0
        res = None
        if good:
            res = self.classifier.run(np.stack([arrays[i] for i in good]))
            c = self.n_classes = int(res.probs.shape[-1])
        nan = np.float32("nan")
        out = {
            "id": np.array([str(i) for i in ids], dtype=object),
            "label": np.full(n, -1, np.int64),
            "confidence": np.full(n, nan, np.float32), "entropy": np.full(n, nan, np.float32),
            "spread": np.full(n, nan, np.float32), "agreement": np.full(n, nan, np.float32),
            "probs": np.full((n, c), nan, np.float32),
        }
        if res is not None:
            rows = np.asarray(good)
            labels = res.labels
            out["label"][rows] = labels
            ok = labels >= 0
            conf = np.full(len(rows), nan, np.float32)
            conf[ok] = res.probs[np.flatnonzero(ok), labels[ok]]
            out["confidence"][rows] = conf
            for k in ("entropy", "spread", "agreement"):
                out[k][rows] = getattr(res, k)
            out["probs"][rows] = res.probs
            for j, why in (res.errors or {}).items():
                errors[good[j]] = str(why)
            for j in np.flatnonzero(res.failed if res.failed is not None else []):
                errors.setdefault(good[j], "the model returned inf or NaN")
        if self.classes:
            out["class"] = np.array([self.classes[k] if k >= 0 else "" for k in out["label"]], dtype=object)
        out["policy_id"] = np.full(n, self.policy_id, dtype=object)
        out["error"] = np.array([errors.get(i, "") for i in range(n)], dtype=object)
        return {k: out[k] for k in RESULT_COLUMNS if k in out}


def to_table(columns: dict, rows=None):
    """The result ``columns`` of :meth:`TTAPredictor.predict` (only ``rows``,
    a boolean mask, when given) as a ``pyarrow.Table``: ``id``, ``label``,
    ``class`` (with class names), the scores, ``probs`` (a fixed-size list of
    float32 per row) and ``policy_id``; the ``error`` column is left out."""
    import pyarrow as pa

    keep = np.ones(len(columns["id"]), bool) if rows is None else np.asarray(rows, bool)
    probs = np.ascontiguousarray(columns["probs"][keep], dtype=np.float32)
    c = probs.shape[1] if probs.ndim == 2 else 0
    fields = {"id": pa.array(columns["id"][keep].tolist(), pa.string()),
              "label": pa.array(columns["label"][keep], pa.int64())}
    if "class" in columns:
        fields["class"] = pa.array(columns["class"][keep].tolist(), pa.string())
    for k in ("confidence", "entropy", "spread", "agreement"):
        fields[k] = pa.array(columns[k][keep], pa.float32())
    fields["probs"] = pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1), pa.float32()), c)
    fields["policy_id"] = pa.array(columns["policy_id"][keep].tolist(), pa.string())
    return pa.table(fields)


def predict_dataset(ds, model, policy="identity + hflip", merge=None, *, actors: int | None = None,
                    cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0,
                    images_per_call: int = IMAGES_PER_CALL, **predictor_options):
    """``ds`` (a ``ray.data.Dataset``) with the :class:`TTAPredictor` step
    added: ``actors`` actors (default: as many as the cluster holds), each
    with ``cpus_per_actor`` CPUs and ``gpus_per_actor`` GPUs (the model on
    the GPU when > 0), taking ``images_per_call`` rows at a time.
    ``predictor_options`` go to :class:`TTAPredictor`. Lazy, like every
    Ray Data step: nothing runs until the result is consumed."""
    from .ray_support import cluster_slots, require_ray

    ray = require_ray()
    if actors is None:
        actors = cluster_slots(cpus_per_actor, gpus_per_actor)
    if gpus_per_actor > 0 and predictor_options.get("device") is None:
        predictor_options["device"] = "cuda"
    predictor_options.setdefault("threads", max(1, int(cpus_per_actor)))
    predictor_options.setdefault("tune_allocator", True)
    return ds.map_batches(TTAPredictor, fn_constructor_args=(model, policy, merge),
                          fn_constructor_kwargs=predictor_options, batch_size=images_per_call,
                          batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=int(actors)),
                          num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None)


__all__ = ["IMAGES_PER_CALL", "RESULT_COLUMNS", "TTAPredictor", "predict_dataset", "resize_array", "to_image",
           "to_table"]
