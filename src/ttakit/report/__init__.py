"""HTML reports and drawn predictions.

- :func:`write_classification`: ``index.html`` of a classification
  evaluation, with galleries of the inputs TTA fixed and broke;
- :func:`write_dense`: of a detection, segmentation or keypoint evaluation,
  with boxes, masks, uncertainty maps and skeletons drawn;
- :func:`write_table`: of an evaluation on a table (per-row changes);
- :func:`draw_predictions`: ``ttakit predict --task ... --draw DIR``.

The package sits above :mod:`ttakit.evaluation` (it reads its reports);
nothing below imports it. Pages are self-contained: inline CSS, images as
PNG files beside the page or inline SVG, and a Content-Security-Policy that
forbids any fetch from the network.
"""

from .classification import write_classification
from .dense import draw_predictions, write_dense
from .tables import write_table

__all__ = ["write_classification", "write_dense", "write_table", "draw_predictions"]
