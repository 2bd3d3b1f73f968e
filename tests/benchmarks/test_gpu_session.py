"""The prepared GPU session (benchmarks/gpu_session.sh), run on the CPU with a tiny network.

CI never has a GPU, so this checks what the script does around the GPU: the schedule fitted
to the time left, training, the export, the packing of what comes back (the checkpoint in parts
that join to the same bytes, the small files in one tar).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TINY = """\
iterations = 100
size = 16
batch_size = 2
k = 3
base_width = 4
depth = 2
lr_decay_every = 50
dropout_switch_step = 50
"""


@pytest.mark.slow
def test_gpu_session_script_on_the_cpu(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    rng = np.random.default_rng(0)
    for folder in ("train", "photos"):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for i in range(3):
            image = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / "data" / folder / f"{i}.png")
    (tmp_path / "tiny.toml").write_text(TINY)
    out, run = tmp_path / "out", tmp_path / "run"
    env = {
        **os.environ, "OUT": str(out), "WNET_GPU_RUN": str(run), "WNET_GPU_DATA": str(tmp_path / "data"),
        "WNET_GPU_DEVICE": "cpu", "WNET_GPU_BUDGET": "70", "WNET_GPU_RESERVE": "25",
        "WNET_GPU_CONFIG": str(tmp_path / "tiny.toml"), "PYTHON": sys.executable,
    }
    done = subprocess.run(["bash", "benchmarks/gpu_session.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "== " in (out / "session.log").read_text() and "done" in done.stdout

    with tarfile.open(out / "results.tar") as tar:
        names = {Path(name).name for name in tar.getnames()}
        fitted = json.load(tar.extractfile("./fitted.json"))
        timing = json.load(tar.extractfile("./train_step_config.json"))["results"][0]
        steps = [json.loads(line)["step"] for line in tar.extractfile("./log.jsonl").read().splitlines()]
    assert {"config.json", "log.jsonl", "encoder.json", "train_step_config.json"} <= names
    # The schedule fits the time left: its halving and dropout switch at half the fitted length.
    assert timing["size"] == 16 and timing["batch"] == 2
    assert fitted["iterations"] >= 20 and fitted["lr_decay_every"] == fitted["iterations"] // 2
    assert fitted["k"] == 3 and fitted["dropout_switch_step"] == fitted["iterations"] // 2
    # Training ran to the fitted end, or was stopped at the budget with its last step saved.
    assert steps and steps[-1] <= fitted["iterations"]

    parts = sorted(out.glob("last.pt.part-*"))
    assert parts and b"".join(p.read_bytes() for p in parts) == (run / "last.pt").read_bytes()
    from wnetcli.segmentation.runtime import OnnxModel

    assert OnnxModel(out / "gpu.onnx", device="cpu").info.k == 3
