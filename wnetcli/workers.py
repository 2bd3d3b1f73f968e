"""Worker processes that end with the run that started them.

``wnet segment`` and ``wnet evaluate`` hand work to pools of processes. A run killed outright
(``kill -9``, or SIGTERM, whose default action skips all clean-up) cannot stop them, and they
cannot notice by themselves: each holds both ends of its task queue's pipe, so it waits on it
forever. Under the ``forkserver`` start method their parent is the fork server, which lives as
long as any of them does, so ``PR_SET_PDEATHSIG`` does not help either. Measured before
:func:`exit_with`: every killed ``wnet segment`` left the server and its two workers behind for
good (about 80 MB each), and every killed ``wnet evaluate`` its workers.
"""

from __future__ import annotations

import os
import select
import threading
import time

__all__ = ["exit_with"]


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
