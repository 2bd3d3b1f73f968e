"""Worker processes that end with the run that started them.

``wnet segment`` and ``wnet evaluate`` hand work to pools of processes. A run killed outright
(``kill -9``, or SIGTERM, whose default action skips all clean-up) cannot stop them, and they
cannot notice by themselves: each holds both ends of its task queue's pipe, so it waits on it
forever. Under the ``forkserver`` start method their parent is the fork server, which lives as
long as any of them does, so ``PR_SET_PDEATHSIG`` does not help either: without
:func:`exit_with` a killed run leaves its fork server and workers behind for good.

Ctrl-C is the run's to handle, not the workers'. A terminal sends SIGINT to the whole process
group, and ``timeout -s INT`` sends it to the command and then to its group, so the run gets it
twice; a run could then hang at exit, waiting for workers idle on their task queue (the
measured history is in CHANGELOG.md and docs/experiments.md). :func:`serve_run` makes the
workers ignore SIGINT, so no task is broken off half-way, and the pool's shutdown runs under
:func:`deferred_interrupts`, so a second SIGINT does not cut short the wait for the pool's
manager thread, which would otherwise not yet have sent the workers their stop messages when
the interpreter's exit closed the queue.

A second stop signal must not interrupt the clean-up that the first started, wherever it lands:
a :class:`KeyboardInterrupt` raised in the ``finally`` of :meth:`threading.Condition.wait`
(before it takes its lock back) made ``with condition:`` release an unlocked lock, and the
command ended with an internal error instead of its exit code 130. So a command runs under
:func:`interrupt_once`: the first stop signal raises, the later ones do nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import threading
import time
from collections.abc import Iterator

__all__ = ["STOP_SIGNALS", "deferred_interrupts", "exit_with", "interrupt_once", "serve_run", "signal_handlers"]


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
def signal_handlers(signals: tuple[int, ...], handler) -> Iterator[dict[int, object]]:
    """Within the block, ``handler`` (a function or ``signal.SIG_IGN``) handles ``signals``; the
    previous handlers come back after it. Outside the main thread, where Python neither
    delivers signals nor lets their handlers be set, this does nothing.

    Yields the previous handlers by signal (empty outside the main thread).
    """
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    previous: dict[int, object] = {}
    try:
        for number in signals:
            # Noted before it is replaced: a KeyboardInterrupt raised right after the change
            # still finds it here, and the finally puts it back.
            previous[number] = signal.getsignal(number)
            signal.signal(number, handler)
        yield previous
    finally:
        for number, old_handler in previous.items():
            signal.signal(number, old_handler)


class _FirstStopRaises:
    """A handler of :data:`STOP_SIGNALS` that raises :class:`KeyboardInterrupt` for the first
    stop signal only; a later one does nothing (see :func:`interrupt_once`)."""

    def __init__(self) -> None:
        self._calls = itertools.count()

    def __call__(self, signum, frame) -> None:
        if self.take():
            raise KeyboardInterrupt

    def take(self) -> bool:
        """True the first time it is called, by the handler or by :func:`deferred_interrupts`;
        False after."""
        # One C call, so atomic: a signal handler runs between bytecodes, also in the middle of
        # another handler, and two checks of a flag could both pass.
        return next(self._calls) == 0


def interrupt_once() -> contextlib.AbstractContextManager[dict[int, object]]:
    """Within the block, the first Ctrl-C or SIGTERM raises :class:`KeyboardInterrupt` and any
    later one does nothing.

    SIGTERM stops a command as Ctrl-C does, so that ``kill`` or a cluster's time limit also ends
    a run cleanly: the images under way finish, ``summary.csv`` is written, a training run saves
    its checkpoint. A second signal (Ctrl-C pressed twice, ``timeout -s INT`` that signals the
    command and then its group, SLURM's SIGTERM to every process of the job) finds the run
    already stopping and cannot break off its clean-up, wherever it lands.
    """
    return signal_handlers(STOP_SIGNALS, _FirstStopRaises())


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while the block runs (a pool's shutdown), then raise
    :class:`KeyboardInterrupt`.

    A stop signal received meanwhile becomes a :class:`KeyboardInterrupt` once the block has
    finished, unless the run is already stopping (under :func:`interrupt_once`, after its first
    signal); if the block raises, its exception goes on instead. Outside the main thread
    (where Python delivers no signals) this does nothing.
    """
    received: list[int] = []
    with signal_handlers(STOP_SIGNALS, lambda signum, frame: received.append(signum)) as previous:
        yield
    if received and _first_stop(previous):
        raise KeyboardInterrupt


def _first_stop(previous: dict[int, object]) -> bool:
    """Whether a stop signal held back by :func:`deferred_interrupts` is the run's first (under
    :func:`interrupt_once`, it counts as that first one); always True elsewhere."""
    handler = previous.get(signal.SIGINT)
    return handler.take() if isinstance(handler, _FirstStopRaises) else True
