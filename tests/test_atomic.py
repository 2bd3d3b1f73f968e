"""wnetcli.atomic: writes that replace a file only on success, and what a killed run left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wnetcli.atomic import atomic_open, atomic_path, atomic_write_text, prepare_folder, remove_stale_temporaries
from wnetcli.errors import InputError


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_open(target, "w") as handle:
        handle.write("half-written")
        raise RuntimeError("crash in the middle")
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_stale_temporaries_of_the_named_outputs_only_are_removed(tmp_path):
    import tempfile

    # Real temporary names, as a killed atomic_path would leave them.
    def leftover(final: str) -> Path:
        fd, name = tempfile.mkstemp(prefix=f".{Path(final).stem}.", suffix=f".tmp{Path(final).suffix}", dir=tmp_path)
        os.close(fd)
        return Path(name)

    mine = [leftover("a.png"), leftover("a.overlay.png"), leftover("a.probs.npy")]
    others = [leftover("b.png"), leftover("ab.png"), leftover("a.color.png"), leftover("summary.csv")]
    (tmp_path / "a.png").write_bytes(b"final")  # a final file is never touched
    assert remove_stale_temporaries([tmp_path / "a.png", tmp_path / "a.overlay.png", tmp_path / "a.probs.npy"]) == 3
    assert not any(p.exists() for p in mine) and all(p.exists() for p in others)
    assert (tmp_path / "a.png").read_bytes() == b"final"
    assert remove_stale_temporaries([tmp_path / "missing" / "x.png"]) == 0  # a folder not made yet


def test_prepare_folder_refuses_files_and_unwritable_folders(tmp_path, monkeypatch):
    assert prepare_folder(tmp_path / "new" / "deeper").is_dir()
    (tmp_path / "afile").write_text("")
    with pytest.raises(InputError, match="output folder .*afile is a file, not a folder"):
        prepare_folder(tmp_path / "afile")
    with pytest.raises(InputError, match="cannot create run folder"):
        prepare_folder(tmp_path / "afile" / "sub", "run folder")
    # A read-only file system or missing permission (root ignores mode bits, so it is faked).
    import wnetcli.atomic

    monkeypatch.setattr(wnetcli.atomic, "_writable", lambda folder: False)
    with pytest.raises(InputError, match="cannot write to output folder"):
        prepare_folder(tmp_path / "new")


def test_atomic_path_keeps_the_suffix_for_format_detection(tmp_path):
    with atomic_path(tmp_path / "labels.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "labels.png").read_bytes() == b"x"


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    import os

    atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
