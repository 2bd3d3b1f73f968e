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

__all__ = ["STOP_SIGNALS", "deferred_interrupts", "exit_with", "serve_run", "signal_handlers", "stop_on_sigterm"]


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


#: The signals that stop a run cleanly: Ctrl-C, and SIGTERM (``kill``, a cluster's time limit;
#: SLURM sends it to every process of the job, then SIGKILL about 30 s later).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve_run(pid: int) -> threading.Thread:
    """Set up a worker process of the run ``pid``: :data:`STOP_SIGNALS` ignored (the run handles
    them and shuts its pool down, and :func:`exit_with` ends the worker if the run is killed
    outright), and :func:`exit_with` ``pid``. Called in a pool's initializer.

    Returns the (started) watching thread of :func:`exit_with`.
    """
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)
    return exit_with(pid)


@contextlib.contextmanager
def signal_handlers(signals: tuple[int, ...], handler) -> Iterator[None]:
    """Within the block, ``handler`` (a function or ``signal.SIG_IGN``) handles ``signals``; the
    previous handlers come back after it. Outside the main thread, where Python neither
    delivers signals nor lets their handlers be set, this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, handler) for number in signals}
    try:
        yield
    finally:
        for number, old_handler in previous.items():
            signal.signal(number, old_handler)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def stop_on_sigterm() -> contextlib.AbstractContextManager[None]:
    """Within the block, SIGTERM stops the command as Ctrl-C does (a :class:`KeyboardInterrupt`),
    so that ``kill`` or a cluster's time limit also ends a run cleanly: the images under way
    finish, ``summary.csv`` is written, a training run saves its checkpoint."""
    return signal_handlers((signal.SIGTERM,), _raise_interrupt)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while the block runs (a pool's shutdown), then raise
    :class:`KeyboardInterrupt`.

    A stop signal received meanwhile becomes a :class:`KeyboardInterrupt` once the block has
    finished; if the block raises, its exception goes on instead. Outside the main thread
    (where Python delivers no signals) this does nothing.
    """
    received: list[int] = []
    with signal_handlers(STOP_SIGNALS, lambda signum, frame: received.append(signum)):
        yield
    if received:
        raise KeyboardInterrupt
