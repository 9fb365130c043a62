"""Exceptions raised by ttakit.

Every error a user can cause derives from :class:`TTAKitError`, and also from
the built-in exception a caller would naturally catch (``ValueError`` for bad
arguments or data), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TTAKitError(Exception):
    """Base class of every error raised by ttakit."""


class InputError(TTAKitError, ValueError):
    """The input data has the wrong shape, layout, dtype or values."""


class PolicyError(TTAKitError, ValueError):
    """A view or policy spec is unknown or has bad parameters."""


class ModelOutputError(TTAKitError, ValueError):
    """The model returned something that does not match what was declared."""


class ModelLoadError(TTAKitError, ValueError):
    """A model file or object could not be turned into a model adapter."""


class ModelError(TTAKitError, RuntimeError):
    """The model raised an exception of its own; the message names the
    views and the shape of the batch it failed on (the model's exception is
    the ``__cause__``)."""


class ViewError(TTAKitError, RuntimeError):
    """A view raised an exception while augmenting a batch; the message names
    the view and the input shape."""


class ModelRunError(ModelError):
    """A :class:`ModelError` raised where files are predicted, with a hint on
    the options that usually cause it (layout, size, colour mode)."""


class DatasetError(TTAKitError, RuntimeError):
    """A dataset could not be found, downloaded, or read correctly."""


class ZooError(TTAKitError, RuntimeError):
    """A zoo model could not be built, found or loaded."""


class NotCalibratedError(TTAKitError, RuntimeError):
    """A conformal predictor was asked for sets before it was calibrated."""


class UsageError(TTAKitError, ValueError):
    """A command-line option is missing, malformed or inconsistent."""


class MissingExtraError(TTAKitError, ImportError):
    """An optional dependency is not installed; the message names the
    ``ttakit[extra]`` that brings it (``pip install 'ttakit[onnx]'``). An
    ``ImportError`` too, so ``except ImportError`` keeps working."""


def require(module: str, extra: str, what: str):
    """``import module`` and return it; when it is not installed, raise
    :class:`MissingExtraError`: "``what`` needs ``module``, which is not
    installed: pip install 'ttakit[extra]'". An installed module that fails
    to import for a reason of its own says that reason too."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        root = module.split(".")[0]
        missing = isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] == root
        why = "which is not installed" if missing else f"which failed to import ({type(e).__name__}: {e})"
        raise MissingExtraError(f"{what} needs {root}, {why}: pip install 'ttakit[{extra}]'") from None


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """A short hint naming the closest valid choice, or '' when none is close."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


class TTAKitWarning(UserWarning):
    """A result that may not be trustworthy (e.g. a tuning split too small)."""


class RuntimeFallbackWarning(TTAKitWarning):
    """A faster runtime (``runtime="onnx"`` or ``"compile"``) could not be
    used for a model, or its outputs differed from the eager model's: ttakit
    runs the eager model instead; the message says why."""
