"""Test helpers: where the shared BSDS data lies, and small BSDS trees made of links to it."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ``../shared/data`` beside the checkout (CI has it; a user's clone may not).
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: The official benchmark's 5-image self-test.
BENCH = DATA / "bsds500-bench"
#: BSDS500 train and val.
BSDS = DATA / "bsds500"


def bench_tree(root: Path, count: int = 2) -> Path:
    """A BSDS layout ``{images,groundTruth}/val`` of links to the first ``count`` bench images
    (no copies); skips the test where the bench data is absent."""
    if not BENCH.is_dir():
        pytest.skip(f"BSDS bench data not found at {BENCH}")
    for sub, suffix in (("images", ".jpg"), ("groundTruth", ".mat")):
        folder = root / sub / "val"
        folder.mkdir(parents=True)
        for path in sorted((BENCH / sub).glob(f"*{suffix}"))[:count]:
            (folder / path.name).symlink_to(path)
    return root
