"""Wall time of whole ``wnet segment`` commands on small folders: start-up included. Prints JSON.

A run of a few images is mostly start-up (imports, the model, the worker processes' fork
server), which ``bench_segment.py`` leaves out by timing inside one warmed process. This times
fresh ``python -m wnetcli segment`` processes on the first N images of a folder, for each N of
``--counts`` and each worker setting of ``--workers`` ("auto" is segment's own choice), every
combination ``--repeats`` times, interleaved; the fastest run counts.

``--checkout DIR`` runs the commands from another checkout (``git worktree add DIR COMMIT``)
with this Python, for a before/after comparison in one run.

Usage::

    .venv/bin/python benchmarks/bench_startup.py --counts 1,6,20 --workers auto,0
    .venv/bin/python benchmarks/bench_startup.py --checkout /tmp/old --checkout .
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "bsds500" / "images" / "val"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images-dir", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--counts", default="1,6,20", help="folder sizes, comma-separated")
    parser.add_argument("--workers", default="auto,0", help="worker settings, comma-separated (auto: segment's)")
    parser.add_argument("--checkout", action="append", type=Path, help="checkouts to run (default: this one)")
    parser.add_argument("--fast", action="store_true", help="pass --fast (short for --recipe fast)")
    parser.add_argument("--recipe", default=None, metavar="NAME|FILE", help="pass --recipe (default: segment's)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    images = sorted(p for p in args.images_dir.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    counts = [int(c) for c in args.counts.split(",")]
    if not images or max(counts) > len(images):
        raise SystemExit(f"need {max(counts)} images in {args.images_dir}")
    checkouts = [c.resolve() for c in (args.checkout or [ROOT])]
    work = Path(tempfile.mkdtemp(prefix="wnet-startup-"))
    folders = {}
    for count in counts:
        folders[count] = work / f"in-{count}"
        folders[count].mkdir()
        for image in images[:count]:
            shutil.copy(image, folders[count] / image.name)

    runs: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for checkout in checkouts:
            for count in counts:
                for workers in args.workers.split(","):
                    command = [sys.executable, "-m", "wnetcli", "segment", str(folders[count]),
                               "--out", str(work / "out"), "--overwrite"]
                    command += [] if workers == "auto" else ["--workers", workers]
                    command += ["--fast"] if args.fast else []
                    command += ["--recipe", args.recipe] if args.recipe else []
                    began = time.perf_counter()
                    # From the checkout's root, so that its wnetcli is the one imported.
                    subprocess.run(command, cwd=checkout, check=True, capture_output=True,
                                   env={**os.environ, "PYTHONPATH": str(checkout)})
                    key = f"{checkout.name or checkout}|images={count}|workers={workers}"
                    runs.setdefault(key, []).append(time.perf_counter() - began)
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({
        "benchmark": "startup", "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
        "fast": args.fast, "recipe": args.recipe, "checkouts": [str(c) for c in checkouts],
        "wall_seconds": {key: {"fastest": round(min(v), 3), "all": [round(x, 3) for x in v]}
                         for key, v in runs.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
