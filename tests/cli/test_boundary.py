"""The CLI's error boundary and entry points (wnetcli.cli): one line and exit 1 for a wnet error,
exit 2 for a bug, the traceback only under --debug."""

from __future__ import annotations

import subprocess
import sys

import typer
from typer.testing import CliRunner

from wnetcli import __version__
from wnetcli.cli import app, command
from wnetcli.errors import DataError, InputError, ModelError, WNetError

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
