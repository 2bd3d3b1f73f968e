"""onnxruntime session, device choice, padding, batching and the library API of wnetcli.segmentation."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_models import build_prototype_model, require_onnx, squares_image

from wnetcli.errors import DependencyError, InputError, ModelError
from wnetcli.model_info import ModelInfo
from wnetcli.segmentation import Segmenter, SegmentOptions
from wnetcli.segmentation.pipeline import network_size, upscale_labels, upscale_ucm2
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
    probs = model.run(batch)
    assert probs.shape == (2, 4, height, width) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_the_test_model_really_needs_the_padding(model_path):
    # Without the runtime's padding the graph returns the wrong size for odd sizes.
    model = OnnxModel(model_path, device="cpu")
    (raw,) = model.session.run(None, {"image": np.zeros((1, 3, 17, 5), np.float32)})
    assert raw.shape[2:] != (17, 5)


def test_model_classifies_prototype_colours(model_path):
    model = OnnxModel(model_path, device="cpu")
    probs = model.run(squares_image(32)[None])
    argmax = probs[0].argmax(axis=0)
    assert argmax[0, 0] == 0 and argmax[0, -1] == 1 and argmax[-1, 0] == 2 and argmax[-1, -1] == 3


def test_fp16_model(tmp_path):
    model = OnnxModel(build_prototype_model(tmp_path / "half.onnx", fp16=True), device="cpu")
    assert model.info.fp16
    probs = model.run(squares_image(20)[None])
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
    with pytest.raises(ModelError, match="K=7"):
        OnnxModel(path, device="cpu").run(squares_image(16)[None])


# --- Segmenter: the library API ---


def test_default_model_absent_says_how_to_get_one(tmp_path, monkeypatch):
    from wnetcli.segmentation import pipeline

    monkeypatch.setattr(pipeline, "DEFAULT_MODEL", tmp_path / "missing.onnx")
    with pytest.raises(ModelError, match="--model FILE.onnx") as info:
        Segmenter(None, SegmentOptions(device="cpu"))
    assert "wnet export" in str(info.value)


def test_the_shipped_default_model_loads_and_describes_itself():
    from wnetcli.segmentation.pipeline import DEFAULT_MODEL

    assert DEFAULT_MODEL.is_file(), f"the default model is missing from the package: {DEFAULT_MODEL}"
    assert DEFAULT_MODEL.stat().st_size <= 10 * 2**20  # the size limit for package data
    seg = Segmenter(None, SegmentOptions(device="cpu"))
    assert seg.info.k >= 2 and seg.info.pad_multiple == 16 and seg.info.step > 0
    assert "bsds500/images/train" in seg.info.training_data and "val" not in seg.info.training_data
    result = seg.segment(squares_image(48))
    assert result.labels.shape == (48, 48) and result.regions >= 1


@pytest.mark.parametrize("height,width", [(1, 1), (3, 7), (16, 16), (20, 31)])
def test_the_shipped_reflect_padded_model_runs_on_tiny_images(height, width):
    # Its reflect padding cannot mirror a 1-pixel map: inputs under 32 px used to fail at the
    # deepest level ("Pad reflect requires axis length >= 2"); the runtime now pads them to 32.
    seg = Segmenter(None, SegmentOptions(device="cpu", threads=1))
    assert seg.info.model_config["padding_mode"] == "reflect" and seg.info.min_padded_side == 32
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    probs = seg.predict([rgb])[0][0]
    assert probs.shape == (seg.info.k, height, width) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)
    assert seg.segment(rgb).labels.shape == (height, width)


def test_tta_averages_the_soft_maps_of_the_image_and_its_mirror(model_path):
    rgb = np.random.default_rng(1).integers(0, 256, (21, 37, 3), dtype=np.uint8)
    plain = Segmenter(model_path, SegmentOptions(device="cpu", threads=1))
    tta = Segmenter(model_path, SegmentOptions(device="cpu", threads=1, tta=True))
    direct = plain.predict([rgb])[0][0]
    mirror = plain.predict([np.ascontiguousarray(rgb[:, ::-1])])[0][0][:, :, ::-1]
    averaged = tta.predict([rgb])[0][0]
    assert not np.allclose(direct, mirror, atol=1e-3)  # the test image is not symmetric for the net
    np.testing.assert_allclose(averaged, (direct + mirror) / 2, atol=1e-6)
    # A mirrored input gives the mirrored soft maps: TTA makes the network mirror-equivariant.
    flipped = tta.predict([np.ascontiguousarray(rgb[:, ::-1])])[0][0]
    np.testing.assert_allclose(flipped[:, :, ::-1], averaged, atol=1e-6)


def test_segment_four_squares(model_path):
    seg = Segmenter(model_path, SegmentOptions(device="cpu"))
    result = seg.segment(squares_image(34))
    assert result.labels.shape == (34, 34) and result.labels.dtype == np.int32
    assert result.ucm2.shape == (69, 69) and result.ucm2.dtype == np.float32
    assert result.ucm2.min() >= 0.0 and result.ucm2.max() <= 1.0
    assert result.probs.shape == (4, 34, 34)
    assert result.regions == 4 and set(np.unique(result.labels)) == {1, 2, 3, 4}
    assert {"inference", "crf", "boundaries", "hierarchy"} <= set(result.timings)


def test_batched_equals_one_by_one_for_mixed_sizes(model_path):
    rng = np.random.default_rng(1)
    images = [squares_image(32), rng.integers(0, 256, (21, 13, 3), dtype=np.uint8), squares_image(32)[::-1]]
    one = Segmenter(model_path, SegmentOptions(device="cpu", batch_size=1))
    many = Segmenter(model_path, SegmentOptions(device="cpu", batch_size=3))
    probs_one, _ = one.predict(images)
    probs_many, seconds = many.predict(images)
    assert len(seconds) == 3 and all(s >= 0 for s in seconds)
    for a, b, rgb in zip(probs_one, probs_many, images, strict=True):
        assert a.shape == (4, *rgb.shape[:2])
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_max_size_segments_small_and_maps_back_to_the_input_size(model_path):
    seg = Segmenter(model_path, SegmentOptions(device="cpu", max_size=32))
    rgb = np.repeat(np.repeat(squares_image(16), 8, axis=0), 5, axis=1)  # 128 x 80
    (probs,), _ = seg.predict([rgb])
    assert probs.shape == (4, 32, 20)  # the network saw the reduced image
    result = seg.finish(rgb, probs)
    assert result.labels.shape == (128, 80) and result.ucm2.shape == (257, 161)
    assert result.probs.shape == (4, 128, 80)
    np.testing.assert_allclose(result.probs.sum(axis=0), 1.0, atol=1e-4)
    assert result.regions == 4 and result.labels[10, 10] != result.labels[-10, -10]
    _assert_ucm_matches_labels(result.ucm2, result.labels)


def test_model_trained_at_a_smaller_scale_runs_there_and_segments_at_full_size(tmp_path):
    info = ModelInfo(k=4, pad_multiple=16, training_data="synthetic", short_side=24)
    path = build_prototype_model(tmp_path / "scaled.onnx", info=info)
    seg = Segmenter(path, SegmentOptions(device="cpu"))
    assert seg.info.short_side == 24
    rgb = np.repeat(np.repeat(squares_image(16), 6, axis=0), 4, axis=1)  # 96 x 64
    (probs,), _ = seg.predict([rgb])
    assert probs.shape == (4, 36, 24)  # shorter side 64 -> 24, aspect kept
    result = seg.finish(rgb, probs)
    # The post-processing ran at full size: the hierarchy has the input's grid.
    assert result.labels.shape == (96, 64) and result.ucm2.shape == (193, 129)
    assert result.probs.shape == (4, 96, 64) and result.regions == 4
    small = squares_image(16)  # already below the training scale: run as it is
    assert seg.predict([small])[0][0].shape == (4, 16, 16)


def test_network_size_only_shrinks_to_the_training_scale():
    assert network_size(321, 481, None, 0) == (321, 481)
    assert network_size(321, 481, None, 160) == (160, 240)
    assert network_size(100, 50, None, 160) == (100, 50)
    assert network_size(4000, 3000, 2048, 448) == (597, 448)


def _assert_ucm_matches_labels(ucm2, labels):
    """Every edge between two labels carries a positive ucm value, every other edge 0."""
    horizontal = labels[:, :-1] != labels[:, 1:]
    vertical = labels[:-1, :] != labels[1:, :]
    np.testing.assert_array_equal(ucm2[1::2, 2:-1:2] > 0, horizontal)
    np.testing.assert_array_equal(ucm2[2:-1:2, 1::2] > 0, vertical)


@pytest.mark.parametrize(
    "small,full", [((3, 4), (3, 4)), ((3, 4), (7, 9)), ((5, 2), (16, 11)), ((1, 1), (4, 6))]
)
def test_upscaled_ucm2_thresholds_to_the_upscaled_regions(small, full):
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 4, small)
    # A small ucm2 whose edges carry a random level per label pair (ultrametric enough here).
    level = {(a, b): rng.uniform(0.1, 1.0) for a in range(1, 4) for b in range(1, 4) if a < b}
    ucm2 = np.zeros((2 * small[0] + 1, 2 * small[1] + 1), np.float32)
    for i in range(small[0]):
        for j in range(small[1]):
            if j + 1 < small[1] and labels[i, j] != labels[i, j + 1]:
                ucm2[2 * i + 1, 2 * j + 2] = level[tuple(sorted((labels[i, j], labels[i, j + 1])))]
            if i + 1 < small[0] and labels[i, j] != labels[i + 1, j]:
                ucm2[2 * i + 2, 2 * j + 1] = level[tuple(sorted((labels[i, j], labels[i + 1, j])))]
    big_labels = upscale_labels(labels, full)
    big_ucm2 = upscale_ucm2(ucm2, full)
    assert big_labels.shape == full and big_ucm2.shape == (2 * full[0] + 1, 2 * full[1] + 1)
    _assert_ucm_matches_labels(big_ucm2, big_labels)
    assert set(np.unique(big_ucm2)) <= set(np.unique(ucm2))
    if small == full:
        np.testing.assert_array_equal(big_labels, labels)
        np.testing.assert_array_equal(big_ucm2[1::2, 2:-1:2], ucm2[1::2, 2:-1:2])


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8)]
)
def test_segment_rejects_non_rgb_uint8(model_path, bad):
    with pytest.raises(InputError, match="uint8"):
        Segmenter(model_path, SegmentOptions(device="cpu")).segment(bad)


def test_segment_options_validation():
    with pytest.raises(InputError, match="batch_size"):
        SegmentOptions(batch_size=0)
    with pytest.raises(InputError, match="max_size"):
        SegmentOptions(max_size=3)
    with pytest.raises(InputError, match="threads"):
        SegmentOptions(threads=-1)
    with pytest.raises(InputError, match="postprocess must be a PostprocessOptions, got dict"):
        SegmentOptions(postprocess={"crf": False})
    with pytest.raises(InputError, match="device must be one of auto, cpu, cuda"):
        SegmentOptions(device="gpu")


def test_finish_refuses_soft_maps_of_another_shape_and_takes_lists(model_path):
    segmenter = Segmenter(model_path, SegmentOptions(device="cpu"))
    rgb = squares_image(40)[:, :30]  # 40 x 30
    (probs,), _ = segmenter.predict([rgb])
    with pytest.raises(InputError, match="do not have the shape of the 40 x 30 image"):
        segmenter.finish(rgb, np.ascontiguousarray(probs.transpose(0, 2, 1)))  # turned by 90 degrees
    assert segmenter.finish(rgb, probs.tolist()).labels.shape == (40, 30)


@pytest.mark.gpu
def test_cuda_session_really_runs_on_the_gpu(model_path):
    from wnetcli.segmentation.runtime import cuda_driver_present

    if not cuda_driver_present():
        pytest.skip("no CUDA driver (libcuda.so.1) on this machine")
    model = OnnxModel(model_path, device="cuda")
    assert model.device == "cuda"
    probs = model.run(squares_image(32)[None].repeat(8, axis=0))
    assert probs.shape == (8, 4, 32, 32) and probs[0].argmax(axis=0)[0, 0] == 0
