"""Worker processes that end with the run that started them.

``wnet segment`` and ``wnet evaluate`` hand work to pools of processes. A run killed outright
(``kill -9``, or SIGTERM, whose default action skips all clean-up) cannot stop them, and they
cannot notice by themselves: each holds both ends of its task queue's pipe, so it waits on it
forever. Under the ``forkserver`` start method their parent is the fork server, which lives as
long as any of them does, so ``PR_SET_PDEATHSIG`` does not help either. Measured before
:func:`exit_with`: every killed ``wnet segment`` left the server and its two workers behind for
good (about 80 MB each), and every killed ``wnet evaluate`` its workers.

Ctrl-C is the run's to handle, not the workers'. A terminal sends SIGINT to the whole process
group, and ``timeout -s INT`` sends it to the command and then to its group, so the run gets it
twice. Measured with ``timeout -s INT``: 4 of 12 interrupted ``wnet segment`` runs and 5 of 13
``wnet evaluate`` runs hung for good, the run waiting at exit for workers idle on their task
queue. Two changes ended it (no hang in 20 and 8 tries since): :func:`serve_run` makes the
workers ignore SIGINT, so no task is broken off half-way, and the pool's shutdown runs under
:func:`deferred_interrupts`, so a second SIGINT no longer cuts short the wait for the pool's
manager thread, which had then not yet sent the workers their stop messages when the
interpreter's exit closed the queue.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Iterator

__all__ = ["deferred_interrupts", "exit_with", "serve_run"]


def exit_with(pid: int, poll_seconds: float = 1.0) -> threading.Thread:
    """End this process as soon as process ``pid`` (the run that started it) has ended.

    Called in a worker's initializer. A daemon thread waits on a pidfd of ``pid`` (Linux), or
    polls it every ``poll_seconds`` elsewhere, then leaves with ``os._exit(1)``: whatever the
    worker was writing stays a temporary file (:mod:`wnetcli.atomic`), never a final one.

    Returns the (started) watching thread.
    """

    def wait_for_pid() -> None:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # gone already
            os._exit(1)
        except (AttributeError, OSError):  # no pidfd here (not Linux, or an old kernel): poll
            while True:
                time.sleep(poll_seconds)
                try:
                    os.kill(pid, 0)
                except (ProcessLookupError, PermissionError):  # gone, or its pid reused by another user
                    os._exit(1)
        select.select([pidfd], [], [])  # readable once the process has exited
        os._exit(1)

    watcher = threading.Thread(target=wait_for_pid, name=f"exit-with-{pid}", daemon=True)
    watcher.start()
    return watcher


def serve_run(pid: int) -> threading.Thread:
    """Set up a worker process of the run ``pid``: SIGINT ignored (the run handles Ctrl-C and
    shuts its pool down), and :func:`exit_with` ``pid``. Called in a pool's initializer.

    Returns the (started) watching thread of :func:`exit_with`.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return exit_with(pid)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C back while the block runs (a pool's shutdown), then raise it.

    A SIGINT received meanwhile becomes a :class:`KeyboardInterrupt` once the block has
    finished; if the block raises, its exception goes on instead. Outside the main thread
    (where Python delivers no signals) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
