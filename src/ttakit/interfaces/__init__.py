"""User interfaces: the ``ttakit`` command line (:mod:`ttakit.interfaces.cli`)
and image-file reading for it (:mod:`ttakit.interfaces.images`).

Nothing is imported here, so ``import ttakit`` stays free of the CLI."""
