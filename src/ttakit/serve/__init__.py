"""``ttakit serve``: an HTTP server for a :class:`~ttakit.Classifier` with
cross-request micro-batching (extra ``ttakit[serve]``: FastAPI, uvicorn,
python-multipart, prometheus-client).

* :mod:`.batcher` -- the bounded queue and the thread that batches requests
  into one engine run (and the naive per-request runner for comparison);
* :mod:`.decode` -- request payloads to image arrays, one image at a time;
* :mod:`.app` -- the FastAPI app (:func:`create_app`);
* :mod:`.schema` -- the OpenAPI shapes;
* :mod:`.ray_deployment` -- the same app as a Ray Serve deployment in
  replicas, batching with ``@serve.batch`` (the ``ray`` extra).

Only :mod:`.batcher` and :mod:`.decode` import without the extra.
"""

from .batcher import Batch, Batcher, DeadlineExceeded, DirectRunner, Overloaded, ServeError, prefix_policy
from .decode import Limits


def create_app(*args, **kwargs):
    """See :func:`ttakit.serve.app.create_app` (imports FastAPI)."""
    from .app import create_app as make

    return make(*args, **kwargs)


__all__ = ["Batch", "Batcher", "DirectRunner", "ServeError", "Overloaded", "DeadlineExceeded", "Limits",
           "prefix_policy", "create_app"]
