"""Test helpers for runs in subprocesses: which live processes a run left behind (Linux: reads
/proc), and a run's output or, if it hangs, a failure that leaves nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest


def processes_with(*markers: str, exclude: tuple[int, ...] = ()) -> list[int]:
    """Pids of live processes whose command line holds every one of ``markers`` (a run's
    folder, say: a fork server started there lists it in its sys.path, and forked workers
    inherit their parent's command line), less those in ``exclude``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        if all(marker.encode() in command for marker in markers):
            found.append(int(entry.name))
    return found


def output_or_fail(run: subprocess.Popen, timeout: float, failure: str) -> str:
    """The output of ``run`` (started with ``start_new_session=True``, stdout piped) once it has
    exited; if it has not within ``timeout`` seconds, kill its whole process group (so no
    worker outlives the test) and fail with ``failure``."""
    try:
        output, _ = run.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        pytest.fail(failure)
    return output
