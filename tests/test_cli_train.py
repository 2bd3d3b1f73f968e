"""``wnet train`` end to end: a tiny run, --resume, bad data, no torch, and two processes under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from processes import output_or_fail
from typer.testing import CliRunner

from wnetcli.cli import app

ROOT = Path(__file__).resolve().parents[1]
TINY_TOML = 'log_every = 1\nsample_every = 0\n[model]\nbase_width = 4\ndepth = 2\n'
TINY_FLAGS = ["--size", "16", "--k", "3", "--batch-size", "2", "--device", "cpu", "--threads", "1"]


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "voc" / "VOCdevkit" / "VOC2012" / "JPEGImages"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    (folder / "truncated.jpg").write_bytes(b"\xff\xd8\xff")
    return tmp_path / "voc"


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


def test_train_then_resume(tmp_path, data, tiny_config):
    pytest.importorskip("torch")
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--config", str(tiny_config), *TINY_FLAGS]
    result = CliRunner().invoke(app, [*args, "--iterations", "4", "--stop-after", "2"])
    assert result.exit_code == 0, result.output
    assert "4 images (in memory)" in result.output and "device cpu" in result.output
    assert "skipping unreadable training image" in result.output and "truncated.jpg" in result.output
    assert "stopped at step 2 of 4" in result.output
    # Not a terminal: plain progress lines instead of a bar that could not redraw.
    assert "step 1/4: ncut" in result.output and "step 2/4: ncut" in result.output
    assert "━" not in result.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["iterations"] == 4 and saved["model"]["k"] == 3 and saved["model"]["base_width"] == 4
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(out), "--resume", "--iterations", "5",
                                      "--threads", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "resuming at step 2" in result.output and "done: step 5" in result.output
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert json.loads((out / "config.json").read_text())["iterations"] == 5


def test_bad_data_folders_are_one_line_errors(tmp_path, tiny_config):
    pytest.importorskip("torch")
    (tmp_path / "empty").mkdir()
    cases = [(tmp_path / "missing", "training data not found"), (tmp_path / "empty", "no training images")]
    for folder, message in cases:
        result = CliRunner().invoke(app, ["train", "--data", str(folder), "--out", str(tmp_path / "run"),
                                          "--config", str(tiny_config), *TINY_FLAGS])
        assert result.exit_code == 1 and message in result.output
        assert "Traceback" not in result.output
        assert result.output.count("\n") == 1, repr(result.output)  # the error line alone


def test_a_run_folder_that_is_a_file_is_a_one_line_error(tmp_path, data, tiny_config):
    pytest.importorskip("torch")
    (tmp_path / "afile").write_text("")
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "afile"),
                                      "--config", str(tiny_config), *TINY_FLAGS])
    assert result.exit_code == 1
    assert result.output == f"error: run folder {tmp_path / 'afile'} is a file, not a folder\n"


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="signals a process group (POSIX)")
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_to_the_whole_job_saves_a_checkpoint_with_dataloader_workers(tmp_path, data, stop):
    """As SLURM ends a job at its time limit (SIGTERM) or a terminal's Ctrl-C (SIGINT): the signal
    reaches every process, the DataLoader's workers included (``cache_limit = 0`` decodes
    through them); the run must save and exit 130. Before, SIGTERM ended the workers and the
    run with "DataLoader worker ... is killed by signal: Terminated", its last steps lost."""
    import signal
    import time

    pytest.importorskip("torch")
    config = tmp_path / "loader.toml"
    config.write_text("log_every = 1\nsample_every = 0\ncache_limit = 0\nworkers = 1\niterations = 100000\n"
                      "checkpoint_every = 0\n[model]\nbase_width = 4\ndepth = 2\n")
    out = tmp_path / "run"
    code = "import sys; from wnetcli.cli import main; main(sys.argv[1:])"
    run = subprocess.Popen(
        [sys.executable, "-c", code, "train", "--data", str(data), "--out", str(out), "--config", str(config),
         *TINY_FLAGS],
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    log, deadline = out / "log.jsonl", time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None and (
        not log.exists() or len(log.read_text().splitlines()) < 3
    ):
        time.sleep(0.05)
    assert run.poll() is None, run.communicate()[0]
    os.killpg(run.pid, getattr(signal, stop))
    output = output_or_fail(run, 60, f"the run did not stop on {stop}")
    assert run.returncode == 130, output
    assert "interrupted: checkpoint saved" in output
    import torch

    saved = torch.load(out / "last.pt", weights_only=True)["step"]
    assert saved >= 3 and json.loads(log.read_text().splitlines()[-1])["step"] == saved


def test_without_torch_it_says_how_to_install(tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from wnetcli.cli import main\n"
        f"main(['train', '--data', {str(tmp_path)!r}, '--out', {str(tmp_path / 'run')!r}])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 1
    assert "pip install 'wnet[train]'" in done.stderr


@pytest.mark.parametrize("boundaries", [False, True], ids=["algorithm1", "with_boundaries"])
def test_two_processes_under_torchrun_keep_identical_weights(tmp_path, data, tiny_config, boundaries):
    pytest.importorskip("torch")
    out = tmp_path / "ddp"
    # With boundaries each process computes its share of the teacher's targets, then all wait.
    extra = ["--boundaries-from", "fast", "--teacher-cache", str(tmp_path / "cache")] if boundaries else []
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "wnetcli", "train", "--data", str(data), "--out", str(out), "--config", str(tiny_config),
        "--iterations", "3", *TINY_FLAGS, *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x 2 processes" in done.stderr
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 3]
    assert records[-1] == {"step": 3, "replica_difference": 0.0}
    import torch

    from training.checkpoint import read_checkpoint

    payload = read_checkpoint(out / "last.pt")
    assert payload["step"] == 3
    assert all(torch.isfinite(t).all() for t in payload["model"].values() if t.is_floating_point())
    if boundaries:
        assert all(r["boundary"] is not None for r in records[:3])
        assert len(list((tmp_path / "cache").rglob("*.png"))) == 4


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the rank's process through /proc (Linux)")
def test_a_stop_signal_to_one_process_under_torchrun_stops_all_at_the_same_step(tmp_path, data):
    """Only rank 1 gets SIGTERM: the ranks must agree to stop, and rank 0 save, at the same step
    (before, rank 1 left alone and rank 0 waited in its next all-reduce for good)."""
    import signal
    import time

    pytest.importorskip("torch")
    config = tmp_path / "long.toml"
    config.write_text("log_every = 1\nsample_every = 0\niterations = 100000\ncheckpoint_every = 0\n"
                      "[model]\nbase_width = 4\ndepth = 2\n")
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "wnetcli", "train", "--data", str(data), "--out", str(out), "--config", str(config), *TINY_FLAGS,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    log, deadline = out / "log.jsonl", time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None and (
        not log.exists() or len(log.read_text().splitlines()) < 3
    ):
        time.sleep(0.05)
    assert run.poll() is None, run.communicate()[0][-3000:]
    rank1 = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(out).encode() in (entry / "cmdline").read_bytes() and (
                b"LOCAL_RANK=1\0" in (entry / "environ").read_bytes()
            ):
                rank1.append(int(entry.name))
        except OSError:
            continue
    assert len(rank1) == 1, rank1
    os.kill(rank1[0], signal.SIGTERM)
    output = output_or_fail(run, 90, "the ranks did not stop")  # kills torchrun and both ranks
    import torch

    assert (out / "last.pt").exists(), output[-3000:]
    saved = torch.load(out / "last.pt", weights_only=True)["step"]
    assert saved >= 3 and json.loads(log.read_text().splitlines()[-1])["step"] == saved
    assert output.count("interrupted: checkpoint saved") == 1  # rank 0 reports it


def test_the_saved_config_is_preset_then_file_then_flags(tmp_path, data, tiny_config):
    pytest.importorskip("torch")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(out), "--preset", "paper",
                                      "--config", str(tiny_config), "--iterations", "1", "--lr", "0.01", *TINY_FLAGS])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert (saved["optimizer"], saved["momentum"], saved["dropout_switch_step"]) == ("sgd", 0.9, 25_000)  # preset
    assert (saved["model"]["base_width"], saved["log_every"]) == (4, 1)  # file
    assert (saved["lr"], saved["iterations"], saved["size"], saved["model"]["k"]) == (0.01, 1, 16, 3)  # flags
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(out), "--resume",
                                      "--config", str(tiny_config)])
    assert result.exit_code == 1 and "--resume uses the run's own config" in result.output


def test_padding_and_init_from_flags_fine_tune_a_run(tmp_path, data, tiny_config):
    pytest.importorskip("torch")
    base = ["train", "--data", str(data), "--config", str(tiny_config), "--iterations", "1", *TINY_FLAGS]
    assert CliRunner().invoke(app, [*base, "--out", str(tmp_path / "first")]).exit_code == 0
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "tuned"), "--padding", "reflect",
                                      "--init-from", str(tmp_path / "first" / "last.pt")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert saved["model"]["padding_mode"] == "reflect" and saved["init_from"] == str(tmp_path / "first" / "last.pt")
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "bad"), "--padding", "circular"])
    assert result.exit_code == 1 and result.output == "error: --padding must be one of zeros, reflect, got 'circular'\n"
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "bad"), "--init-from", str(tmp_path / "no.pt")])
    assert result.exit_code == 1 and "checkpoint not found" in result.output


def test_train_with_boundaries_from_a_teacher(tmp_path, data, tiny_config):
    pytest.importorskip("torch")
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["train", "--data", str(data), "--out", str(out), "--config", str(tiny_config), *TINY_FLAGS,
            "--iterations", "2", "--boundaries-from", "fast", "--teacher-cache", str(cache)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "teacher: 4/4" in result.output
    assert "step 1/2: ncut" in result.output and ", boundary " in result.output
    assert "done: step 2" in result.output and "boundary" in result.output.splitlines()[-1]
    saved = json.loads((out / "config.json").read_text())
    assert (saved["boundaries_from"], saved["boundary_weight"], saved["model"]["boundary_head"]) == ("fast", 1.0, True)
    assert len(list(cache.rglob("*.png"))) == 4
    # Boundary-only fine-tuning from that run, with the teacher's targets read from the cache.
    tuned = tmp_path / "tuned"
    result = CliRunner().invoke(app, [*args[:4], str(tuned), *args[5:], "--init-from", str(out / "last.pt"),
                                      "--ncut-weight", "0", "--recon-weight", "0", "--boundary-weight", "0.5"])
    assert result.exit_code == 0, result.output
    assert "step 1/2: ncut -, recon -, boundary " in result.output
    assert json.loads((tuned / "config.json").read_text())["boundary_weight"] == 0.5
    bad = CliRunner().invoke(app, [*args[:4], str(tmp_path / "bad"), *args[5:-4], "--boundary-weight", "1"])
    assert bad.exit_code == 1 and "needs boundaries_from" in bad.output


def test_export_of_a_boundary_run_has_two_outputs(tmp_path, data, tiny_config):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(out), "--config", str(tiny_config),
                                      *TINY_FLAGS, "--iterations", "1", "--boundaries-from", "fast",
                                      "--teacher-cache", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["export", str(out / "last.pt")])
    assert result.exit_code == 0, result.output
    assert "probs, boundaries" in result.output
