"""onnxruntime session, device choice, padding, batching and the library API of wnetcli.segmentation."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_models import build_prototype_model, require_onnx, squares_image

from wnetcli.errors import DependencyError, InputError, ModelError
from wnetcli.model_info import ModelInfo
from wnetcli.segmentation.runtime import CPU, CUDA, OnnxModel, choose_providers, pad_batch


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return build_prototype_model(tmp_path_factory.mktemp("model") / "proto.onnx")


# --- the device decision, without a GPU ---


def _never_called():
    raise AssertionError("the CUDA probe must not run here")


def test_cpu_is_cpu_without_probing():
    choice = choose_providers("cpu", [CUDA, CPU], _never_called)
    assert choice.providers == (CPU,) and choice.device == "cpu" and not choice.note


def test_auto_without_cuda_build_is_quietly_cpu():
    choice = choose_providers("auto", [CPU], _never_called)
    assert choice.providers == (CPU,) and not choice.note


def test_auto_with_working_cuda_uses_it_first():
    choice = choose_providers("auto", [CUDA, CPU], lambda: True)
    assert choice.providers == (CUDA, CPU) and choice.device == "cuda"


def test_auto_with_cuda_build_but_no_gpu_falls_back_with_one_line():
    choice = choose_providers("auto", ["TensorrtExecutionProvider", CUDA, CPU], lambda: False)
    assert choice.providers == (CPU,) and choice.device == "cpu"
    assert choice.note and "\n" not in choice.note


@pytest.mark.parametrize("available", [[CPU], [CUDA, CPU]])
def test_cuda_requested_but_unusable_is_a_one_line_error(available):
    with pytest.raises(DependencyError, match="--device cuda") as info:
        choose_providers("cuda", available, lambda: False)
    assert "\n" not in str(info.value)


def test_unknown_device_is_an_input_error():
    with pytest.raises(InputError, match="device"):
        choose_providers("tpu", [CPU], _never_called)


# --- padding ---


@pytest.mark.parametrize("height,width", [(1, 1), (1, 7), (5, 3), (16, 16), (17, 33)])
def test_pad_batch_reaches_the_multiple_and_keeps_the_image(height, width):
    images = np.arange(2 * 3 * height * width, dtype=np.float32).reshape(2, 3, height, width)
    padded = pad_batch(images, 16)
    assert padded.shape[2] % 16 == 0 and padded.shape[3] % 16 == 0
    assert padded.shape[2] - height < 16 and padded.shape[3] - width < 16
    np.testing.assert_array_equal(padded[:, :, :height, :width], images)


@pytest.mark.parametrize("height,width", [(1, 1), (3, 7), (20, 40), (33, 5)])
def test_pad_batch_min_side_makes_every_side_at_least_that(height, width):
    images = np.arange(3 * height * width, dtype=np.float32).reshape(1, 3, height, width)
    padded = pad_batch(images, 16, min_side=32)
    assert padded.shape[2] == max(32, -(-height // 16) * 16) and padded.shape[3] == max(32, -(-width // 16) * 16)
    np.testing.assert_array_equal(padded[:, :, :height, :width], images)


def test_pad_batch_reflects_without_repeating_the_edge():
    row = np.array([1, 2, 3], dtype=np.float32).reshape(1, 1, 1, 3)
    padded = pad_batch(np.repeat(row, 2, axis=2), 4)
    np.testing.assert_array_equal(padded[0, 0, 0], [1, 2, 3, 2])


# --- the session ---


@pytest.mark.parametrize("height,width", [(16, 16), (1, 1), (17, 5), (31, 47)])
def test_model_output_matches_input_size_and_sums_to_one(model_path, height, width):
    model = OnnxModel(model_path, device="cpu", threads=1)
    assert model.info.k == 4 and model.info.pad_multiple == 16 and model.device == "cpu"
    batch = np.random.default_rng(0).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    probs = model.run(batch)["probs"]
    assert probs.shape == (2, 4, height, width) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_the_test_model_really_needs_the_padding(model_path):
    # Without the runtime's padding the graph returns the wrong size for odd sizes.
    model = OnnxModel(model_path, device="cpu")
    (raw,) = model.session.run(None, {"image": np.zeros((1, 3, 17, 5), np.float32)})
    assert raw.shape[2:] != (17, 5)


def test_model_classifies_prototype_colours(model_path):
    model = OnnxModel(model_path, device="cpu")
    probs = model.run(squares_image(32)[None])["probs"]
    argmax = probs[0].argmax(axis=0)
    assert argmax[0, 0] == 0 and argmax[0, -1] == 1 and argmax[-1, 0] == 2 and argmax[-1, -1] == 3


def test_fp16_model(tmp_path):
    model = OnnxModel(build_prototype_model(tmp_path / "half.onnx", fp16=True), device="cpu")
    assert model.info.fp16
    probs = model.run(squares_image(20)[None])["probs"]
    assert probs.dtype == np.float32 and probs.shape == (1, 4, 20, 20)
    assert probs[0].argmax(axis=0)[0, 0] == 0


def test_missing_and_invalid_models_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        OnnxModel(tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="junk.onnx"):
        OnnxModel(tmp_path / "junk.onnx", device="cpu")


def test_model_without_wnet_metadata_is_refused(tmp_path):
    onnx = require_onnx()
    path = build_prototype_model(tmp_path / "bare.onnx")
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="wnet export"):
        OnnxModel(path, device="cpu")


def test_metadata_k_disagreeing_with_the_graph_is_caught(tmp_path):
    path = build_prototype_model(tmp_path / "k.onnx", info=ModelInfo(k=7, pad_multiple=16))
    with pytest.raises(ModelError, match=r"output .probs. has shape \(1, 4, 16, 16\), expected 7 channel"):
        OnnxModel(path, device="cpu").run(squares_image(16)[None])


def test_a_model_has_the_outputs_it_declares_and_refuses_others(model_path):
    model = OnnxModel(model_path, device="cpu")
    assert model.outputs == ("probs",)
    with pytest.raises(ModelError, match="no output boundaries"):
        model.run(squares_image(16)[None], ("probs", "boundaries"))


@pytest.mark.gpu
def test_cuda_session_really_runs_on_the_gpu(model_path):
    from wnetcli.segmentation.runtime import cuda_driver_present

    if not cuda_driver_present():
        pytest.skip("no CUDA driver (libcuda.so.1) on this machine")
    model = OnnxModel(model_path, device="cuda")
    assert model.device == "cuda"
    probs = model.run(squares_image(32)[None].repeat(8, axis=0))["probs"]
    assert probs.shape == (8, 4, 32, 32) and probs[0].argmax(axis=0)[0, 0] == 0
