"""Files in and out: the reusable half of the command line.

A server, a batch job and ``ttakit predict`` all need to find and read
image files, load labelled data, classify a set of files without one bad
file failing the run, and write the predictions. That lives here, as plain
functions taking models and policies (never argparse namespaces), raising
ttakit errors that name Python parameters; :mod:`ttakit.interfaces.cli` only
parses options, calls these and prints.

* :mod:`.images`: find image files, read them (all at once or streamed in
  chunks), decide one size for a batch;
* :mod:`.labelled`: labelled data from ``cifar10[:split]``, a ``.npz`` or
  class folders, and seeded tune/holdout parts of it;
* :mod:`.prediction`: :func:`predict_files` and its :class:`Predictions`;
* :mod:`.writers`: predictions as CSV or JSON (one :data:`WRITERS` entry per
  format).

Layering: this package imports from ``errors``, ``models``, ``policy``,
``tasks`` and ``datasets``, never from ``interfaces``.
"""

from .images import (
    CHUNK,
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    MODES,
    ImageStream,
    ImageTooLarge,
    check_size,
    describe_notes,
    find_images,
    image_size,
    load_images,
    parse_size,
    plan_size,
    printable,
    read_image,
)
from .labelled import SUBSETS, Labelled, load_labelled, subset
from .prediction import Predictions, predict_files
from .writers import (
    WRITERS,
    format_for,
    records,
    render,
    to_json,
    write_atomic,
    write_csv,
    write_json,
    write_predictions,
)

__all__ = [
    "IMAGE_EXTENSIONS", "MODES", "CHUNK", "MAX_PIXELS", "ImageTooLarge", "check_size", "printable", "find_images",
    "read_image", "describe_notes", "image_size", "parse_size", "plan_size", "ImageStream", "load_images",
    "SUBSETS", "Labelled", "load_labelled", "subset",
    "Predictions", "predict_files",
    "WRITERS", "records", "write_csv", "to_json", "write_json", "format_for", "render", "write_atomic",
    "write_predictions",
]
