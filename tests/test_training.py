"""The trainer: Algorithm 1, exact resume, checkpoints, NaN and Ctrl-C handling, and that it learns."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from training.checkpoint import read_checkpoint  # noqa: E402
from training.config import ModelConfig, TrainConfig  # noqa: E402
from training.trainer import load_run_config, train  # noqa: E402
from wnetcli.errors import InputError, ModelError, TrainingError  # noqa: E402

TINY = TrainConfig(
    model=ModelConfig(k=3, base_width=4, depth=2, dropout=0.5),
    iterations=20,
    batch_size=2,
    size=16,
    dropout_late=0.2,
    dropout_switch_step=5,  # crosses the switch on both sides of a resume at step 10
    lr_decay_every=7,
    checkpoint_every=4,
    log_every=3,
    sample_every=10,
)


@pytest.fixture(autouse=True)
def one_thread():
    # The test machine's 2 cores are shared: OpenMP threads spinning against other processes
    # made steps 100x slower there. One thread is also what makes the runs bitwise repeatable.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, size=(24, 28, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _weights(run_dir):
    return read_checkpoint(run_dir / "last.pt")["model"]


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_resume_continues_exactly(tmp_path, data):
    straight = train(TINY, data, tmp_path / "straight", device="cpu", threads=1)
    first = train(TINY, data, tmp_path / "resumed", device="cpu", threads=1, stop_after=10)
    assert (first.step, straight.step) == (10, 20)
    second = train(TINY, data, tmp_path / "resumed", device="cpu", threads=1, resume=True)
    assert (second.start_step, second.step) == (10, 20)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[name], b[name]) for name in a), "resumed weights differ from a straight run"
    a_opt = read_checkpoint(tmp_path / "straight" / "last.pt")["optimizers"]["full"]["state"]
    b_opt = read_checkpoint(tmp_path / "resumed" / "last.pt")["optimizers"]["full"]["state"]
    assert all(torch.equal(a_opt[i]["exp_avg"], b_opt[i]["exp_avg"]) for i in a_opt)
    # The resumed run's log holds each step once (plus step 10, where the first session ended),
    # with the losses of the straight run.
    straight_log = {r["step"]: {**r, "seconds": None} for r in _log(tmp_path / "straight")}
    resumed_log = [{**r, "seconds": None} for r in _log(tmp_path / "resumed")]
    assert [r["step"] for r in resumed_log] == [3, 6, 9, 10, 12, 15, 18, 20]
    assert [r for r in resumed_log if r["step"] != 10] == list(straight_log.values())


def test_run_folder_contents_and_checkpoint(tmp_path, data):
    result = train(TINY, data, tmp_path / "run", device="cpu", threads=1)
    run = tmp_path / "run"
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())) == TINY
    assert load_run_config(run) == TINY
    payload = read_checkpoint(run / "last.pt")  # weights_only=True: every entry is a plain type
    assert payload["step"] == 20 and payload["train_config"] == TINY.to_dict()
    assert set(payload["optimizers"]) == {"encoder", "full"}
    assert set(payload["rng"]) >= {"torch", "numpy", "python"}
    assert [r["step"] for r in _log(run)] == [3, 6, 9, 12, 15, 18, 20]
    record = _log(run)[-1]
    assert record["lr"] == pytest.approx(TINY.lr * 0.5**2) and record["dropout"] == 0.2
    assert all(np.isfinite(r["ncut"]) and np.isfinite(r["recon"]) for r in _log(run))
    sheets = sorted(p.name for p in (run / "samples").iterdir())
    assert sheets == ["step_0000010.png", "step_0000020.png"]
    with Image.open(run / "samples" / sheets[0]) as sheet:  # 4 rows of input | labels | reconstruction
        assert sheet.size == (3 * 16 + 2 * 4, 4 * 16 + 3 * 4)
    assert result.parameters > 0 and result.replica_difference == 0.0


def test_algorithm1_updates_the_decoder_only_on_the_reconstruction_loss(tmp_path, data):
    config = TrainConfig.from_dict({"iterations": 2, "recon_weight": 0.0, "sample_every": 0}, base=TINY)
    torch.manual_seed(config.seed)
    from training.model import WNet

    initial = WNet(config.model).state_dict()
    train(config, data, tmp_path / "run", device="cpu", threads=1)
    trained = _weights(tmp_path / "run")
    changed = {name for name in initial if not torch.equal(initial[name], trained[name])}
    assert any(name.startswith("encoder.") for name in changed)
    decoder_weights = [n for n in initial if n.startswith("decoder.") and n.endswith("weight")]
    assert decoder_weights and not changed.intersection(decoder_weights)
    assert all(r["recon"] is None for r in _log(tmp_path / "run"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data, monkeypatch):
    import training.trainer as trainer

    calls = {"n": 0}
    real = trainer.reconstruction_loss

    def poisoned(reconstruction, target):
        calls["n"] += 1
        loss = real(reconstruction, target)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(trainer, "reconstruction_loss", poisoned)
    with pytest.raises(TrainingError, match="reconstruction loss became nan at step 6"):
        train(TINY, data, tmp_path / "run", device="cpu", threads=1)
    payload = read_checkpoint(tmp_path / "run" / "last.pt")
    assert payload["step"] == 4
    assert all(torch.isfinite(t).all() for t in payload["model"].values() if t.is_floating_point())


@pytest.mark.parametrize(("minutes", "saves"), [(10.0, [4, 8, 10]), (0.0, [10])])
def test_a_checkpoint_is_also_written_every_checkpoint_minutes(tmp_path, data, monkeypatch, minutes, saves):
    """A run killed outright (``kill -9``) loses at most ``checkpoint_minutes`` of training, even
    with ``checkpoint_every`` beyond its length. The clock is injected: each step takes 3 minutes."""
    import training.trainer as trainer

    now = {"seconds": 0.0}
    monkeypatch.setattr(trainer, "_clock", lambda: now["seconds"])

    def three_minutes_per_step(metrics):
        now["seconds"] = 180.0 * metrics["step"]

    saved = []
    real_save = trainer.save_checkpoint

    def spy(path, model, *, step, **kwargs):
        saved.append(step)
        return real_save(path, model, step=step, **kwargs)

    monkeypatch.setattr(trainer, "save_checkpoint", spy)
    config = TrainConfig.from_dict({"iterations": 10, "checkpoint_every": 0, "checkpoint_minutes": minutes}, base=TINY)
    train(config, data, tmp_path / "run", device="cpu", threads=1, on_metrics=three_minutes_per_step)
    # 10 minutes are reached at step 4 (12 minutes) and 4 steps after that; the end always saves.
    assert saved == saves
    assert TrainConfig().checkpoint_minutes == 10.0
    with pytest.raises(InputError, match="checkpoint_minutes must be at least 0"):
        TrainConfig(checkpoint_minutes=-1.0)


def test_a_malicious_pickle_is_refused_without_torchs_advice(tmp_path, data):
    """A file of unknown origin is not a wnet checkpoint, and that is all the message says:
    torch's own message advises reloading with ``weights_only=False``, which would run its code."""
    import os
    import pickle

    from typer.testing import CliRunner

    from wnetcli.cli import app

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil.pt"
    torch.save({"package": "wnet", "model": Payload()}, evil)
    with pytest.raises(ModelError) as caught:
        read_checkpoint(evil)
    assert str(caught.value) == f"{evil} is not a wnet checkpoint"
    raw = tmp_path / "raw.pt"  # a bare pickle, not torch's zip format
    raw.write_bytes(pickle.dumps(Payload()))
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "run"),
                                      "--init-from", str(raw), "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"error: {raw} is not a wnet checkpoint"
    assert "weights_only" not in result.output and not marker.exists()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_saves_at_a_step_boundary_and_the_run_resumes(tmp_path, data, stop):
    """SIGTERM too: ``kill``, or a cluster's time limit (SLURM sends SIGKILL 30 s later)."""
    def interrupt_at_step_7(metrics):
        if metrics["step"] == 7:
            signal.raise_signal(stop)

    # The handler before the run, whatever it is (a job started in the background with `&`
    # inherits SIGINT ignored): training must put that one back.
    before = signal.getsignal(stop)
    with pytest.raises(KeyboardInterrupt):
        train(TINY, data, tmp_path / "run", device="cpu", threads=1, on_metrics=interrupt_at_step_7)
    assert read_checkpoint(tmp_path / "run" / "last.pt")["step"] == 7
    assert signal.getsignal(stop) is before
    result = train(TINY, data, tmp_path / "run", device="cpu", threads=1, resume=True)
    assert (result.start_step, result.step) == (7, 20)


def test_run_folder_guards(tmp_path, data):
    with pytest.raises(InputError, match="nothing to resume"):
        train(TINY, data, tmp_path / "run", device="cpu", resume=True)
    train(TINY.from_dict({"iterations": 2}, base=TINY), data, tmp_path / "run", device="cpu", threads=1)
    with pytest.raises(InputError, match="already holds a run"):
        train(TINY, data, tmp_path / "run", device="cpu")
    with pytest.raises(InputError, match="already at step 2"):
        train(TINY.from_dict({"iterations": 2}, base=TINY), data, tmp_path / "run", device="cpu", resume=True)
    with pytest.raises(ModelError, match="different model"):
        train(TINY.from_dict({"k": 4}, base=TINY), data, tmp_path / "run", device="cpu", resume=True)
    with pytest.raises(InputError, match="cannot resume with sgd"):
        train(TINY.from_dict({"optimizer": "sgd"}, base=TINY), data, tmp_path / "run", device="cpu", resume=True)


def test_init_from_starts_at_another_runs_weights(tmp_path, data):
    train(TINY.from_dict({"iterations": 3}, base=TINY), data, tmp_path / "source", device="cpu", threads=1)
    source = read_checkpoint(tmp_path / "source" / "last.pt")["model"]
    # Same layer shapes, other padding; a learning rate so small that one step cannot move a weight
    # measurably, so the result shows where the run started.
    tuned = TINY.from_dict(
        {"iterations": 1, "lr": 1e-12, "padding_mode": "reflect", "init_from": str(tmp_path / "source" / "last.pt")},
        base=TINY,
    )
    result = train(tuned, data, tmp_path / "tuned", device="cpu", threads=1)
    assert (result.start_step, result.step) == (0, 1)
    started = read_checkpoint(tmp_path / "tuned" / "last.pt")
    assert started["model_config"]["padding_mode"] == "reflect"
    weights = [name for name in source if name.endswith("weight")]
    assert weights and all(torch.allclose(started["model"][n], source[n], atol=1e-9) for n in weights)
    fresh = train(TINY.from_dict({"iterations": 1, "lr": 1e-12}, base=TINY), data, tmp_path / "fresh", device="cpu",
                  threads=1)
    assert fresh.step == 1
    assert not all(torch.allclose(_weights(tmp_path / "fresh")[n], source[n], atol=1e-9) for n in weights)
    with pytest.raises(ModelError, match="other shapes"):
        train(tuned.from_dict({"k": 4}, base=tuned), data, tmp_path / "wrong", device="cpu", threads=1)


def _two_region_image(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Left and right halves of two random colours at least 80 grey levels apart, plus noise."""
    left = rng.integers(0, 256, 3)
    right = rng.integers(0, 256, 3)
    while abs(left.mean() - right.mean()) < 80:
        right = rng.integers(0, 256, 3)
    image = np.empty((size, size, 3))
    image[:, : size // 2], image[:, size // 2 :] = left, right
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def _two_region_folder(folder, count: int):
    """``count`` images of :func:`_two_region_image` written to ``folder`` (created); returns it."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(_two_region_image(rng)).save(folder / f"{i}.png")
    return folder


def test_a_short_run_separates_two_regions(tmp_path):
    from training.checkpoint import load_checkpoint

    folder = _two_region_folder(tmp_path / "two", 16)
    config = TrainConfig(
        model=ModelConfig(k=2, base_width=8, depth=2, dropout=0.0), iterations=200, batch_size=8, size=32,
        optimizer="adam", lr=0.01, min_crop_area=1.0, log_every=0, sample_every=0, checkpoint_every=0,
    )
    train(config, folder, tmp_path / "run", device="cpu", threads=1)
    model = load_checkpoint(tmp_path / "run" / "last.pt")
    held_out = np.stack([_two_region_image(np.random.default_rng(100 + i)) for i in range(8)])
    with torch.no_grad():
        labels = model.encode(torch.from_numpy(held_out).permute(0, 3, 1, 2).float()).argmax(dim=1).numpy()
    separated, accuracies = 0, []
    for image_labels in labels:
        left, right = image_labels[:, :16], image_labels[:, 16:]
        left_major, right_major = np.bincount(left.ravel(), minlength=2), np.bincount(right.ravel(), minlength=2)
        if left_major.argmax() != right_major.argmax() and min(left_major.max(), right_major.max()) > 0.8 * left.size:
            separated += 1
        truth = np.zeros_like(image_labels)
        truth[:, 16:] = 1
        accuracy = (image_labels == truth).mean()
        accuracies.append(max(accuracy, 1 - accuracy))  # the labels' names are arbitrary
    assert separated >= 7, f"only {separated} of 8 held-out images have their halves separated"
    assert np.mean(accuracies) > 0.9


@pytest.mark.gpu
def test_cuda_training_with_bf16_autocast_and_channels_last(tmp_path, data):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    config = TrainConfig.from_dict({"iterations": 3}, base=TINY)
    result = train(config, data, tmp_path / "run", device="cuda")
    assert result.device.startswith("cuda") and result.step == 3
    assert np.isfinite(result.last["ncut"]) and np.isfinite(result.last["recon"])
    payload = read_checkpoint(tmp_path / "run" / "last.pt")  # saved on the CPU, loadable anywhere
    assert all(t.device.type == "cpu" for t in payload["model"].values())


BOUNDARY = TrainConfig.from_dict(
    {"boundaries_from": "fast", "boundary_weight": 1.0, "boundary_head": True, "teacher_mirror": False}, base=TINY
)


def test_boundary_only_training_updates_the_encoder_and_its_head(tmp_path, data):
    from training.model import WNet

    config = TrainConfig.from_dict({"iterations": 4, "ncut_weight": 0.0, "recon_weight": 0.0, "log_every": 1},
                                   base=BOUNDARY)
    torch.manual_seed(config.seed)
    initial = WNet(config.model).state_dict()
    teacher = []
    train(config, data, tmp_path / "run", device="cpu", threads=1, teacher_cache=tmp_path / "cache",
          on_teacher=lambda done, total: teacher.append((done, total)))
    assert teacher[0] == (0, 5) and teacher[-1] == (5, 5)
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 5
    trained = _weights(tmp_path / "run")
    changed = {name for name in initial if not torch.equal(initial[name], trained[name])}
    assert "encoder.boundary_head.weight" in changed and "encoder.down.0.0.weight" in changed
    # The K-way head and the decoder get no gradient from the boundary loss.
    assert not any(name.startswith("decoder.") or name.startswith("encoder.head.") for name in changed
                   if name.endswith(("weight", "bias")))
    log = _log(tmp_path / "run")
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(r["ncut"] is None and r["recon"] is None and np.isfinite(r["boundary"]) for r in log)
    payload = read_checkpoint(tmp_path / "run" / "last.pt")
    assert set(payload["optimizers"]) == {"encoder", "full", "boundary"}
    assert payload["optimizers"]["boundary"]["state"]  # stepped: Adam's moments are stored


def test_boundary_training_resumes_exactly(tmp_path, data):
    config = TrainConfig.from_dict({"iterations": 8, "checkpoint_every": 3, "log_every": 2}, base=BOUNDARY)
    cache = {"teacher_cache": tmp_path / "cache"}
    train(config, data, tmp_path / "straight", device="cpu", threads=1, **cache)
    train(config, data, tmp_path / "resumed", device="cpu", threads=1, stop_after=5, **cache)
    second = train(config, data, tmp_path / "resumed", device="cpu", threads=1, resume=True, **cache)
    assert (second.start_step, second.step) == (5, 8)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[name], b[name]) for name in a), "resumed weights differ from a straight run"
    straight = [{**r, "seconds": None} for r in _log(tmp_path / "straight")]
    resumed = [{**r, "seconds": None} for r in _log(tmp_path / "resumed") if r["step"] != 5]
    assert resumed == straight and all(r["boundary"] is not None for r in straight)


def test_boundary_settings_are_checked(tmp_path, data):
    with pytest.raises(InputError, match="needs boundaries_from"):
        TrainConfig.from_dict({"boundary_weight": 1.0, "boundary_head": True}, base=TINY)
    with pytest.raises(InputError, match="needs model.boundary_head"):
        TrainConfig.from_dict({"boundary_weight": 1.0, "boundaries_from": "default"}, base=TINY)
    with pytest.raises(InputError, match="cannot all be 0"):
        TrainConfig.from_dict({"ncut_weight": 0.0, "recon_weight": 0.0}, base=TINY)
    wrong = TrainConfig.from_dict({"boundaries_from": "nope"}, base=BOUNDARY)
    with pytest.raises(InputError, match="unknown recipe 'nope'"):
        train(wrong, data, tmp_path / "run", device="cpu", threads=1, teacher_cache=tmp_path / "cache")


def test_init_from_a_checkpoint_without_a_boundary_head_keeps_the_heads_init(tmp_path, data):
    train(TINY.from_dict({"iterations": 2}, base=TINY), data, tmp_path / "source", device="cpu", threads=1)
    source = read_checkpoint(tmp_path / "source" / "last.pt")["model"]
    tuned = BOUNDARY.from_dict({"iterations": 1, "lr": 1e-12, "init_from": str(tmp_path / "source" / "last.pt")},
                               base=BOUNDARY)
    train(tuned, data, tmp_path / "tuned", device="cpu", threads=1, teacher_cache=tmp_path / "cache")
    started = _weights(tmp_path / "tuned")
    assert all(torch.allclose(started[n], source[n], atol=1e-9) for n in source if n.endswith("weight"))
    assert "encoder.boundary_head.weight" in started
    # The other way round (a head in the checkpoint, none in the config) is another architecture.
    train(tuned.from_dict({"init_from": ""}, base=tuned), data, tmp_path / "headed", device="cpu", threads=1,
          teacher_cache=tmp_path / "cache")
    plain = TINY.from_dict({"iterations": 1, "init_from": str(tmp_path / "headed" / "last.pt")}, base=TINY)
    with pytest.raises(ModelError, match="other shapes"):
        train(plain, data, tmp_path / "plain", device="cpu", threads=1)


def test_a_short_boundary_run_learns_the_teachers_border(tmp_path):
    from training.checkpoint import load_checkpoint

    folder = _two_region_folder(tmp_path / "two", 8)
    config = TrainConfig(
        model=ModelConfig(k=2, base_width=8, depth=2, dropout=0.0, boundary_head=True), iterations=60, batch_size=4,
        size=32, lr=0.01, min_crop_area=1.0, ncut_weight=0.0, recon_weight=0.0, boundary_weight=1.0,
        boundaries_from="fast", teacher_mirror=False, log_every=0, sample_every=0, checkpoint_every=0,
    )
    train(config, folder, tmp_path / "run", device="cpu", threads=1, teacher_cache=tmp_path / "cache")
    model = load_checkpoint(tmp_path / "run" / "last.pt")
    held_out = np.stack([_two_region_image(np.random.default_rng(100 + i)) for i in range(4)])
    with torch.no_grad():
        _, boundaries = model.encode_with_boundaries(torch.from_numpy(held_out).permute(0, 3, 1, 2).float())
    profile = boundaries[:, 0].mean(dim=(0, 1))  # mean over images and rows, per column
    # The border lies between columns 15 and 16 (the teacher marks column 15).
    assert profile[14:17].max() > 2 * torch.cat([profile[:10], profile[22:]]).max()


@pytest.mark.gpu
def test_cuda_boundary_training_with_bf16_autocast(tmp_path, data):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    config = TrainConfig.from_dict({"iterations": 3, "log_every": 1}, base=BOUNDARY)
    result = train(config, data, tmp_path / "run", device="cuda", teacher_cache=tmp_path / "cache")
    assert result.device.startswith("cuda") and result.step == 3
    assert all(np.isfinite(r[key]) for r in _log(tmp_path / "run") for key in ("ncut", "recon", "boundary"))
    assert "boundary" in read_checkpoint(tmp_path / "run" / "last.pt")["optimizers"]
