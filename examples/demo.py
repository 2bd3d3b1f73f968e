"""`make demo`: segment the example photos and leave label maps and overlays in examples/out/.

Until a default model ships with the package (``wnetcli/models/default.onnx``), the demo first
trains a tiny W-Net on the example photos themselves (about a minute on 2 CPU cores), exports
it to ONNX and segments with that; such a model is only a smoke test of the whole path, not
a good segmenter. Every step is the real command line, printed before it runs.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
IMAGES = EXAMPLES / "images"
OUT = EXAMPLES / "out"
DEFAULT_MODEL = EXAMPLES.parent / "wnetcli" / "models" / "default.onnx"
# Small enough for a fresh 2-core machine: quarter width, 96 px crops, 150 minibatches.
DEMO_TRAIN_FLAGS = ["--preset", "small", "--iterations", "150", "--size", "96", "--k", "12",
                    "--sample-every", "50", "--checkpoint-every", "50"]


def wnet(*args: str) -> None:
    """Run ``wnet ARGS`` (as ``python -m wnetcli``), echoing it; stop the demo if it fails."""
    command = [sys.executable, "-m", "wnetcli", *args]
    print("$ wnet " + " ".join(shlex.quote(a) for a in args), flush=True)
    done = subprocess.run(command)
    if done.returncode not in (0,):
        sys.exit(done.returncode)


def main() -> None:
    model_args: list[str] = []
    if not DEFAULT_MODEL.is_file():
        run_dir = OUT / "demo-run"
        model = OUT / "demo-model.onnx"
        if not model.is_file():
            if not (run_dir / "last.pt").is_file():
                wnet("train", "--data", str(IMAGES), "--out", str(run_dir), *DEMO_TRAIN_FLAGS)
            wnet("export", str(run_dir / "last.pt"), "--out", str(model))
        model_args = ["--model", str(model)]
    wnet("segment", str(IMAGES), "--out", str(OUT / "masks"), *model_args, "--save", "overlay", "--save", "color")
    print(f"\nLabel maps, overlays and colour maps are in {OUT / 'masks'}")


if __name__ == "__main__":
    main()
