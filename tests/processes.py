"""Test helpers for runs in subprocesses: which live processes a run left behind (Linux: reads
/proc), a run's output or, if it hangs, a failure that leaves nothing running, and two stop
signals that reach a run at a chosen point of its main thread."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

#: The folder of these helpers, for a subprocess that imports them (``sys.path.insert(0, HELPERS)``).
HELPERS = str(Path(__file__).resolve().parent)


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


def stop_twice_in_a_lock_wait(caller: str) -> threading.Thread:
    """Start a thread that, once the main thread waits in :meth:`threading.Condition.wait`
    under a function named ``caller``, sends it SIGINT and then SIGTERM, such that the second
    signal's handler runs in the ``finally`` of that wait, before it takes its lock back. For a
    run in a subprocess (``python -c``); returns the started thread.

    Both signals reach the main thread while it is blocked in the wait's lock: this thread holds
    the GIL from its check to its second signal (in that wait, the main thread gives the GIL up
    only while blocked, and a switch interval of a minute keeps it from asking for it back
    meanwhile). Once the main thread has the GIL again, the first signal's handler runs in the
    blocked acquire; if it raises, the second's runs at the next check for pending calls: in the
    ``finally`` that unwinds the wait.
    """
    main = threading.main_thread()

    def waiting() -> bool:
        frame = sys._current_frames().get(main.ident)
        if frame is None or frame.f_code is not threading.Condition.wait.__code__:
            return False
        while frame is not None and frame.f_code.co_name != caller:
            frame = frame.f_back
        return frame is not None

    def stop_twice() -> None:
        interval = sys.getswitchinterval()
        sys.setswitchinterval(60)
        while not waiting():
            time.sleep(0.01)
        signal.pthread_kill(main.ident, signal.SIGINT)
        signal.pthread_kill(main.ident, signal.SIGTERM)
        sys.setswitchinterval(interval)

    thread = threading.Thread(target=stop_twice, name="stop-twice", daemon=True)
    thread.start()
    return thread
