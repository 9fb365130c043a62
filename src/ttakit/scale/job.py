"""A resumable batch job on Ray: :func:`run_job`, what ``ttakit predict
--engine ray`` runs.

The driver cuts the inputs into numbered blocks (:mod:`.sources`), opens
the output folder's manifest (:mod:`.manifest`) and hands the blocks not yet
committed to Ray Data, one row per block; a pool of :class:`BlockWorker`
actors (each loads the model once) reads each block, runs ttakit's engine on
it and writes its results to ``part-NNNNNN.parquet`` atomically; the driver
commits the block in the manifest as each answer comes back. Killing the job
at any moment and running it again finishes it with every input exactly
once: in a part file, or in ``_failures.csv`` (by id, with the reason).

The inputs must be readable from every node (a shared file system, or
paths each node has), and so must the output folder, which every actor
writes to.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelLoadError, ModelRunError, TTAKitError
from ..files import write_atomic
from ..io.images import MAX_PIXELS, Failure, parse_size
from ..io.prediction import cause_line
from ..zoo.named import is_zoo_name, zoo_checkpoint, zoo_options
from .manifest import PART, Manifest
from .predictor import TTAPredictor, to_table
from .sources import BLOCK_SIZE, Block, first_size, plan, read_block

#: Parquet compression of the part files
COMPRESSION = "zstd"


@dataclass
class JobResult:
    """What :func:`run_job` did."""

    out: Path
    blocks: int                 #: blocks in the job
    resumed: int                #: blocks already committed when this run started
    inputs: int                 #: inputs in all blocks (listing failures aside)
    written: int                #: predictions in the part files (this run and earlier ones)
    failures: list[Failure] = field(default_factory=list)  #: every input that failed, by id
    seconds: float = 0.0        #: wall time of this run
    startup_seconds: float = 0.0  #: of which starting or joining Ray
    complete: bool = False

    @property
    def ran(self) -> int:
        """Blocks run by this call."""
        return self.blocks - self.resumed


class BlockWorker:
    """The actor of a job: a :class:`~ttakit.scale.predictor.TTAPredictor`
    that reads whole blocks and writes each one's part file (see the module
    docstring). Its answer has a row per block: ``block``, ``written``,
    ``failures`` (``[[id, reason], ...]`` as JSON) and ``fatal``: '' or, when
    the model itself failed on the block (nothing written), why, in a line."""

    def __init__(self, out: str, image_column: str = "image", id_column: str = "id", **predictor_options):
        self.out = Path(out)
        self.image_column = image_column
        self.id_column = id_column
        self.predictor = TTAPredictor(image_column=image_column, id_column=id_column, **predictor_options)

    def __call__(self, batch: dict) -> dict:
        import json

        n = len(batch["block"])
        out: dict[str, list] = {"block": [], "written": [], "failures": [], "fatal": []}
        for i in range(n):
            block = Block.from_row({k: batch[k][i] for k in batch})
            fatal = ""
            try:
                written, failures = self.run_block(block)
            except TTAKitError as e:  # the model or the options, not one input: the job stops, cleanly
                cause = e.__cause__ or e
                written, failures, fatal = 0, [], f"{type(cause).__name__}: {cause_line(cause)}"
            out["block"].append(block.index)
            out["written"].append(written)
            out["failures"].append(json.dumps(failures))
            out["fatal"].append(fatal)
        return {"block": np.asarray(out["block"], np.int64), "written": np.asarray(out["written"], np.int64),
                "failures": np.asarray(out["failures"], dtype=object), "fatal": np.asarray(out["fatal"], dtype=object)}

    def run_block(self, block: Block) -> tuple[int, list[Failure]]:
        """Predict ``block`` and write its part file; ``(written, failures)``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            ids, values = read_block(block, self.image_column, self.id_column)
        except InputError as e:  # the shard itself: each of its rows in this block fails, by id
            return 0, [(f"{block.source}#{r}", str(e)) for r in range(block.start, block.stop)]
        cols = self.predictor.predict(ids, values)
        ok = cols["error"] == ""
        path = self.out / PART.format(block.index)
        if ok.any():
            sink = pa.BufferOutputStream()
            pq.write_table(to_table(cols, ok), sink, compression=COMPRESSION)
            write_atomic(path, sink.getvalue().to_pybytes())
        else:
            path.unlink(missing_ok=True)  # a part left by an earlier, interrupted run
        failures = [(ids[i], str(cols["error"][i])) for i in np.flatnonzero(~ok)]
        return int(ok.sum()), failures


def _model_identity(model, weights=None) -> dict:
    """What the results depend on in ``model``: a file's path, size and
    modification time (for a zoo model, its checkpoint's), else the object's
    type."""
    from ..models.loading import SUFFIXES

    if is_zoo_name(model):
        st = (ckpt := zoo_checkpoint(model, weights)).stat()
        return {"model": model, "weights": str(ckpt), "model_bytes": st.st_size, "model_mtime_ns": st.st_mtime_ns}
    if isinstance(model, (str, Path)):
        p = Path(model)
        if not p.is_file():
            raise ModelLoadError(f"model file not found: {p}")
        if p.suffix.lower() not in SUFFIXES:
            raise ModelLoadError(f"cannot tell the model type of {p.name}: use one of {', '.join(sorted(SUFFIXES))}")
        st = p.stat()
        return {"model": str(p.resolve()), "model_bytes": st.st_size, "model_mtime_ns": st.st_mtime_ns}
    return {"model": f"{type(model).__module__}.{type(model).__qualname__} object"}


def _original(e: BaseException) -> BaseException:
    """The user-code exception inside Ray's wrappers: the deepest ttakit
    error of the cause chain (``__cause__``, or Ray's ``cause``), else the
    deepest exception."""
    found, seen = None, set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, TTAKitError):
            found = e
        nxt = e.__cause__ or getattr(e, "cause", None)
        if not isinstance(nxt, BaseException):
            break
        e = nxt
    return found if found is not None else e


def run_job(model, data: Sequence[str | Path], out: str | Path, policy="identity + hflip", merge=None, *,
            model_layout: str | None = None, device=None, output: str = "auto", preprocess=None,
            classes: Sequence[str] | None = None, batch_size: int | None = None, size=None, mode: str = "RGB",
            recursive: bool = False, max_pixels: int = MAX_PIXELS, block_size: int = BLOCK_SIZE,
            actors: int | None = None, cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0,
            address: str | None = None, num_cpus: int | None = None, image_column: str = "image",
            id_column: str = "id", progress: bool = False, weights=None) -> JobResult:
    """Predict ``data`` (image files, folders, ``.txt`` lists, Parquet or
    NPZ shards: see :mod:`ttakit.scale.sources`) with ``model`` (a model
    file, loaded once per actor, or a zoo model: ``zoo:resnet20``, its
    checkpoint found here in ``weights`` or ``$TTAKIT_MODELS``, predicting
    with its normalisation and class names unless ``preprocess`` and
    ``classes`` say otherwise) and ``policy`` on Ray, writing Parquet under
    ``out``; resumes the job already in ``out`` when it is the same.

    ``address`` joins a Ray cluster (``auto``, ``host:port``,
    ``ray://host:port``); without it a local Ray starts with ``num_cpus``
    CPUs (default: all), unless this process already runs Ray. ``actors``
    actors (default: as many as the cluster holds) of ``cpus_per_actor``
    CPUs and ``gpus_per_actor`` GPUs each take ``block_size`` inputs at a
    time; ``batch_size`` is the engine's forward batch. The other options
    are :func:`ttakit.io.predict_files`' (``size`` resizes every image;
    without it the model's expected size, else the first image's, and an
    image of another size fails alone).

    Raises :class:`~ttakit.errors.UsageError` when ``out`` holds another
    job, and :class:`~ttakit.errors.ModelRunError` when the model fails on
    the images (the blocks committed before stay committed).
    """
    from ..merge import get_merge
    from ..policy import Policy
    from .ray_support import cluster_slots, connect, require_ray

    t0 = time.perf_counter()
    pol = Policy.coerce(policy)
    merge_d = get_merge(merge).to_dict() if merge is not None else None
    size = parse_size(size)
    p = plan(data, block_size, recursive)
    require = first_size(p) if size is None else None
    policy_d = pol.to_dict()
    policy_d.pop("source", None)
    identity = _model_identity(model, weights)
    if is_zoo_name(model):  # the checkpoint as found here goes to every actor, with the zoo model's options
        weights = identity["weights"]
        zoo = zoo_options(model, preprocess=preprocess, output=output, classes=classes)
        preprocess, output, classes = zoo["preprocess"], zoo["output"], zoo["classes"]
    job = {**identity, "model_layout": model_layout, "policy": policy_d, "merge": merge_d,
           "output": output, "classes": list(classes) if classes else None, "mode": mode,
           "size": list(size) if size else None, "first_size": list(require) if require else None,
           "preprocess": repr(preprocess) if preprocess is not None else None, "max_pixels": int(max_pixels),
           "image_column": image_column, "id_column": id_column, "block_size": int(block_size),
           "inputs": p.inputs, "inputs_digest": p.digest}
    manifest = Manifest.open(out, job, len(p.blocks), p.inputs, p.failures)
    resumed = len(manifest.committed)
    # temporary files left by writers killed mid-write (actors' parts, whose blocks are not committed, and
    # the driver's manifest or failures list, whose last complete version is the one on disk)
    for pattern in (".part-*.tmp", "._manifest.json.*.tmp", "._failures.csv.*.tmp"):
        for tmp in Path(out).glob(pattern):
            tmp.unlink(missing_ok=True)
    pending = [b for b in p.blocks if b.index not in manifest.committed]
    startup = 0.0
    if pending:
        ray = require_ray()
        started, startup = connect(address, num_cpus)
        try:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = bool(progress)
            ctx.print_on_execution_start = bool(progress)
            n_actors = int(actors) if actors else cluster_slots(cpus_per_actor, gpus_per_actor)
            n_actors = max(1, min(n_actors, len(pending)))
            if gpus_per_actor > 0 and device is None:
                device = "cuda"
            options = dict(out=str(Path(out).resolve()), image_column=image_column, id_column=id_column,
                           model=str(model) if isinstance(model, Path) else model, policy=pol, merge=merge,
                           model_layout=model_layout, device=device, output=output, preprocess=preprocess,
                           classes=list(classes) if classes else None, batch_size=batch_size, size=size,
                           require_size=require, mode=mode, max_pixels=max_pixels,
                           threads=max(1, int(cpus_per_actor)), tune_allocator=True,
                           **({"weights": weights} if is_zoo_name(model) else {}))
            ds = ray.data.from_items([b.to_row() for b in pending], override_num_blocks=len(pending))
            ds = ds.map_batches(BlockWorker, fn_constructor_kwargs=options, batch_size=1, batch_format="numpy",
                                compute=ray.data.ActorPoolStrategy(size=n_actors), num_cpus=cpus_per_actor,
                                num_gpus=gpus_per_actor or None)
            import json

            layout_hint = f"model_layout={model_layout!r}" if model_layout else "model_layout="
            try:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                    for b, w, f, fatal in zip(batch["block"], batch["written"], batch["failures"], batch["fatal"]):
                        if fatal:
                            raise ModelRunError(
                                f"the model failed on the images of block {int(b)} ({fatal}). Check the model's "
                                f"input layout ({layout_hint}), the image size (size=) and mode "
                                f"(mode={mode!r}); the {len(manifest.committed)} blocks committed are kept")
                        manifest.commit(int(b), int(w), [tuple(x) for x in json.loads(str(f))])
            except TTAKitError:
                raise
            except Exception as e:  # Ray wraps the actors' exceptions
                cause = _original(e)
                if isinstance(cause, TTAKitError):
                    raise cause from None
                raise ModelRunError(f"the job failed on Ray ({type(cause).__name__}: {cause_line(cause)}); the "
                                    f"{len(manifest.committed)} blocks committed are kept, run it again to "
                                    "resume") from e
        finally:
            if started:
                ray.shutdown()
    if manifest.complete:
        manifest.save()
        manifest.write_failures()
    return JobResult(Path(out), len(p.blocks), resumed, p.inputs, manifest.written, manifest.all_failures(),
                     time.perf_counter() - t0, startup, manifest.complete)


__all__ = ["COMPRESSION", "JobResult", "BlockWorker", "run_job"]
