"""The shared core: CLI entry points and error boundary, atomic writes, model metadata, malloc tuning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from wnetcli import __version__
from wnetcli.atomic import atomic_open, atomic_path, atomic_write_text, prepare_folder, remove_stale_temporaries
from wnetcli.cli import app, command
from wnetcli.errors import DataError, InputError, ModelError, WNetError
from wnetcli.model_info import FORMAT_VERSION, ModelInfo

runner = CliRunner()


# Two throwaway commands registered once, to exercise the error boundary itself.
@command("_raise-wnet-error", hidden=True)
def _raise_wnet_error() -> None:
    raise DataError("no images under /nowhere")


@command("_raise-bug", hidden=True)
def _raise_bug() -> None:
    raise ZeroDivisionError("division by zero")


@command("_exit-3", hidden=True)
def _exit_3() -> None:
    raise typer.Exit(3)


def test_version_flag():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"wnet {__version__}"


def test_python_dash_m_runs_the_same_cli():
    proc = subprocess.run([sys.executable, "-m", "wnetcli", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wnet {__version__}"


def test_the_four_commands_are_registered_and_have_help():
    registered = typer.main.get_command(app).commands
    for name in ("train", "export", "segment", "evaluate"):
        assert name in registered, f"`wnet {name}` is not registered"
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_wnet_error_is_one_line_and_exit_1():
    result = runner.invoke(app, ["_raise-wnet-error"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["error: no images under /nowhere"]
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback():
    result = runner.invoke(app, ["--debug", "_raise-wnet-error"])
    assert result.exit_code == 1
    assert "Traceback" in result.output
    assert "no images under /nowhere" in result.output


def test_unexpected_exception_is_reported_as_a_bug_with_exit_2():
    result = runner.invoke(app, ["_raise-bug"])
    assert result.exit_code == 2
    assert "internal error: ZeroDivisionError" in result.output
    assert "--debug" in result.output


def test_explicit_exit_codes_pass_through():
    assert runner.invoke(app, ["_exit-3"]).exit_code == 3


def test_error_family():
    assert issubclass(DataError, InputError) and issubclass(InputError, WNetError)
    assert issubclass(ModelError, WNetError)
    # Input errors are also ValueErrors, so library callers can catch the standard type.
    assert issubclass(InputError, ValueError)


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


def test_model_info_round_trip():
    info = ModelInfo(k=12, pad_multiple=16, fp16=True, model_config={"k": 12, "depth": 4}, step=500,
                     checkpoint_sha256="ab" * 32, training_data="bsds500 train + photos", package_version="0.1.0")
    props = info.to_metadata()
    assert all(isinstance(value, str) for value in props.values())
    assert props["wnet.format_version"] == str(FORMAT_VERSION)
    assert ModelInfo.from_metadata(props) == info


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({}, "no wnet metadata"),
        ({"wnet.format_version": str(FORMAT_VERSION + 1), "wnet.k": "4", "wnet.pad_multiple": "16"}, "upgrade wnet"),
        ({"wnet.format_version": "1", "wnet.pad_multiple": "16"}, "malformed"),
        ({"wnet.format_version": "1", "wnet.k": "four", "wnet.pad_multiple": "16"}, "malformed"),
    ],
)
def test_model_info_rejects_bad_metadata(props, message):
    with pytest.raises(ModelError, match=message):
        ModelInfo.from_metadata(props, source="m.onnx")


def test_tune_malloc_applies_in_a_fresh_process():
    code = "from wnetcli.tuning import tune_malloc; print(tune_malloc())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    expected = "True" if sys.platform.startswith("linux") else "False"
    assert proc.stdout.strip() == expected


def test_tune_malloc_respects_the_users_own_setting():
    code = "from wnetcli.tuning import tune_malloc; print(tune_malloc())"
    env = {"PATH": "/usr/bin:/bin", "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.stdout.strip() == "False"


def test_single_threaded_blas_limits_then_restores_the_blas_threads():
    import scipy.cluster.vq  # noqa: F401  (loads the BLAS the post-processing's k-means uses)
    from threadpoolctl import threadpool_info

    from wnetcli.tuning import single_threaded_blas

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    assert before, "scipy's BLAS should be loaded"
    with single_threaded_blas():
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    import os

    atomic_write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
