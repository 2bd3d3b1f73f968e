"""`wnet train` (command added by its issue)."""

from __future__ import annotations
