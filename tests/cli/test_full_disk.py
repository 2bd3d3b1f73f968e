"""A full disk: ``segment``, ``train`` and ``evaluate`` stop with one line naming the file and the
cause, exit 1, leave no partial file, and keep what they finished (issue 20, item 4).

Two ways to fill a disk: :class:`FullDisk` injects ENOSPC at the writes below a folder (runs
anywhere), and :func:`small_fs` mounts a real tmpfs of a few hundred KB (needs the right to
mount; skipped with the reason elsewhere).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from wnetcli.atomic import STAGING_PREFIX, LineLog, atomic_write_text, staged_folder
from wnetcli.cli import app
from wnetcli.errors import OutputError

runner = CliRunner()
NO_SPACE = "No space left on device"
# An atomic write's temporary ".<stem>.<8 random>.tmp<suffix>" counts as its final file.
_TEMPORARY = re.compile(r"^\.(?P<stem>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]*)?$")


def _final_name(path) -> str:
    name = Path(path).name
    match = _TEMPORARY.match(name)
    return match["stem"] + (match["suffix"] or "") if match else name


def _enospc(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


class FullDisk:
    """Fake a disk below ``root`` that fills up during the ``nth`` write of the file ``name``.

    A write of a file is the whole file for a file opened to write from the start, one call
    for a file opened to append or written with ``os.write`` (a log line). That write is half
    done, as on a real disk (some blocks written, then ENOSPC); with ``stays_full`` every later
    write below ``root`` fails too, otherwise only that one (as when removing the failed file's
    temporary frees enough for what follows). Writes are caught at ``open`` (the file objects
    of Pillow, numpy, matplotlib, pathlib and atomic writing) and at ``os.write``
    (:class:`wnetcli.atomic.LineLog`), not in C++ (torch.save to a path: see
    :func:`test_real_full_file_system_train`). A file is known by its final name, so an atomic
    write's temporary counts as its file.
    """

    def __init__(self, monkeypatch, root: Path, name: str, nth: int = 1, *, stays_full: bool = True) -> None:
        self.root, self.name, self.nth, self.stays_full = Path(root).resolve(), name, nth, stays_full
        self.seen, self.full = 0, False
        real_open, real_write = builtins.open, os.write

        def fake_open(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            if not isinstance(file, int) and any(flag in mode for flag in "wax+") and self._below(file):
                if "a" in mode:
                    return _FillingFile(handle, self, fills=False, per_write=True)
                return _FillingFile(handle, self, fills=self._fills(file))
            return handle

        def fake_write(fd, data):
            path = self._path_of(fd)
            if path is None or not self._below(path):
                return real_write(fd, data)
            if self.full:
                raise _enospc(path)
            if self._fills(path):
                self.full = True
                return real_write(fd, bytes(data[: max(1, len(data) // 2)]))  # the next call fails
            return real_write(fd, data)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)  # pathlib's Path.open calls io.open
        monkeypatch.setattr(os, "write", fake_write)

    def _below(self, path) -> bool:
        return Path(os.path.abspath(path)).resolve().is_relative_to(self.root)

    @staticmethod
    def _path_of(fd: int) -> str | None:
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None

    def _fills(self, path) -> bool:
        if _final_name(path) != self.name:
            return False
        self.seen += 1
        return self.seen == self.nth

    def failing(self) -> bool:
        return self.full and self.stays_full


class _FillingFile:
    """A file object whose writes fail as :class:`FullDisk` decides; everything else is the file's."""

    def __init__(self, handle, disk: FullDisk, fills: bool, per_write: bool = False) -> None:
        self._handle, self._disk, self._fills, self._per_write = handle, disk, fills, per_write

    def write(self, data):
        if self._fills or (self._per_write and not self._disk.full and self._disk._fills(self._handle.name)):
            self._fills = False
            self._disk.full = True
            self._handle.write(data[: len(data) // 2])
            self._handle.flush()
            raise _enospc(self._handle.name)
        if self._disk.failing():
            raise _enospc(self._handle.name)
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()


def _error_line(output: str) -> str:
    """The one error line, which ends the output (progress lines may come before it)."""
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line]
    assert errors == lines[-1:] and "Traceback" not in output, output
    return lines[-1]


def _leftovers(folder: Path) -> list[str]:
    """Temporaries and staging folders anywhere below ``folder``."""
    return sorted(
        str(path.relative_to(folder)) for path in folder.rglob("*")
        if _TEMPORARY.match(path.name) or path.name.startswith(STAGING_PREFIX)
    )


# --- the building blocks -------------------------------------------------------------------


def test_a_failed_atomic_write_names_the_final_path_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    FullDisk(monkeypatch, tmp_path, "metrics.json")
    with pytest.raises(OutputError) as caught:
        atomic_write_text(target, "new content")
    assert str(caught.value) == f"cannot write {target}: {NO_SPACE}"
    assert caught.value.no_room and caught.value.errno == errno.ENOSPC
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_an_errno_lost_by_the_writer_is_found_on_the_file_system(tmp_path, monkeypatch):
    # numpy's tofile says only "800000 requested and 8176 written" on a full disk.
    import wnetcli.atomic
    from wnetcli.atomic import atomic_path

    monkeypatch.setattr(wnetcli.atomic, "_file_system_errno", lambda folder: errno.ENOSPC)
    target = tmp_path / "a.npy"
    with pytest.raises(OutputError, match=f"cannot write .*a.npy: {NO_SPACE}") as caught, atomic_path(target):
        raise OSError("800000 requested and 8176 written")
    assert caught.value.no_room


def test_a_log_line_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "log.jsonl"
    FullDisk(monkeypatch, tmp_path, "log.jsonl", nth=3)
    with LineLog(path) as log:
        log.write_line('{"step": 1}')
        log.write_line('{"step": 2}')
        with pytest.raises(OutputError, match=f"cannot write .*log.jsonl: {NO_SPACE}"):
            log.write_line('{"step": 3, "ncut": 17.5}')  # half written, then the disk is full
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_a_staged_folder_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    out = tmp_path / "report"
    out.mkdir()
    (out / "a.csv").write_text("old a")
    FullDisk(monkeypatch, out, "b.csv")
    with pytest.raises(OutputError) as caught, staged_folder(out) as staging:
        atomic_write_text(staging / "a.csv", "new a")
        atomic_write_text(staging / "b.csv", "new b")
    assert str(caught.value) == f"cannot write {out / 'b.csv'}: {NO_SPACE}"  # the final name
    assert sorted(p.name for p in out.iterdir()) == ["a.csv"] and (out / "a.csv").read_text() == "old a"


def test_a_write_that_fails_while_another_failure_propagates_names_both(tmp_path, monkeypatch):
    FullDisk(monkeypatch, tmp_path, "b.png")
    with pytest.raises(OutputError) as caught:
        try:
            atomic_write_text(tmp_path / "b.png", "x")
        finally:
            atomic_write_text(tmp_path / "summary.csv", "y")
    assert str(caught.value) == (
        f"cannot write {tmp_path / 'b.png'}: {NO_SPACE}; {tmp_path / 'summary.csv'} could not be written either"
    )


def test_output_errors_survive_a_worker_process():
    import pickle

    error = pickle.loads(pickle.dumps(OutputError(Path("out/a.png"), NO_SPACE, errno.ENOSPC)))
    assert str(error) == f"cannot write out/a.png: {NO_SPACE}" and error.no_room


# --- segment ---------------------------------------------------------------------------------


def _noise(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed, name in enumerate("abc"):
        Image.fromarray(_noise(48, seed)).save(folder / f"{name}.png")
    return folder


@pytest.mark.parametrize("stays_full", [False, True], ids=["summary_written", "summary_fails_too"])
def test_segment_stops_on_a_full_disk_with_one_line(tmp_path, photos, monkeypatch, stays_full):
    out = tmp_path / "out"
    FullDisk(monkeypatch, out, "b.png", stays_full=stays_full)
    result = runner.invoke(app, ["segment", str(photos), "--out", str(out), "--workers", "0"])
    assert result.exit_code == 1, result.output
    line = _error_line(result.output)
    summary = out / "summary.csv"
    if stays_full:
        assert line == f"error: cannot write {out / 'b.png'}: {NO_SPACE}; {summary} could not be written either"
        assert not summary.exists()
    else:
        assert line == f"error: cannot write {out / 'b.png'}: {NO_SPACE}"
        rows = summary.read_text().splitlines()
        assert len(rows) == 2 and rows[1].startswith("a.png,") and ",ok," in rows[1]  # the image done
    # The image done stays; the run stopped at b rather than failing c the same way.
    assert (out / "a.png").is_file() and not (out / "b.png").exists() and not (out / "c.png").exists()
    assert _leftovers(out) == []


# --- train -----------------------------------------------------------------------------------

TINY_TOML = 'log_every = 1\nsample_every = 0\ncheckpoint_every = 2\n[model]\nbase_width = 4\ndepth = 2\n'
TINY_FLAGS = ["--size", "16", "--k", "3", "--batch-size", "2", "--device", "cpu", "--threads", "1"]


@pytest.fixture
def training_data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(_noise(24, i)).save(folder / f"{i}.png")
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    return folder, config


def _train(data, config, out, *extra):
    return runner.invoke(app, ["train", "--data", str(data), "--out", str(out), "--config", str(config),
                               *TINY_FLAGS, "--iterations", "4", *extra])


# The disk fills at the checkpoint of step 4, at the log line of step 3 (the log's 4th write, after
# its creation), at the sample sheet of step 4.
@pytest.mark.parametrize(("name", "nth"), [("last.pt", 2), ("log.jsonl", 4), ("step_0000004.png", 1)])
def test_train_stops_on_a_full_disk_with_one_line_and_keeps_the_last_checkpoint(
    tmp_path, training_data, monkeypatch, name, nth
):
    torch = pytest.importorskip("torch")
    from training.checkpoint import read_checkpoint

    data, config = training_data
    out = tmp_path / "run"
    FullDisk(monkeypatch, out, name, nth)
    result = _train(data, config, out)
    assert result.exit_code == 1, result.output
    target = out / "samples" / name if name.startswith("step_") else out / name
    assert _error_line(result.output) == f"error: cannot write {target}: {NO_SPACE}"
    assert _leftovers(out) == []
    # The checkpoint of step 2 is whole (the one of step 4 never replaced it).
    assert read_checkpoint(out / "last.pt")["step"] == 2
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 2
    # Whole lines only, so that --resume reads them all.
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1))
    # Room again: the run resumes from step 2 and its log holds each step once.
    monkeypatch.undo()
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(out), "--resume", "--threads", "1",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


# --- evaluate --------------------------------------------------------------------------------


@pytest.fixture
def bsds(tmp_path):
    """A 2-image BSDS tree ({images,groundTruth}/val) and a --results folder of ucm2 maps."""
    from scipy.io import savemat

    root, results = tmp_path / "bsds", tmp_path / "ucm2"
    for sub in ("images/val", "groundTruth/val"):
        (root / sub).mkdir(parents=True)
    results.mkdir()
    rng = np.random.default_rng(0)
    for image_id in ("1", "2"):
        Image.fromarray(_noise(24, int(image_id))).save(root / "images" / "val" / f"{image_id}.jpg")
        segmentation = np.ones((24, 24), dtype=np.uint16)
        segmentation[:, 12:] = 2
        boundaries = np.zeros((24, 24), dtype=np.uint8)
        boundaries[:, 11] = 1
        cells = np.empty((1, 1), dtype=object)
        cells[0, 0] = {"Segmentation": segmentation, "Boundaries": boundaries}
        savemat(root / "groundTruth" / "val" / f"{image_id}.mat", {"groundTruth": cells})
        ucm2 = np.zeros((49, 49))
        ucm2[:, 24] = rng.uniform(0.3, 1.0)
        np.save(results / f"{image_id}.npy", ucm2)
    return root, results


def test_evaluate_writes_its_report_all_or_nothing(tmp_path, bsds, monkeypatch):
    root, results = bsds
    out = tmp_path / "report"
    args = ["evaluate", "--bsds", str(root), "--split", "val", "--results", str(results), "--thresholds", "5",
            "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    assert len(before) == 12
    # The disk fills at the 10th of the 12 files.
    FullDisk(monkeypatch, out, "eval_cover_img.csv")
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert _error_line(result.output) == f"error: cannot write {out / 'eval_cover_img.csv'}: {NO_SPACE}"
    # The earlier report, untouched: none of the 9 files written before the failure replaced it.
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert _leftovers(out) == []


# --- a real full file system -----------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path):
    """Mount a tmpfs at ``tmp_path / "fs"``; return ``fill(free)``, which leaves ``free`` bytes on it.

    Skips where mounting is not permitted (not root, no CAP_SYS_ADMIN, a container without it).
    """
    mount = tmp_path / "fs"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs to fill: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")

    def fill(free: int) -> None:
        filler = mount / "filler"
        with open(filler, "ab") as handle:
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        os.truncate(filler, max(0, filler.stat().st_size - free))

    try:
        yield mount, fill
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_real_full_file_system_segment(tmp_path, photos, small_fs, workers):
    # Room for the first image's overlay (48 KB of noise, 12 pages), not for the second's.
    mount, fill = small_fs
    for seed, name in enumerate("abc"):
        Image.fromarray(_noise(128, seed)).save(photos / f"{name}.png")
    out = mount / "seg"
    fill(96 * 1024)
    result = runner.invoke(app, ["segment", str(photos), "--out", str(out), "--workers", str(workers),
                                 "--save", "overlay"])
    assert result.exit_code == 1, result.output
    line = _error_line(result.output)
    rows = [row.split(",") for row in (out / "summary.csv").read_text().splitlines()[1:]]
    assert _leftovers(out) == []
    if workers == 0:
        assert line == f"error: cannot write {out / 'b.overlay.png'}: {NO_SPACE}"
        assert (out / "a.png").is_file() and (out / "a.overlay.png").is_file() and not (out / "b.png").exists()
        assert [row[0] for row in rows] == ["a.png"]
    else:
        # Images run side by side in the worker processes: which one found the disk full varies.
        assert re.fullmatch(rf"error: cannot write {re.escape(str(out))}/[abc]\.overlay\.png: {NO_SPACE}", line), line
        assert len(rows) < 3 and all(row[5] == "ok" for row in rows)  # what is listed was written
        for row in rows:
            assert (out / row[0]).is_file() and (out / row[0].replace(".png", ".overlay.png")).is_file()


def test_real_full_file_system_train(training_data, small_fs):
    # Room for the run's small files, not for a second checkpoint.
    torch = pytest.importorskip("torch")
    mount, fill = small_fs
    data, config = training_data
    run = mount / "run"
    result = _train(data, config, run, "--stop-after", "2")
    assert result.exit_code == 0, result.output
    checkpoint = (run / "last.pt").read_bytes()
    fill(len(checkpoint) // 2)
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(run), "--resume", "--threads", "1",
                                 "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert _error_line(result.output) == f"error: cannot write {run / 'last.pt'}: {NO_SPACE}"
    assert (run / "last.pt").read_bytes() == checkpoint and _leftovers(run) == []
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 2


def test_real_full_file_system_evaluate(bsds, small_fs):
    # No room for the whole report; the earlier report stays as it was.
    mount, fill = small_fs
    root, results = bsds
    report = mount / "report"
    args = ["evaluate", "--bsds", str(root), "--split", "val", "--results", str(results), "--thresholds", "5",
            "--out", str(report)]
    assert runner.invoke(app, args).exit_code == 0
    before = {path.name: path.read_bytes() for path in report.iterdir()}
    fill(8 * 1024)
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    line = _error_line(result.output)
    assert line.startswith(f"error: cannot write {report}/") and line.endswith(NO_SPACE), line
    assert {path.name: path.read_bytes() for path in report.iterdir()} == before and _leftovers(report) == []
