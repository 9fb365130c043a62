"""Past one machine: ttakit's policies on Ray (the ``ttakit[ray]`` extra).

* :mod:`.predictor` -- :class:`TTAPredictor`, the Ray Data step (a callable
  class for ``Dataset.map_batches``: one model per actor, ttakit's engine on
  every batch) and :func:`predict_dataset`, for pipelines of your own;
* :mod:`.sources` -- a job's inputs (image files, folders, lists, Parquet and
  NPZ shards) cut into numbered blocks;
* :mod:`.manifest` -- which blocks are committed, written atomically;
* :mod:`.job` -- :func:`run_job`, the resumable, exactly-once batch job of
  ``ttakit predict --engine ray``;
* :mod:`.ray_support` -- importing Ray and joining or starting a cluster.

Nothing here imports Ray until it is used.
"""

from .job import JobResult, run_job
from .predictor import RESULT_COLUMNS, TTAPredictor, predict_dataset, to_table

__all__ = ["TTAPredictor", "predict_dataset", "to_table", "RESULT_COLUMNS", "run_job", "JobResult"]
