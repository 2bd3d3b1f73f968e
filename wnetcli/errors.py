"""The one error family of wnet.

Library code raises these; the CLI boundary (:func:`wnetcli.cli.main`) turns any of them
into a single red line and exit code 1, and shows the traceback only under ``--debug``.
Anything else that escapes is a bug and is reported as such.
"""

from __future__ import annotations


class WNetError(Exception):
    """Base class of every error that wnet reports to the user as a one-line message."""


class InputError(WNetError, ValueError):
    """A user-supplied argument, path or file is missing, malformed or unreadable."""


class DataError(InputError):
    """A data set (training images, BSDS500 tree) is missing, empty or malformed."""


class ModelError(WNetError):
    """A checkpoint or ONNX model is missing, of another version, or inconsistent."""


class DependencyError(WNetError, ImportError):
    """An optional dependency is not installed; the message says how to install it."""


class TrainingError(WNetError, RuntimeError):
    """Training cannot go on (for example a NaN loss); the last good checkpoint is kept."""


TRAIN_EXTRA_HINT = "install the training extra: pip install 'wnet[train]' (or: make dev)"


def require_torch():
    """Import and return :mod:`torch`, or raise :class:`DependencyError` with an install hint.

    ``segment`` and ``evaluate`` never call this: they must work without torch.
    """
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise DependencyError(f"PyTorch is not installed ({exc}); {TRAIN_EXTRA_HINT}") from exc
    return torch
