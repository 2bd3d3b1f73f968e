"""Training from an exported ``.onnx`` (``init_from``): the encoder rebuilt from its initializers.

The ONNX files are made by ``wnet export`` from tiny checkpoints whose BatchNorms are far from
the identity, so that the BatchNorm folded into the heads must be undone correctly.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (torch)")
pytest.importorskip("onnx", reason="needs the train extra (onnx)")
ort = pytest.importorskip("onnxruntime")

from test_export import random_wnet  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from export.verify import pad_reflect  # noqa: E402
from training.checkpoint import read_checkpoint, save_checkpoint  # noqa: E402
from training.config import ModelConfig, TrainConfig  # noqa: E402
from training.model import WNet  # noqa: E402
from training.onnx_init import load_onnx_encoder  # noqa: E402
from training.trainer import train  # noqa: E402
from wnetcli.cli import app  # noqa: E402
from wnetcli.errors import InputError, ModelError  # noqa: E402

TINY = {"k": 4, "base_width": 4, "depth": 2}


def exported(tmp_path, name: str = "model", **overrides):
    """``wnet export`` of a tiny random checkpoint: the path of the .onnx and the W-Net."""
    wnet = random_wnet(**overrides)
    checkpoint = save_checkpoint(tmp_path / f"{name}.pt", wnet, step=1)
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--out", str(tmp_path / f"{name}.onnx")])
    assert result.exit_code == 0, result.output
    return tmp_path / f"{name}.onnx", wnet


def onnxruntime_outputs(path, images: np.ndarray, multiple: int) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    height, width = images.shape[-2:]
    return [out[..., :height, :width] for out in session.run(None, {"image": pad_reflect(images, multiple)})]


@pytest.mark.parametrize("overrides", [{}, {"upsampling": "resize_conv"}, {"boundary_head": True}],
                         ids=["transposed", "resize_conv", "boundary_head"])
def test_a_model_initialised_from_an_export_computes_what_the_export_does(tmp_path, overrides):
    path, source = exported(tmp_path, **overrides)
    torch.manual_seed(1)  # another seed than the source: every weight must come from the file
    model = WNet(ModelConfig(**TINY, **overrides))
    load_onnx_encoder(model, path)
    model.eval()
    images = np.random.default_rng(0).uniform(0, 255, (2, 3, 11, 13)).astype(np.float32)
    expected = onnxruntime_outputs(path, images, model.config.pad_multiple)
    with torch.no_grad():
        tensors = torch.from_numpy(images)
        got = model.encode_with_boundaries(tensors) if model.config.boundary_head else (model.encode(tensors),)
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-4)
    # The folded BatchNorm (the last one before the heads) is the identity now.
    folded = model.encoder.up[-1][5]
    assert torch.equal(folded.weight, torch.ones(4)) and torch.equal(folded.bias, torch.zeros(4))
    assert torch.equal(folded.running_mean, torch.zeros(4))
    assert torch.allclose(folded.running_var, torch.full((4,), 1 - folded.eps))
    # Every other encoder weight is the source's; the decoder keeps the model's own initialisation.
    source_state, state = source.state_dict(), model.state_dict()
    assert torch.equal(state["encoder.down.1.0.0.weight"], source_state["encoder.down.1.0.0.weight"])
    torch.manual_seed(1)
    fresh = WNet(ModelConfig(**TINY, **overrides)).state_dict()
    assert all(torch.equal(state[name], fresh[name]) for name in state if name.startswith("decoder."))


def test_a_missing_boundary_head_keeps_its_initialisation(tmp_path):
    path, _ = exported(tmp_path)
    torch.manual_seed(2)
    model = WNet(ModelConfig(**TINY, boundary_head=True))
    head = model.encoder.boundary_head.weight.detach().clone()
    load_onnx_encoder(model, path)
    assert torch.equal(model.encoder.boundary_head.weight, head)


def test_other_architectures_and_other_files_are_refused(tmp_path):
    path, _ = exported(tmp_path)
    with pytest.raises(ModelError, match="has shape"):
        load_onnx_encoder(WNet(ModelConfig(**{**TINY, "k": 5})), path)
    with pytest.raises(ModelError, match="lacks the encoder weight"):
        load_onnx_encoder(WNet(ModelConfig(**{**TINY, "depth": 3})), path)
    headed, _ = exported(tmp_path, "headed", boundary_head=True)
    with pytest.raises(ModelError, match="weights the config's network lacks.*boundary_head"):
        load_onnx_encoder(WNet(ModelConfig(**TINY)), headed)
    with pytest.raises(InputError, match="not found"):
        load_onnx_encoder(WNet(ModelConfig(**TINY)), tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ModelError, match="junk.onnx is not an ONNX model"):
        load_onnx_encoder(WNet(ModelConfig(**TINY)), tmp_path / "junk.onnx")


def test_training_starts_from_an_export(tmp_path):
    path, source = exported(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(data / f"{i}.png")
    # Boundary-only fine-tuning of the exported encoder, at a learning rate too small to move it.
    config = TrainConfig(
        model=ModelConfig(**TINY, boundary_head=True), iterations=1, batch_size=2, size=16, lr=1e-12,
        ncut_weight=0.0, recon_weight=0.0, boundary_weight=1.0, boundaries_from="fast", teacher_mirror=False,
        init_from=str(path), sample_every=0,
    )
    train(config, data, tmp_path / "run", device="cpu", threads=1, teacher_cache=tmp_path / "cache")
    weights = read_checkpoint(tmp_path / "run" / "last.pt")["model"]
    expected = source.state_dict()["encoder.down.0.0.weight"]
    assert torch.allclose(weights["encoder.down.0.0.weight"], expected, atol=1e-9)
