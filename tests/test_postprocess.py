"""wnetcli.segmentation.postprocess: the contract the segmentation pipeline codes against."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage.measure import label

from wnetcli.errors import InputError
from wnetcli.images import read_rgb
from wnetcli.segmentation.levels import LevelScale
from wnetcli.segmentation.postprocess import (
    DEFAULT_LEVEL,
    PostprocessOptions,
    PostprocessResult,
    postprocess,
)
from wnetcli.ucm import ucm2_to_labels

COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]], dtype=np.uint8)


def four_squares(height: int = 40, width: int = 56, k: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four flat coloured quadrants: (rgb, labels 0..3, soft maps favouring the right label)."""
    labels = np.zeros((height, width), dtype=np.int64)
    labels[:, width // 2 :] += 1
    labels[height // 2 :, :] += 2
    probs = np.full((k, height, width), 0.1 / (k - 1), dtype=np.float32)
    np.put_along_axis(probs, labels[None], 0.9, axis=0)
    return COLOURS[labels], labels, probs


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


@pytest.mark.parametrize("crf", [True, False])
def test_four_squares_give_four_regions_at_the_default_level(crf):
    rgb, labels, probs = four_squares()
    result = postprocess(rgb, probs, PostprocessOptions(crf=crf))
    assert isinstance(result, PostprocessResult)
    assert result.labels.dtype == np.int32 and result.labels.shape == labels.shape
    assert same_partition(result.labels, labels)
    assert result.ucm2.shape == (81, 113) and result.ucm2.dtype == np.float32
    assert result.ucm2.min() >= 0 and result.ucm2.max() <= 1
    assert result.threshold == DEFAULT_LEVEL
    assert result.probs.shape == probs.shape and result.probs.dtype == np.float32
    np.testing.assert_allclose(result.probs.sum(axis=0), 1, atol=1e-5)
    assert set(result.timings) == {"crf", "boundaries", "hierarchy"}
    assert (result.timings["crf"] > 0) == crf


@pytest.mark.parametrize("regions", [1, 2, 4])
def test_regions_picks_a_cut_with_that_many_regions(regions):
    rgb, labels, probs = four_squares()
    result = postprocess(rgb, probs, PostprocessOptions(regions=regions))
    assert result.labels.max() == regions
    assert same_partition(result.labels, ucm2_to_labels(result.ucm2, result.threshold))


def test_level_cuts_the_ucm_at_that_threshold():
    rgb, _, probs = four_squares()
    fine = postprocess(rgb, probs, PostprocessOptions(level=0.0))
    coarse = postprocess(rgb, probs, PostprocessOptions(level=1.0))
    assert coarse.labels.max() == 1
    assert fine.labels.max() >= 4
    np.testing.assert_array_equal(fine.ucm2, coarse.ucm2)


def test_one_label_is_one_four_connected_region():
    # Two separate squares of the same colour and class on a background.
    rgb = np.zeros((60, 60, 3), dtype=np.uint8)
    rgb[10:20, 10:20] = rgb[35:48, 35:48] = 220
    probs = np.zeros((2, 60, 60), dtype=np.float32)
    probs[0] = 0.95
    probs[0][rgb[..., 0] > 0] = 0.05
    probs[1] = 1 - probs[0]
    result = postprocess(rgb, probs, PostprocessOptions(level=0.3))
    assert result.labels.max() == 3
    assert label(result.labels, connectivity=1, background=0).max() == result.labels.max()
    assert result.labels.min() == 1


def test_without_the_wnet_cue_is_the_colour_only_hierarchy():
    rgb, _, probs = four_squares()
    rng = np.random.default_rng(0)
    noisy = rng.random(probs.shape).astype(np.float32)
    noisy /= noisy.sum(axis=0)
    colour_only = postprocess(rgb, None)
    assert colour_only.probs.shape == (0, *rgb.shape[:2])
    assert colour_only.timings["crf"] == 0
    # The network enters through its boundary cue and its share of the region likeness, both
    # off by default: then its probabilities change nothing.
    off = postprocess(rgb, noisy)
    np.testing.assert_array_equal(off.ucm2, colour_only.ucm2)
    for cue in ({"likeness_colour_share": 0.7}, {"wnet_weight": 0.5}):
        on = postprocess(rgb, noisy, PostprocessOptions(crf=False, **cue))
        assert not np.array_equal(on.ucm2, colour_only.ucm2), cue


@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("crf", [True, False])
def test_a_coarser_hierarchy_grid_gives_full_size_outputs(factor, crf):
    rgb, labels, probs = four_squares(41, 57)
    options = PostprocessOptions(crf=crf, hierarchy_downsample=factor, likeness_colour_share=0.8)
    result = postprocess(rgb, probs, options)
    assert result.labels.shape == labels.shape and result.ucm2.shape == (83, 115)
    assert result.probs.shape == probs.shape
    # The quadrant borders fall inside factor x factor blocks: they may move by up to factor - 1
    # pixels, no more.
    assert result.labels.max() == 4
    found_at_centres = result.labels[[10, 10, 30, 30], [14, 42, 14, 42]]  # quadrants 0..3
    assert np.mean(result.labels != found_at_centres[labels]) < factor * (41 + 57) / (41 * 57)
    grid = options.superpixel_options()
    assert grid.window == round(11 / factor) and grid.sigma == pytest.approx(1 / factor)
    assert options.boundary_options().colour_sigmas == tuple(s / factor for s in (1.0, 2.0, 4.0))


@pytest.mark.parametrize(("height", "width"), [(17, 23), (1, 12), (9, 1), (33, 5)])
def test_odd_sizes(height, width):
    rng = np.random.default_rng(height * width)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    probs = rng.random((3, height, width)).astype(np.float32)
    probs /= probs.sum(axis=0)
    for factor in (1, 2):
        options = PostprocessOptions(regions=3, hierarchy_downsample=factor, texton_downsample=3 - factor)
        result = postprocess(rgb, probs, options)
        assert result.ucm2.shape == (2 * height + 1, 2 * width + 1)
        assert result.labels.shape == (height, width) and result.labels.min() == 1
        assert result.labels.max() <= 3


def test_bad_inputs_and_options_raise_input_errors():
    rgb, _, probs = four_squares(8, 8)
    with pytest.raises(InputError, match="either regions or level"):
        PostprocessOptions(regions=3, level=0.5)
    with pytest.raises(InputError, match="level"):
        PostprocessOptions(level=1.5)
    with pytest.raises(InputError, match="regions"):
        PostprocessOptions(regions=0)
    with pytest.raises(InputError, match="downsample"):
        PostprocessOptions(crf_downsample=0)
    with pytest.raises(InputError, match="uint8"):
        postprocess(rgb.astype(np.float32), probs)
    with pytest.raises(InputError, match="probs"):
        postprocess(rgb, probs[:, :4])
    with pytest.raises(InputError, match="not all 0"):
        PostprocessOptions(colour_weight=0, histogram_weight=0)
    with pytest.raises(InputError, match="no boundary cue"):  # the W-Net cue alone, but no W-Net
        postprocess(rgb, None, PostprocessOptions(colour_weight=0, histogram_weight=0, wnet_weight=1))
    with pytest.raises(InputError, match="likeness_colour_share"):
        PostprocessOptions(likeness_colour_share=1.5)
    with pytest.raises(InputError, match="hierarchy_downsample"):
        PostprocessOptions(hierarchy_downsample=0)
    with pytest.raises(InputError, match="texton_downsample"):
        PostprocessOptions(texton_downsample=9)
    with pytest.raises(InputError, match="texton_scales"):
        PostprocessOptions(texton_scales=())
    # The nested classes' checks speak of this class's fields, not of their own.
    with pytest.raises(InputError, match="^crf_iterations must be >= 0"):
        PostprocessOptions(crf_iterations=-1)
    with pytest.raises(InputError, match="^likeness_weight must be in"):
        PostprocessOptions(likeness_weight=1.5)
    with pytest.raises(InputError, match="^superpixel_window must be at least 1"):
        PostprocessOptions(superpixel_window=0)
    with pytest.raises(InputError, match="the image is empty"):
        postprocess(np.zeros((0, 0, 3), np.uint8), None)


@pytest.mark.parametrize("kind", ["nan", "inf", "tripled", "shifted", "zeros"])
def test_soft_maps_that_are_no_softmax_are_refused(kind):
    """One NaN pixel used to spread through the CRF to most of the image, and unnormalised maps
    changed the merge costs without a sign."""
    rgb, _, probs = four_squares(8, 8)
    bad = {
        "nan": probs.copy(), "inf": probs.copy(), "tripled": probs * 3, "shifted": probs - 0.5,
        "zeros": np.zeros_like(probs),
    }[kind]
    if kind in ("nan", "inf"):
        bad[0, 3, 3] = np.nan if kind == "nan" else np.inf
    with pytest.raises(InputError, match="finite, non-negative and sum to 1"):
        postprocess(rgb, bad, PostprocessOptions(wnet_weight=0.5))
    postprocess(rgb, probs, PostprocessOptions(wnet_weight=0.5))  # the softmax itself passes


def test_postprocess_does_not_import_torch():
    code = (
        "import sys, numpy as np\n"
        "from wnetcli.segmentation.postprocess import postprocess\n"
        "postprocess(np.zeros((8, 8, 3), np.uint8), np.full((2, 8, 8), 0.5, np.float32))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


BSDS_VAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bsds500" / "images" / "val"


@pytest.mark.needs_data
def test_a_bsds_image_gives_a_nested_hierarchy():
    images = sorted(BSDS_VAL.glob("*.jpg"))
    if not images:
        pytest.skip(f"BSDS500 val images not found under {BSDS_VAL}")
    rgb = read_rgb(images[0])
    result = postprocess(rgb, None, PostprocessOptions(regions=20))
    assert result.ucm2.shape == (2 * rgb.shape[0] + 1, 2 * rgb.shape[1] + 1)
    assert 10 <= result.labels.max() <= 20
    right = result.ucm2[1:-1:2, 2:-1:2]
    previous = None
    for t in (0.1, 0.2, 0.35, 0.5, 0.7):
        labels = ucm2_to_labels(result.ucm2, t)
        np.testing.assert_array_equal(labels[:, 1:] != labels[:, :-1], right > t)
        if previous is not None:
            pairs = np.unique(np.stack([previous.ravel(), labels.ravel()]), axis=1)
            assert len(np.unique(pairs[0])) == pairs.shape[1]
        previous = labels


def test_texture_likeness_splits_two_textures_of_the_same_colours():
    rows, cols = np.mgrid[0:64, 0:64]
    stripes = np.where(cols < 32, (cols // 2) % 2, (rows // 2) % 2)
    rgb = np.repeat(np.where(stripes == 1, 180, 70).astype(np.uint8)[..., None], 3, axis=2)
    result = postprocess(rgb, None, PostprocessOptions(regions=2, likeness_texture_share=0.5))
    assert result.labels.max() == 2
    left, right = result.labels[:, 2:28], result.labels[:, 36:62]
    assert len(np.unique(left)) == 1 and len(np.unique(right)) == 1 and left[0, 0] != right[0, 0]


def test_keep_probs_off_skips_the_crf_only_when_no_cue_reads_it():
    rgb, _, probs = four_squares()
    kept = postprocess(rgb, probs)
    dropped = postprocess(rgb, probs, PostprocessOptions(keep_probs=False))
    assert kept.probs.shape == probs.shape and kept.timings["crf"] > 0
    assert dropped.probs.shape == (0, *rgb.shape[:2]) and dropped.timings["crf"] == 0
    np.testing.assert_array_equal(dropped.ucm2, kept.ucm2)  # the default cues never read the soft maps
    with_wnet = postprocess(rgb, probs, PostprocessOptions(keep_probs=False, likeness_colour_share=0.7))
    assert with_wnet.timings["crf"] > 0 and with_wnet.probs.shape[0] == 0


def test_wnet_merge_only_keeps_the_image_cues_superpixel_borders():
    rgb, _, probs = four_squares()
    rng = np.random.default_rng(1)
    noisy = rng.random(probs.shape).astype(np.float32)
    noisy /= noisy.sum(axis=0)
    finest = dict(crf=False, level=0.0, wnet_weight=0.5)
    colour_only = postprocess(rgb, None, PostprocessOptions(level=0.0))
    # The noisy soft maps' edges move the superpixel borders when the watershed floods them...
    flooded = postprocess(rgb, noisy, PostprocessOptions(**finest))
    assert not np.array_equal(flooded.ucm2 > 0, colour_only.ucm2 > 0)
    # ...and with wnet_merge_only they change only the levels at which the borders go.
    merge_only = postprocess(rgb, noisy, PostprocessOptions(wnet_merge_only=True, **finest))
    np.testing.assert_array_equal(merge_only.ucm2 > 0, colour_only.ucm2 > 0)
    assert not np.allclose(merge_only.ucm2, colour_only.ucm2)


def test_the_level_scale_moves_levels_not_partitions():
    rgb, _, _ = four_squares()
    plain = postprocess(rgb, None, PostprocessOptions(level_scale=LevelScale(calibration=0.0)))
    calibrated = postprocess(rgb, None, PostprocessOptions())
    assert plain.ucm2.max() == pytest.approx(1.0) and calibrated.ucm2.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(plain.ucm2 > 0, calibrated.ucm2 > 0)
    # --regions counts regions, so the scale cannot change what it returns.
    regions = [postprocess(rgb, None, PostprocessOptions(level_scale=scale, regions=2))
               for scale in (LevelScale(calibration=0.0), LevelScale())]
    assert same_partition(regions[0].labels, regions[1].labels)


def test_regions_gives_exactly_that_many_on_tied_borders_and_says_when_it_cannot():
    # Nine equal tiles: the borders between them all merge at one level.
    tiles = np.kron(np.arange(9).reshape(3, 3) % 2, np.ones((12, 12), dtype=np.int64))
    rgb = np.where(tiles[..., None] == 1, 200, 40).astype(np.uint8).repeat(3, axis=2)
    finest = postprocess(rgb, None, PostprocessOptions(level=0.0)).labels.max()
    for regions in range(1, int(finest) + 1):
        result = postprocess(rgb, None, PostprocessOptions(regions=regions))
        assert result.labels.max() == regions and result.note == ""
    more = postprocess(rgb, None, PostprocessOptions(regions=int(finest) + 3))
    assert more.labels.max() == finest
    assert more.note == f"{int(finest) + 3} regions asked for; the hierarchy has {int(finest)} at most"
