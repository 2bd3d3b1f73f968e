"""The one error family of wnet.

Library code raises these; the CLI boundary (:func:`wnetcli.cli.main`) turns any of them
into a single red line and exit code 1, and shows the traceback only under ``--debug``.
Anything else that escapes is a bug and is reported as such.
"""

from __future__ import annotations

import errno as _errno


class WNetError(Exception):
    """Base class of every error that wnet reports to the user as a one-line message."""


class InputError(WNetError, ValueError):
    """A user-supplied argument, path or file is missing, malformed or unreadable."""


class DataError(InputError):
    """A data set (training images, BSDS500 tree) is missing, empty or malformed."""


class ModelError(WNetError):
    """A checkpoint or ONNX model is missing, of another version, or inconsistent."""


class OutputError(WNetError):
    """An output file could not be written: ``cannot write PATH: REASON``.

    Raised by :mod:`wnetcli.atomic` in place of the ``OSError`` of a failed write (a full disk,
    a quota, a read-only file system), after removing what the write left; the file at ``path``
    keeps its earlier content, if it had one.

    Attributes:
        path: the final path that could not be written (never the temporary one).
        reason: the operating system's reason (``"No space left on device"``).
        errno: the ``errno`` of the failure, or None.
    """

    #: Full disk, quota exceeded, read-only file system: every later write there fails too.
    NO_ROOM = frozenset(getattr(_errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS") if hasattr(_errno, name))

    def __init__(self, path, reason: str, errno: int | None = None) -> None:
        # All three in args: a worker process's error is pickled back as cls(*args).
        super().__init__(path, reason, errno)
        self.path, self.reason, self.errno = path, reason, errno

    @property
    def no_room(self) -> bool:
        """True for a full disk, an exhausted quota or a read-only file system: a failure of the
        place rather than of this file, which a batch must stop on rather than repeat per file."""
        return self.errno in self.NO_ROOM

    def __str__(self) -> str:
        text = f"cannot write {self.path}: {self.reason}"
        # A write attempted while an earlier write failure propagates (the summary a batch writes
        # on its way out) names both in the one line the user sees: what failed first, and that
        # the rescue failed too.
        earlier = self.__context__
        while earlier is not None and not isinstance(earlier, OutputError):
            earlier = earlier.__context__
        if earlier is None:
            return text
        either = "" if earlier.reason == self.reason else f" ({self.reason})"
        return f"{earlier}; {self.path} could not be written either{either}"


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
