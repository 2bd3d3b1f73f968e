"""``wnet export``: parity with PyTorch, metadata, options and every bad input.

The models are tiny (K=4, base width 4, depth 2, so H and W pad to multiples of 4) with
random BatchNorm statistics, so that a wrong BatchNorm fold or a train-mode export would
change the output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="export needs the train extra (torch)")
onnx = pytest.importorskip("onnx", reason="export needs the train extra (onnx)")
ort = pytest.importorskip("onnxruntime")

from typer.testing import CliRunner  # noqa: E402

from export import ExportOptions, export_onnx, onnx_export  # noqa: E402
from export.optimize import ExportableEncoder  # noqa: E402
from export.verify import max_abs_difference, pad_reflect  # noqa: E402
from training.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from training.config import ModelConfig  # noqa: E402
from training.model import WNet  # noqa: E402
from wnetcli import __version__  # noqa: E402
from wnetcli.cli import app  # noqa: E402
from wnetcli.errors import InputError, ModelError  # noqa: E402
from wnetcli.model_info import (  # noqa: E402
    BOUNDARIES_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    ModelInfo,
    file_sha256,  # noqa: E402
)

runner = CliRunner()
TINY = {"k": 4, "base_width": 4, "depth": 2}


def random_wnet(seed: int = 0, **overrides) -> WNet:
    """A tiny eval-mode W-Net whose BatchNorms are far from the identity."""
    torch.manual_seed(seed)
    wnet = WNet(ModelConfig(**{**TINY, **overrides}))
    with torch.no_grad():
        for layer in wnet.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-1, 1)
                layer.running_var.uniform_(0.5, 2)
                layer.weight.uniform_(-2, 2)  # negative scales too
                layer.bias.uniform_(-1, 1)
    return wnet.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(path, random_wnet(), step=123, data="synthetic squares, 10 images")


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    return export_onnx(checkpoint, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("upsampling", ["transposed", "transposed_bilinear", "resize_conv"])
@pytest.mark.parametrize("separable", [True, False])
def test_rewritten_encoder_computes_encode_aligned(upsampling, separable):
    wnet = random_wnet(upsampling=upsampling, separable=separable)
    module = ExportableEncoder(wnet, fuse=True)
    batchnorms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())
    folded = 1 + (wnet.config.depth if upsampling == "resize_conv" else 0)  # head (+ resize convs)
    assert batchnorms == sum(isinstance(m, torch.nn.BatchNorm2d) for m in wnet.encoder.modules()) - folded
    images = torch.rand(3, 3, 12, 20) * 255
    with torch.no_grad():
        np.testing.assert_allclose(module(images).numpy(), wnet.encode_aligned(images).numpy(), atol=1e-6)
    # The W-Net it was built from is untouched.
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in wnet.encoder.modules()) == 2 * (2 * wnet.config.depth + 1)


def test_fuse_refuses_a_training_mode_network():
    with pytest.raises(ValueError, match="eval-mode"):
        ExportableEncoder(random_wnet().train())


def test_export_verifies_itself_and_reports(exported):
    assert exported.path.is_file()
    assert exported.exporter == "torchscript"
    assert exported.opset == onnx_export.default_opset("torchscript")
    assert len(exported.max_abs_diff) == 2
    assert all(0 <= diff <= 1e-4 for diff in exported.max_abs_diff.values())
    assert exported.seconds > 0


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 4, 4), (3, 7, 10), (2, 13, 5), (1, 33, 18)])
def test_parity_at_odd_sizes_and_batches(exported, checkpoint, batch, height, width):
    wnet = load_checkpoint(checkpoint)
    assert max_abs_difference(exported.path, wnet, height, width, batch=batch, seed=batch) < 1e-4


def test_reflect_padded_network_exports_with_parity(tmp_path):
    path = save_checkpoint(tmp_path / "reflect.pt", random_wnet(padding_mode="reflect"), step=1)
    result = export_onnx(path, tmp_path / "reflect.onnx")
    assert all(diff <= 1e-4 for diff in result.max_abs_diff.values())
    assert max_abs_difference(result.path, load_checkpoint(path), 7, 10, batch=2, seed=3) < 1e-4


def test_graph_signature_is_dynamic(exported):
    model = onnx.load(str(exported.path))
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert (graph_input.name, graph_output.name) == (INPUT_NAME, OUTPUT_NAME)
    in_dims = graph_input.type.tensor_type.shape.dim
    assert [d.dim_value for d in in_dims][1] == 3
    assert all(d.dim_param for i, d in enumerate(in_dims) if i != 1)  # N, H, W symbolic
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.opset_import[0].version == exported.opset


def test_metadata_round_trip(exported, checkpoint):
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    props = dict(session.get_modelmeta().custom_metadata_map)
    info = ModelInfo.from_metadata(props, source=str(exported.path))
    assert info == exported.info
    assert info.k == 4 and info.pad_multiple == 4 and not info.fp16
    assert ModelConfig.from_dict(info.model_config) == ModelConfig(**TINY)
    assert info.checkpoint_sha256 == file_sha256(checkpoint)
    assert (info.step, info.training_data, info.package_version) == (123, "synthetic squares, 10 images", __version__)
    assert info.short_side == 0  # no training config: native scale
    assert (info.input_range, info.input_layout) == ("0..255", "NCHW RGB")
    assert props["wnet.exporter"] == "torchscript"


def test_short_side_comes_from_the_training_scale_unless_given(tmp_path):
    path = save_checkpoint(
        tmp_path / "scaled.pt", random_wnet(), step=5, train_config={"max_side": 160}, data="synthetic"
    )
    options = ExportOptions(verify_sizes=((8, 12),), verify_batch=1)
    assert export_onnx(path, tmp_path / "a.onnx", options=options).info.short_side == 160
    native = ExportOptions(verify_sizes=((8, 12),), verify_batch=1, short_side=0)
    assert export_onnx(path, tmp_path / "b.onnx", options=native).info.short_side == 0


def test_segment_runtime_runs_the_export(exported):
    from wnetcli.segmentation.runtime import OnnxModel

    model = OnnxModel(exported.path, device="cpu")
    probs = model.run(np.random.default_rng(0).integers(0, 256, (2, 9, 11, 3), dtype=np.uint8))["probs"]
    assert probs.shape == (2, 4, 9, 11)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_default_output_is_beside_the_checkpoint(checkpoint, tmp_path):
    local = tmp_path / "run" / "model.pt"
    local.parent.mkdir()
    local.write_bytes(checkpoint.read_bytes())
    result = export_onnx(local, options=ExportOptions(verify_sizes=((5, 6),), verify_batch=1))
    assert result.path == local.with_suffix(".onnx")
    assert files_in(local.parent) == ["model.onnx", "model.pt"]


def test_fp16_export(checkpoint, tmp_path):
    result = export_onnx(checkpoint, tmp_path / "half.onnx", options=ExportOptions(fp16=True))
    assert result.fp16 and result.info.fp16 and result.tolerance == 1e-2
    assert all(diff <= 1e-2 for diff in result.max_abs_diff.values())
    model = onnx.load(str(result.path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert all(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer if t.data_type in (1, 10))


@pytest.mark.parametrize(("exporter", "opset"), [
    ("torchscript", 13), ("torchscript", 17),
    pytest.param("dynamo", None, marks=pytest.mark.slow),  # torch.export takes 4-15 s even for a tiny net
])
def test_exporters_and_opsets(checkpoint, tmp_path, exporter, opset):
    options = ExportOptions(exporter=exporter, opset=opset, verify_sizes=((9, 6),))
    result = export_onnx(checkpoint, tmp_path / "m.onnx", options=options)
    assert result.opset == (opset or onnx_export.default_opset(exporter))
    assert onnx.load(str(result.path)).opset_import[0].version == result.opset
    assert result.max_abs_diff["9x6"] < 1e-4


@pytest.mark.parametrize(("options", "message"), [
    ({"opset": 99}, "--opset"), ({"opset": 17, "exporter": "dynamo"}, "--opset"), ({"exporter": "jit"}, "exporter"),
    ({"tolerance": 0.0}, "tolerance"),
])
def test_bad_options(options, message):
    with pytest.raises(InputError, match=message):
        ExportOptions(**options)


def test_failed_verification_writes_nothing(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(onnx_export.TOLERANCE, False, -1.0)  # no difference can pass
    with pytest.raises(ModelError, match="differs from PyTorch"):
        export_onnx(checkpoint, tmp_path / "out" / "m.onnx", options=ExportOptions(verify_sizes=((5, 6),)))
    assert files_in(tmp_path / "out") == []
    # An explicit tolerance replaces the (here impossible) default and is what the result reports.
    result = export_onnx(checkpoint, tmp_path / "out" / "m.onnx",
                         options=ExportOptions(verify_sizes=((5, 6),), tolerance=0.5))
    assert result.tolerance == 0.5 and result.path.is_file()


# --- two outputs: a boundary head -----------------------------------------------------------


@pytest.mark.parametrize("upsampling", ["transposed", "resize_conv"])
def test_boundary_head_folds_like_the_k_way_head(upsampling):
    wnet = random_wnet(upsampling=upsampling, boundary_head=True)
    module = ExportableEncoder(wnet, fuse=True)
    images = torch.rand(2, 3, 12, 20) * 255
    with torch.no_grad():
        probs, boundaries = module(images)
        expected_probs, expected_boundaries = wnet.encode_with_boundaries_aligned(images)
    np.testing.assert_allclose(probs.numpy(), expected_probs.numpy(), atol=1e-6)
    np.testing.assert_allclose(boundaries.numpy(), expected_boundaries.numpy(), atol=1e-6)


@pytest.fixture(scope="module")
def two_outputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("boundaries")
    checkpoint = save_checkpoint(folder / "headed.pt", random_wnet(boundary_head=True), step=7)
    return checkpoint, export_onnx(checkpoint, folder / "headed.onnx")


def test_two_output_export_matches_pytorch_and_says_so(two_outputs):
    checkpoint, result = two_outputs
    assert result.info.outputs == (OUTPUT_NAME, BOUNDARIES_NAME)
    assert all(diff <= onnx_export.TOLERANCE[False] for diff in result.max_abs_diff.values())
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probs", "boundaries"]
    props = dict(session.get_modelmeta().custom_metadata_map)
    assert props["wnet.outputs"] == "probs,boundaries"
    assert ModelInfo.from_metadata(props) == result.info
    assert "boundaries (N,1,H,W)" in onnx.load(str(result.path)).doc_string
    # Both outputs against PyTorch, at an odd size padded the way the runtime pads.
    wnet = load_checkpoint(checkpoint)
    images = np.random.default_rng(1).uniform(0, 255, (2, 3, 9, 13)).astype(np.float32)
    probs, boundaries = session.run(None, {INPUT_NAME: pad_reflect(images, wnet.config.pad_multiple)})
    with torch.no_grad():
        expected_probs, expected_boundaries = wnet.encode_with_boundaries(torch.from_numpy(images))
    np.testing.assert_allclose(probs[:, :, :9, :13], expected_probs.numpy(), atol=1e-4)
    np.testing.assert_allclose(boundaries[:, :, :9, :13], expected_boundaries.numpy(), atol=1e-4)
    assert boundaries.shape == (2, 1, 12, 16) and boundaries.min() >= 0 and boundaries.max() <= 1


def test_verification_covers_the_boundary_output(two_outputs, monkeypatch):
    checkpoint, result = two_outputs
    wnet = load_checkpoint(checkpoint)
    assert max_abs_difference(result.path, wnet, 6, 7) < 1e-4
    # A boundary head that differs from the exported one is caught, though the probabilities agree.
    with torch.no_grad():
        wnet.encoder.boundary_head.bias += 1.0
    assert max_abs_difference(result.path, wnet, 6, 7) > 1e-2


def test_one_output_files_keep_their_meaning():
    old = ModelInfo(k=4, pad_multiple=4).to_metadata()
    assert old["wnet.outputs"] == "probs"
    del old["wnet.outputs"]  # a file exported before the key existed
    assert ModelInfo.from_metadata(old).outputs == (OUTPUT_NAME,)
    with pytest.raises(ModelError, match="malformed"):
        ModelInfo.from_metadata({**old, "wnet.outputs": "boundaries"})
    with pytest.raises(ValueError, match="outputs must be probs"):
        ModelInfo(k=4, pad_multiple=4, outputs=("probs", "edges"))


# --- the command line -------------------------------------------------------------------


def test_cli_exports_and_prints_the_differences(checkpoint, tmp_path):
    out = tmp_path / "cli.onnx"
    result = runner.invoke(app, ["export", str(checkpoint), "--out", str(out), "--opset", "17"])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert "max |ort - torch|" in result.output and "torchscript / 17" in result.output
    assert "outputs" in result.output and "probs" in result.output


def _bad_checkpoint(kind: str, good: Path, folder: Path) -> Path:
    path = folder / f"{kind}.pt"
    if kind == "missing":
        return path
    if kind == "not_a_checkpoint":
        path.write_bytes(b"this is not a torch file\n")
        return path
    if kind == "hello":
        path.write_bytes(b"hello\n")
        return path
    if kind == "a_plain_state_dict":
        torch.save(random_wnet().state_dict(), path)
        return path
    payload = torch.load(good, weights_only=True)
    if kind == "newer_format":
        payload["format"] = 99
    elif kind == "missing_keys":
        del payload["model_config"], payload["step"]
    elif kind == "mismatched_weights":
        payload["model_config"] = {**payload["model_config"], "base_width": 8}
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(("kind", "message"), [
    ("missing", "checkpoint not found"),
    # torch.load's own reasons can be bare ("101" for a KeyError): the type goes in front.
    ("not_a_checkpoint", "is not a wnet checkpoint (torch.load could not read it: IndexError: "),
    ("hello", "is not a wnet checkpoint (torch.load could not read it: KeyError: 101)"),
    ("a_plain_state_dict", "is not a wnet checkpoint"),
    ("newer_format", "checkpoint format 99"),
    ("missing_keys", "missing checkpoint keys: model_config, step"),
    ("mismatched_weights", "do not match its model config"),
])
def test_cli_bad_checkpoints(checkpoint, tmp_path, kind, message):
    source = _bad_checkpoint(kind, checkpoint, tmp_path)
    before = files_in(tmp_path)
    result = runner.invoke(app, ["export", str(source)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert files_in(tmp_path) == before  # nothing half-written


@pytest.mark.parametrize("where", ["under_a_file", "a_directory", "the_checkpoint"])
def test_cli_unwritable_output(checkpoint, tmp_path, where):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "folder").mkdir()
    out = {"under_a_file": tmp_path / "file.txt" / "m.onnx", "a_directory": tmp_path / "folder",
           "the_checkpoint": checkpoint}[where]
    before = files_in(tmp_path)
    result = runner.invoke(app, ["export", str(checkpoint), "--out", str(out)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert files_in(tmp_path) == before and files_in(tmp_path / "folder") == []
