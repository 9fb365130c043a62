"""User interfaces: the ``ttakit`` command line (:mod:`ttakit.interfaces.cli`).

The reusable file handling it relies on (reading images, labelled data,
predicting files, writing CSV/JSON) is the library's :mod:`ttakit.io`.
Nothing is imported here, so ``import ttakit`` stays free of the CLI."""
