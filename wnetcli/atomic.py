"""Atomic file output: write to a temporary file in the same folder, then rename.

A crash or ``kill -9`` in the middle of a write leaves at most a hidden ``.<name>.<random>.tmp``
file, never a truncated output under the final name, so a rerun can trust that every existing
output is complete; :func:`remove_stale_temporaries` clears those leftovers when the rerun
writes the same outputs again.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from wnetcli.errors import InputError

# The temporary name of atomic_path: "." + final stem + "." + tempfile's 8 random characters
# + ".tmp" + final suffix.
_TEMPORARY_NAME = re.compile(r"^\.(?P<stem>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]*)?$")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary name keeps the final suffix (``name.<random>.tmp.png``) so that
    libraries choosing a format from the extension (Pillow, numpy) still do so.
    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; give the output the permissions a plain open() would have.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only when the block succeeds."""
    if not any(flag in mode for flag in "wx"):
        raise ValueError(f"atomic_open needs a write mode, got mode={mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def prepare_folder(path: str | os.PathLike[str], role: str = "output folder") -> Path:
    """Create the folder ``path`` if needed and check that it can be written to.

    Called before long work, so that a folder that cannot hold the results fails at once, with
    a one-line reason, rather than after the work (or as a bare ``OSError``).

    Raises
    ------
    InputError
        If ``path`` is a file, cannot be created, or is not writable (read-only file system,
        permissions).
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{role} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {role} {folder}: {exc.strerror or exc}") from exc
    if not _writable(folder):
        raise InputError(f"cannot write to {role} {folder} (read-only or no permission)")
    return folder


def _writable(folder: Path) -> bool:
    # access(2) also reports a read-only file system, even to root.
    return os.access(folder, os.W_OK | os.X_OK)


def remove_stale_temporaries(paths: Iterable[str | os.PathLike[str]]) -> int:
    """Delete what interrupted atomic writes of ``paths`` left behind (a killed run's temporaries).

    Each folder that holds one of ``paths`` is listed once. Only the temporaries of exactly
    these final names are removed, so runs that write other files into the same folder (the
    other shards of a ``--shard`` array) are not disturbed.

    Returns
    -------
    int
        The number of files removed.
    """
    names_by_folder: dict[Path, set[str]] = defaultdict(set)
    for path in paths:
        path = Path(path)
        names_by_folder[path.parent].add(path.name)
    removed = 0
    for folder, names in names_by_folder.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:  # not created yet: nothing left there
            continue
        for entry in entries:
            match = _TEMPORARY_NAME.match(entry.name)
            if match and match["stem"] + (match["suffix"] or "") in names:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed
