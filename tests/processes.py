"""Test helper: which live processes a run left behind (Linux: reads /proc)."""

from __future__ import annotations

from pathlib import Path


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
