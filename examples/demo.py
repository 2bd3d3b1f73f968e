"""`make demo`: segment the example photos; results in examples/out/.

Runs the real command line (printed before it runs): ``wnet segment`` on ``examples/images``
with the default recipe (image cues only: the network does not run; ``--recipe network`` adds
the shipped W-Net, ``wnetcli/models/default.onnx``), saving the label maps, overlays, coloured
label maps and hierarchies in ``examples/out/masks``. ``wnet segment`` prints a summary table;
the demo then lists each image's number of regions from ``summary.csv``. A rerun skips the
images already done.
"""

from __future__ import annotations

import csv
import shlex
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
IMAGES = EXAMPLES / "images"
OUT = EXAMPLES / "out" / "masks"


def wnet(*args: str) -> None:
    """Run ``wnet ARGS`` (as ``python -m wnetcli``), echoing it; stop the demo if it fails."""
    print("$ wnet " + " ".join(shlex.quote(a) for a in args), flush=True)
    done = subprocess.run([sys.executable, "-m", "wnetcli", *args])
    if done.returncode != 0:
        sys.exit(done.returncode)


def main() -> None:
    wnet("segment", str(IMAGES), "--out", str(OUT), "--save", "overlay", "--save", "color", "--save", "ucm")
    with open(OUT / "summary.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            print(f"{row['image']:>16}: {row['regions']:>4} regions ({row['status']})")
    print(f"\nLabel maps (<name>.png), overlays, colour maps and hierarchies (.ucm.png) are in {OUT}")


if __name__ == "__main__":
    main()
