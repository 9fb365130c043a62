"""``python -m ttakit ...``: the ``ttakit`` command line."""

from .interfaces.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
