"""Loading fitted scikit-learn models without running foreign code.

A ``.skops`` file (the skops format) is read by skops, which builds only the
types it knows to be safe; any other type in the file is listed and refused
unless the caller trusts it by name (``trusted=[...]``, ``--trust TYPE`` on
the command line). Pickle and joblib files can run any code when loaded, so
they are refused unless ``allow_pickle=True`` says the caller accepts that
risk for this file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import ModelLoadError, require

SKOPS_SUFFIXES = (".skops",)
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


def untrusted_types(path: str | Path) -> list[str]:
    """The types in a ``.skops`` file that skops does not trust by default."""
    sio = require("skops.io", "tables", "reading a .skops model")
    try:
        return list(sio.get_untrusted_types(file=str(path)))
    except Exception as e:  # skops raises its own and zipfile's errors for a bad file
        raise ModelLoadError(f"{Path(path).name} is not a readable skops file ({type(e).__name__}: {e})") from None


def load_sklearn(path: str | Path, *, trusted: Sequence[str] = (), allow_pickle: bool = False):
    """The fitted estimator saved in ``path``.

    ``.skops``: types outside skops' default trust list must be named in
    ``trusted`` (else a :class:`~ttakit.ModelLoadError` lists them).
    ``.pkl``/``.pickle``/``.joblib``: refused unless ``allow_pickle=True``
    (loading a pickle runs whatever code it names: only for files you made).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in SKOPS_SUFFIXES:
        sio = require("skops.io", "tables", "reading a .skops model")
        missing = sorted(set(untrusted_types(path)) - set(trusted))
        if missing:
            raise ModelLoadError(f"{path.name} holds types that are not trusted by default: "
                                 f"{', '.join(missing)}. Check them, then trust them by name "
                                 f"(trusted=[...], or --trust {' --trust '.join(missing)})")
        try:
            return sio.load(str(path), trusted=list(trusted) or None)
        except Exception as e:
            raise ModelLoadError(f"skops cannot load {path.name} ({type(e).__name__}: {e})") from None
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelLoadError(f"{path.name} is a pickle: loading it can run any code it names. Save the "
                                 f"model with skops (skops.io.dump) instead, or, for a file you made yourself, "
                                 f"pass allow_pickle=True (--allow-pickle)")
        try:
            import joblib

            return joblib.load(path)
        except Exception as e:
            raise ModelLoadError(f"cannot load {path.name} ({type(e).__name__}: {e})") from None
    raise ModelLoadError(f"not a scikit-learn model file: {path.name} (use .skops; "
                         f"{', '.join(PICKLE_SUFFIXES)} only with allow_pickle)")
