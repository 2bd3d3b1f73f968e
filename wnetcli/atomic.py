"""Atomic file output: write to a temporary file in the same folder, then rename.

A crash or ``kill -9`` in the middle of a write leaves at most a hidden ``.<name>.<random>.tmp``
file, never a truncated output under the final name, so a rerun can trust that every existing
output is complete; :func:`remove_stale_temporaries` clears those leftovers when the rerun
writes the same outputs again.

Every writer of wnet goes through this module, which is also the one place where a failed write
(a full disk, a quota, a read-only file system) becomes a one-line
:class:`~wnetcli.errors.OutputError` (``cannot write PATH: No space left on device``) naming the
final path, with what the write left removed and the earlier file, if any, untouched. Besides
single files: :class:`LineLog` appends whole lines (``log.jsonl``), :func:`staged_folder` writes
a set of files all or nothing (an evaluation report).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from wnetcli.errors import InputError, OutputError

# The temporary name of atomic_path: "." + final stem + "." + tempfile's 8 random characters
# + ".tmp" + final suffix.
_TEMPORARY_NAME = re.compile(r"^\.(?P<stem>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]*)?$")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def output_error(path: str | os.PathLike[str], exc: OSError) -> OutputError:
    """The :class:`OutputError` for ``exc``, a failed write of ``path`` (the final name).

    Call it before removing what the write left: an error without an errno is explained by
    the state of the file system as the write found it (:func:`_file_system_errno`).
    """
    path = Path(path)
    if exc.errno is None:
        code = _file_system_errno(path.parent)
        if code is not None:
            return OutputError(path, os.strerror(code), code)
    return OutputError(path, exc.strerror or str(exc) or type(exc).__name__, exc.errno)


def _file_system_errno(folder: Path) -> int | None:
    """``EROFS`` or ``ENOSPC`` when the file system of ``folder`` is read-only or has no free
    block left, else None.

    Some writers drop the errno of a failed write: numpy's ``tofile`` (under ``np.save``) says
    only ``800000 requested and 8176 written`` on a full disk, which would otherwise be taken for
    a fault of that one file, and a batch would go on failing image after image.
    """
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return None
    if stats.f_flag & getattr(os, "ST_RDONLY", 1):
        return errno.EROFS
    # f_bavail: the blocks an unprivileged process may still take (root may take a reserve more).
    return errno.ENOSPC if stats.f_bavail == 0 else None


@contextlib.contextmanager
def output_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an ``OSError`` raised in the block into an :class:`OutputError` naming ``path``."""
    try:
        yield
    except OSError as exc:
        raise output_error(path, exc) from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary name keeps the final suffix (``name.<random>.tmp.png``) so that
    libraries choosing a format from the extension (Pillow, numpy) still do so.
    On an exception the temporary file is removed and ``path`` is left untouched; an
    ``OSError`` (raised by the block or by the rename) becomes an :class:`OutputError`
    naming ``path``.
    """
    final = Path(path)
    with output_errors(final):
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
    except BaseException as exc:
        # Made before the unlink, which frees the space the write took (see output_error).
        error = output_error(final, exc) if isinstance(exc, OSError) else None
        # OSError, not only FileNotFoundError: on a file system gone read-only the unlink fails
        # too, and that must not hide the reason of the failed write.
        with contextlib.suppress(OSError):
            tmp.unlink()
        if error is not None:
            raise error from exc
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


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


class LineLog:
    """An append-only text file of whole lines (``log.jsonl``); use as a context manager.

    A line is written whole or not at all: a write that fails midway (a full disk) is cut back
    to the end of the previous line, so that the file never holds half a line that would run
    into the next one, and raises :class:`OutputError` naming the file. Unbuffered: each line
    is in the file when :meth:`write_line` returns (a killed run loses none of them).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        with output_errors(self.path):
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def write_line(self, text: str) -> None:
        """Append ``text`` (one line, without its newline) and a newline."""
        data = memoryview((text + "\n").encode("utf-8"))
        with output_errors(self.path):
            end = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                while data:  # write(2) may write part of the data and report ENOSPC on the next call
                    data = data[os.write(self._fd, data):]
            except OSError:
                # Shrinking a file needs no space, so this works on the full disk too.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, end)
                raise

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> LineLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


#: The name of :func:`staged_folder`'s hidden folder: ".wnet-staging." + tempfile's random part.
STAGING_PREFIX = ".wnet-staging."


@contextlib.contextmanager
def staged_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a hidden staging folder inside ``folder``; files written there appear in ``folder``
    all together when the block succeeds, or not at all.

    On success each file of the staging folder (subfolders included) is renamed to the same
    relative path in ``folder``, replacing a file of that name: the data is already written, and
    a rename within one file system needs no new data blocks, so a full disk found during the
    writes cannot leave half a set of files in ``folder``. On an exception nothing in ``folder``
    changes, and an :class:`OutputError` (or ``OSError``) about a file of the staging folder is
    re-raised naming that file's final path. The staging folder is removed in both cases.
    """
    final = Path(folder)
    with output_errors(final):
        final.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=final))

    def final_path(path) -> Path:
        path = Path(path)
        return final / path.relative_to(staging) if path.is_relative_to(staging) else path

    try:
        try:
            yield staging
        except OutputError as exc:
            # The same failure under its final name: changed in place, not chained to a new error.
            exc.path = final_path(exc.path)
            exc.args = (exc.path, exc.reason, exc.errno)
            raise
        except OSError as exc:
            raise output_error(final_path(exc.filename) if exc.filename else final, exc) from exc
        files = sorted(path.relative_to(staging) for path in staging.rglob("*") if not path.is_dir())
        for relative in files:
            target = final / relative
            with output_errors(target):
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / relative, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
