"""``--help`` of every command at 80 columns: no value placeholder on flags, wrapped (never cut) help
texts, docstring paragraphs reflowed."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from wnetcli.cli import app

runner = CliRunner()
COMMANDS = sorted(name for name in typer.main.get_command(app).commands if not name.startswith("_"))


def _help(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def _flags(command: str) -> list[str]:
    """The long names of ``command``'s options that take no value (``--tta``, ``--crf/--no-crf``)."""
    click_command = typer.main.get_command(app).commands[command]
    return [opt for param in click_command.params if getattr(param, "is_flag", False) for opt in param.opts]


def test_every_command_is_covered():
    assert {"compare", "evaluate", "export", "segment", "train"} <= set(COMMANDS)


@pytest.mark.parametrize("command", [(), *((name,) for name in COMMANDS)], ids=lambda c: " ".join(c) or "wnet")
def test_help_fits_80_columns_and_flags_take_no_value(command):
    text = _help(*command)
    too_long = [line for line in text.splitlines() if len(line) > 80]
    assert not too_long, "\n".join(too_long)
    assert "<bool>" not in text
    assert "…" not in text  # Rich's ellipsis where a column was too narrow for a word
    for flag in _flags(command[0]) if command else ["--debug", "--version"]:
        line = next(line for line in text.splitlines() if re.search(rf"(^|[\s,/]){flag}($|[\s,/])", line))
        # The option column (up to the gap before the help) names the flag and no value.
        names = re.split(r"\s{2,}", line.strip())[0]
        assert flag in names and "<" not in names, line


def test_evaluate_shows_the_whole_bsds_help():
    text = " ".join(_help("evaluate").split())
    assert "BSDS500 root (BSR/BSDS500/data/... or {images,groundTruth}/SPLIT)." in text


def test_the_command_list_wraps_summaries_instead_of_cutting_them():
    text = _help()
    words = " ".join(text.split())
    for name in COMMANDS:
        summary = typer.main.get_command(app).commands[name].help.split("\n\n")[0]
        assert " ".join(summary.split()) in words, f"the summary of {name} is cut"


def test_train_docstring_is_reflowed():
    lines = _help("train").splitlines()
    start = next(i for i, line in enumerate(lines) if "Settings come from --preset" in line)
    paragraph = lines[start : next(i for i in range(start, len(lines)) if not lines[i].strip())]
    # Reflowed: every line but the last is filled to near the width, not broken where the
    # docstring's source line ended.
    assert len(paragraph) >= 2
    assert all(len(line.rstrip()) >= 70 for line in paragraph[:-1]), paragraph


def test_a_real_terminal_of_80_columns_gets_the_same_help():
    env = {**os.environ, "COLUMNS": "80"}
    proc = subprocess.run(
        [sys.executable, "-m", "wnetcli", "evaluate", "--help"], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "<bool>" not in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80
    assert "{images,groundTruth}/SPLIT)." in proc.stdout
