"""wnetcli.segmentation.pipeline: the Segmenter, which runs the network iff the recipe reads it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from onnx_models import build_prototype_model, squares_image

from wnetcli.errors import InputError, ModelError
from wnetcli.model_info import ModelInfo
from wnetcli.segmentation import RECIPES, Segmenter, SegmentOptions
from wnetcli.segmentation.cues import NetworkBoundaries, NetworkMaps
from wnetcli.segmentation.recipe import NetworkRun, Use

#: Runs the network for its soft maps alone: the recipe (the default) reads none of them.
SOFT = SegmentOptions(device="cpu", threads=1, soft_maps=True)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return build_prototype_model(tmp_path_factory.mktemp("model") / "proto.onnx")


def test_default_model_absent_says_how_to_get_one(tmp_path, monkeypatch):
    from wnetcli.segmentation import recipe

    monkeypatch.setattr(recipe, "MODELS_FOLDER", tmp_path)
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


def test_the_boundaries_recipe_runs_the_shipped_boundaries_model_and_reads_its_map():
    from wnetcli.segmentation.recipe import MODELS_FOLDER

    shipped = MODELS_FOLDER / "boundaries.onnx"
    assert shipped.stat().st_size <= 10 * 2**20
    seg = Segmenter(None, SegmentOptions(device="cpu", threads=1, recipe=RECIPES["boundaries"], boundary_map=True))
    assert seg.model_path == shipped and seg.runs_network
    assert seg.model.outputs == ("probs", "boundaries") and seg.info.model_config["boundary_head"] is True
    assert "bsds500" in seg.info.training_data.lower() and "val" not in seg.info.training_data
    rgb = squares_image(64)
    result = seg.segment(rgb)
    assert result.boundaries.shape == (64, 64) and 0 <= result.boundaries.min() <= result.boundaries.max() <= 1
    # The squares' borders (rows and columns 31/32) are where the learned map is strongest.
    on_border = np.r_[result.boundaries[30:34, 4:60].ravel(), result.boundaries[4:60, 30:34].ravel()].mean()
    inside = np.r_[result.boundaries[8:24, 8:24].ravel(), result.boundaries[40:56, 40:56].ravel()].mean()
    assert on_border > inside + 0.1, (on_border, inside)


def test_a_recipe_names_the_shipped_model_it_runs_and_a_given_model_takes_precedence(model_path):
    assert RECIPES["default"].network.model == RECIPES["network"].network.model == "default"
    assert Segmenter(None, SegmentOptions(device="cpu", recipe=RECIPES["network"])).model_path.name == "default.onnx"
    network_from_file = replace(RECIPES["network"], network=NetworkRun(model="default", mirror=True))
    assert Segmenter(model_path, SegmentOptions(device="cpu", recipe=network_from_file)).model_path == model_path
    with pytest.raises(InputError, match="network.model must be one of default, boundaries, got 'mine'"):
        NetworkRun(model="mine")


@pytest.mark.parametrize("height,width", [(1, 1), (3, 7), (16, 16), (20, 31)])
def test_the_shipped_reflect_padded_model_runs_on_tiny_images(height, width):
    # Its reflect padding cannot mirror a 1-pixel map: inputs under 32 px used to fail at the
    # deepest level ("Pad reflect requires axis length >= 2"); the runtime now pads them to 32.
    seg = Segmenter(None, SOFT)
    assert seg.info.model_config["padding_mode"] == "reflect" and seg.info.min_padded_side == 32
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    probs = seg.predict([rgb])[0][0].soft_maps
    assert probs.shape == (seg.info.k, height, width) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)
    assert seg.segment(rgb).labels.shape == (height, width)


def test_mirroring_averages_the_soft_maps_of_the_image_and_its_mirror(model_path):
    rgb = np.random.default_rng(1).integers(0, 256, (21, 37, 3), dtype=np.uint8)
    plain = Segmenter(model_path, SOFT)
    mirrored = replace(RECIPES["default"], network=NetworkRun(mirror=True))
    tta = Segmenter(model_path, replace(SOFT, recipe=mirrored))
    direct = plain.predict([rgb])[0][0].soft_maps
    mirror = plain.predict([np.ascontiguousarray(rgb[:, ::-1])])[0][0].soft_maps[:, :, ::-1]
    averaged = tta.predict([rgb])[0][0].soft_maps
    assert not np.allclose(direct, mirror, atol=1e-3)  # the test image is not symmetric for the net
    np.testing.assert_allclose(averaged, (direct + mirror) / 2, atol=1e-6)
    # A mirrored input gives the mirrored soft maps: TTA makes the network mirror-equivariant.
    flipped = tta.predict([np.ascontiguousarray(rgb[:, ::-1])])[0][0].soft_maps
    np.testing.assert_allclose(flipped[:, :, ::-1], averaged, atol=1e-6)


def test_segment_four_squares(model_path):
    seg = Segmenter(model_path, SOFT)
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
    one = Segmenter(model_path, replace(SOFT, batch_size=1))
    many = Segmenter(model_path, replace(SOFT, batch_size=3))
    probs_one = [maps.soft_maps for maps in one.predict(images)[0]]
    maps_many, seconds = many.predict(images)
    probs_many = [maps.soft_maps for maps in maps_many]
    assert len(seconds) == 3 and all(s >= 0 for s in seconds)
    for a, b, rgb in zip(probs_one, probs_many, images, strict=True):
        assert a.shape == (4, *rgb.shape[:2])
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_max_size_segments_small_and_maps_back_to_the_input_size(model_path):
    seg = Segmenter(model_path, replace(SOFT, max_size=32))
    rgb = np.repeat(np.repeat(squares_image(16), 8, axis=0), 5, axis=1)  # 128 x 80
    (maps,), _ = seg.predict([rgb])
    assert maps.soft_maps.shape == (4, 32, 20)  # the network saw the image on the 4x coarser grid
    result = seg.finish(rgb, maps)
    assert result.labels.shape == (128, 80) and result.ucm2.shape == (257, 161)
    assert result.probs.shape == (4, 128, 80)
    np.testing.assert_allclose(result.probs.sum(axis=0), 1.0, atol=1e-4)
    assert result.regions == 4 and result.labels[10, 10] != result.labels[-10, -10]
    _assert_ucm_matches_labels(result.ucm2, result.labels)


def test_model_trained_at_a_smaller_scale_runs_there_and_segments_at_full_size(tmp_path):
    info = ModelInfo(k=4, pad_multiple=16, training_data="synthetic", short_side=24)
    path = build_prototype_model(tmp_path / "scaled.onnx", info=info)
    seg = Segmenter(path, SOFT)
    assert seg.info.short_side == 24
    rgb = np.repeat(np.repeat(squares_image(16), 6, axis=0), 4, axis=1)  # 96 x 64
    (maps,), _ = seg.predict([rgb])
    assert maps.soft_maps.shape == (4, 36, 24)  # shorter side 64 -> 24, aspect kept
    result = seg.finish(rgb, maps)
    # The post-processing ran at full size: the hierarchy has the input's grid.
    assert result.labels.shape == (96, 64) and result.ucm2.shape == (193, 129)
    assert result.probs.shape == (4, 96, 64) and result.regions == 4
    small = squares_image(16)  # already below the training scale: run as it is
    assert seg.predict([small])[0][0].soft_maps.shape == (4, 16, 16)


def _assert_ucm_matches_labels(ucm2, labels):
    """Every edge between two labels carries a positive ucm value, every other edge 0."""
    horizontal = labels[:, :-1] != labels[:, 1:]
    vertical = labels[:-1, :] != labels[1:, :]
    np.testing.assert_array_equal(ucm2[1::2, 2:-1:2] > 0, horizontal)
    np.testing.assert_array_equal(ucm2[2:-1:2, 1::2] > 0, vertical)


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
    with pytest.raises(InputError, match="SegmentOptions.recipe must be Recipe, got"):
        SegmentOptions(recipe={"crf": False})
    with pytest.raises(InputError, match="SegmentOptions.device must be one of auto, cpu, cuda"):
        SegmentOptions(device="gpu")


def test_finish_refuses_soft_maps_of_another_shape_and_takes_lists(model_path):
    segmenter = Segmenter(model_path, SOFT)
    rgb = squares_image(40)[:, :30]  # 40 x 30
    (maps,), _ = segmenter.predict([rgb])
    turned = NetworkMaps(soft_maps=np.ascontiguousarray(maps.soft_maps.transpose(0, 2, 1)))  # by 90 degrees
    with pytest.raises(InputError, match="do not have the shape of the 40 x 30 image"):
        segmenter.finish(rgb, turned)
    assert segmenter.finish(rgb, NetworkMaps(soft_maps=maps.soft_maps.tolist())).labels.shape == (40, 30)
    with pytest.raises(InputError, match="pass its maps"):
        segmenter.finish(rgb, None)




def test_the_network_runs_iff_the_recipe_reads_it(model_path):
    image_only = Segmenter(model_path, SegmentOptions(device="cpu"))
    assert not image_only.runs_network
    maps, seconds = image_only.network_maps([squares_image(16)])
    assert maps == [None] and seconds == [0.0] and image_only._model is None  # not even loaded
    assert image_only.segment(squares_image(16)).probs is None
    network = Segmenter(model_path, SegmentOptions(device="cpu", recipe=RECIPES["network"]))
    assert network.runs_network and network.segment(squares_image(16)).probs is None
    assert Segmenter(model_path, SOFT).runs_network  # soft maps asked for as an output


def test_a_recipe_reading_boundaries_needs_a_model_that_outputs_them(model_path):
    reads_boundaries = replace(RECIPES["default"], cues=(Use(NetworkBoundaries(), boundary=1.0),))
    with pytest.raises(ModelError, match="reads the network's boundaries, which .* does not output"):
        Segmenter(model_path, SegmentOptions(device="cpu", recipe=reads_boundaries))
