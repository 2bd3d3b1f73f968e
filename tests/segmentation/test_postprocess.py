"""wnetcli.segmentation.postprocess: a recipe's stages on one image, the contract the pipeline codes against."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from bsds_data import BSDS
from skimage.measure import label

from wnetcli.errors import InputError
from wnetcli.images import read_rgb
from wnetcli.segmentation.cues import ArgmaxSplit, NetworkEdges, NetworkLikeness, NetworkMaps, Textons
from wnetcli.segmentation.levels import DEFAULT_LEVEL, Cut, LevelScale
from wnetcli.segmentation.postprocess import PostprocessResult, postprocess
from wnetcli.segmentation.recipe import RECIPES, Grid, Use
from wnetcli.ucm import ucm2_to_labels

COLOURS = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]], dtype=np.uint8)
DEFAULT = RECIPES["default"]


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


def with_cues(*extra: Use, recipe=DEFAULT, **changes):
    """``recipe`` with ``extra`` cues added (and stage ``changes``)."""
    return replace(recipe, cues=(*recipe.cues, *extra), **changes)


def noisy_maps(shape: tuple[int, ...], seed: int) -> np.ndarray:
    noisy = np.random.default_rng(seed).random(shape).astype(np.float32)
    return noisy / noisy.sum(axis=0)


@pytest.mark.parametrize("smoothed", [True, False])
def test_four_squares_give_four_regions_at_the_default_level(smoothed):
    rgb, labels, probs = four_squares()
    recipe = with_cues(Use(NetworkEdges(smoothed=smoothed), boundary=0.5))
    result = postprocess(rgb, NetworkMaps(soft_maps=probs), recipe)
    assert isinstance(result, PostprocessResult)
    assert result.labels.dtype == np.int32 and result.labels.shape == labels.shape
    assert same_partition(result.labels, labels)
    assert result.ucm2.shape == (81, 113) and result.ucm2.dtype == np.float32
    assert result.ucm2.min() >= 0 and result.ucm2.max() <= 1
    assert result.threshold == DEFAULT_LEVEL
    assert set(result.timings) == {"crf", "boundaries", "hierarchy"}
    assert (result.timings["crf"] > 0) == smoothed  # the CRF runs iff a cue reads smoothed maps


@pytest.mark.parametrize("regions", [1, 2, 4])
def test_regions_picks_a_cut_with_that_many_regions(regions):
    rgb, _, _ = four_squares()
    result = postprocess(rgb, cut=Cut(regions=regions))
    assert result.labels.max() == regions
    assert same_partition(result.labels, ucm2_to_labels(result.ucm2, result.threshold))


def test_level_cuts_the_ucm_at_that_threshold():
    rgb, _, _ = four_squares()
    fine = postprocess(rgb, cut=Cut(level=0.0))
    coarse = postprocess(rgb, cut=Cut(level=1.0))
    assert coarse.labels.max() == 1
    assert fine.labels.max() >= 4
    np.testing.assert_array_equal(fine.ucm2, coarse.ucm2)


def test_one_label_is_one_four_connected_region():
    # Two separate squares of the same colour on a background.
    rgb = np.zeros((60, 60, 3), dtype=np.uint8)
    rgb[10:20, 10:20] = rgb[35:48, 35:48] = 220
    result = postprocess(rgb, cut=Cut(regions=3))
    assert result.labels.max() == 3
    assert label(result.labels, connectivity=1, background=0).max() == result.labels.max()
    assert result.labels.min() == 1


def test_the_network_enters_only_through_its_cues():
    rgb, _, probs = four_squares()
    noisy = noisy_maps(probs.shape, seed=0)
    image_only = postprocess(rgb)
    assert image_only.timings["crf"] == 0
    # Maps given to a recipe that reads none of them change nothing.
    np.testing.assert_array_equal(postprocess(rgb, NetworkMaps(soft_maps=noisy)).ucm2, image_only.ucm2)
    for use in (Use(NetworkLikeness(smoothed=False), likeness=0.3), Use(NetworkEdges(smoothed=False), boundary=0.5)):
        on = postprocess(rgb, NetworkMaps(soft_maps=noisy), with_cues(use))
        assert not np.array_equal(on.ucm2, image_only.ucm2), use


@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("smoothed", [True, False])
def test_a_coarser_hierarchy_grid_gives_full_size_outputs(factor, smoothed):
    rgb, labels, probs = four_squares(41, 57)
    recipe = with_cues(Use(NetworkLikeness(smoothed=smoothed), likeness=0.2), grid=Grid(downsample=factor))
    result = postprocess(rgb, NetworkMaps(soft_maps=probs), recipe)
    assert result.labels.shape == labels.shape and result.ucm2.shape == (83, 115)
    # The quadrant borders fall inside factor x factor blocks: they may move by up to factor - 1
    # pixels, no more.
    assert result.labels.max() == 4
    found_at_centres = result.labels[[10, 10, 30, 30], [14, 42, 14, 42]]  # quadrants 0..3
    assert np.mean(result.labels != found_at_centres[labels]) < factor * (41 + 57) / (41 * 57)
    on_grid = recipe.superpixels.on_grid(factor)
    assert on_grid.window == round(11 / factor) and on_grid.sigma == pytest.approx(1 / factor)


@pytest.mark.parametrize(("height", "width"), [(17, 23), (1, 12), (9, 1), (33, 5)])
def test_odd_sizes(height, width):
    rng = np.random.default_rng(height * width)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    probs = noisy_maps((3, height, width), seed=height)
    for factor in (1, 2):
        cues = tuple(replace(use, cue=replace(use.cue, downsample=3 - factor)) if isinstance(use.cue, Textons)
                     else use for use in DEFAULT.cues)
        recipe = replace(DEFAULT, cues=(*cues, Use(ArgmaxSplit(), split=True)), grid=Grid(downsample=factor))
        result = postprocess(rgb, NetworkMaps(soft_maps=probs), recipe, Cut(regions=3))
        assert result.ucm2.shape == (2 * height + 1, 2 * width + 1)
        assert result.labels.shape == (height, width) and result.labels.min() == 1
        assert result.labels.max() <= 3


def test_bad_inputs_raise_input_errors():
    rgb, _, probs = four_squares(8, 8)
    network = with_cues(Use(NetworkEdges(), boundary=0.5))
    with pytest.raises(InputError, match="either regions or level"):
        Cut(regions=3, level=0.5)
    with pytest.raises(InputError, match="Cut.level"):
        Cut(level=1.5)
    with pytest.raises(InputError, match="Cut.regions"):
        Cut(regions=0)
    with pytest.raises(InputError, match="uint8"):
        postprocess(rgb.astype(np.float32))
    with pytest.raises(InputError, match="soft_maps must be"):
        postprocess(rgb, NetworkMaps(soft_maps=probs[:, :4]), network)
    with pytest.raises(InputError, match="reads the network's soft maps"):
        postprocess(rgb, None, network)
    with pytest.raises(InputError, match="the image is empty"):
        postprocess(np.zeros((0, 0, 3), np.uint8))


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
    network = with_cues(Use(NetworkEdges(), boundary=0.5))
    with pytest.raises(InputError, match="finite, non-negative and sum to 1"):
        postprocess(rgb, NetworkMaps(soft_maps=bad), network)
    postprocess(rgb, NetworkMaps(soft_maps=probs), network)  # the softmax itself passes


def test_postprocess_does_not_import_torch():
    code = (
        "import sys, numpy as np\n"
        "from wnetcli.segmentation.postprocess import postprocess\n"
        "postprocess(np.zeros((8, 8, 3), np.uint8))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.needs_data
def test_a_bsds_image_gives_a_nested_hierarchy():
    images = sorted((BSDS / "images" / "val").glob("*.jpg"))
    if not images:
        pytest.skip(f"BSDS500 val images not found under {BSDS}")
    rgb = read_rgb(images[0])
    result = postprocess(rgb, cut=Cut(regions=20))
    assert result.ucm2.shape == (2 * rgb.shape[0] + 1, 2 * rgb.shape[1] + 1)
    assert result.labels.max() == 20
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
    result = postprocess(rgb, cut=Cut(regions=2))
    assert result.labels.max() == 2
    left, right = result.labels[:, 2:28], result.labels[:, 36:62]
    assert len(np.unique(left)) == 1 and len(np.unique(right)) == 1 and left[0, 0] != right[0, 0]


def test_a_cue_kept_out_of_the_watershed_moves_levels_not_superpixel_borders():
    rgb, _, probs = four_squares()
    noisy = NetworkMaps(soft_maps=noisy_maps(probs.shape, seed=1))
    finest = Cut(level=0.0)
    image_only = postprocess(rgb, cut=finest)
    # The noisy soft maps' edges move the superpixel borders when the watershed floods them...
    flooded = postprocess(rgb, noisy, with_cues(Use(NetworkEdges(smoothed=False), boundary=0.5)), finest)
    assert not np.array_equal(flooded.ucm2 > 0, image_only.ucm2 > 0)
    # ...and kept out of it (flood = false) they change only the levels at which the borders go.
    merge_only = with_cues(Use(NetworkEdges(smoothed=False), boundary=0.5, flood=False))
    merged = postprocess(rgb, noisy, merge_only, finest)
    np.testing.assert_array_equal(merged.ucm2 > 0, image_only.ucm2 > 0)
    assert not np.allclose(merged.ucm2, image_only.ucm2)


def test_network_boundaries_are_a_boundary_cue():
    rgb, labels, _ = four_squares()
    # A boundary map that marks only the vertical line: with it alone the halves come first.
    boundaries = np.zeros(labels.shape, dtype=np.float32)
    boundaries[:, 27:29] = 1.0
    from wnetcli.segmentation.cues import NetworkBoundaries

    recipe = replace(DEFAULT, cues=(Use(NetworkBoundaries(), boundary=1.0),))
    result = postprocess(rgb, NetworkMaps(boundaries=boundaries), recipe, Cut(regions=2))
    assert same_partition(result.labels, labels % 2)
    with pytest.raises(InputError, match="boundary map"):
        postprocess(rgb, None, recipe)


def test_the_level_scale_moves_levels_not_partitions():
    rgb, _, _ = four_squares()
    plain = postprocess(rgb, recipe=replace(DEFAULT, levels=LevelScale(calibration=0.0)))
    calibrated = postprocess(rgb)
    assert plain.ucm2.max() == pytest.approx(1.0) and calibrated.ucm2.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(plain.ucm2 > 0, calibrated.ucm2 > 0)
    # --regions counts regions, so the scale cannot change what it returns.
    regions = [postprocess(rgb, recipe=replace(DEFAULT, levels=scale), cut=Cut(regions=2))
               for scale in (LevelScale(calibration=0.0), LevelScale())]
    assert same_partition(regions[0].labels, regions[1].labels)


def test_regions_gives_exactly_that_many_on_tied_borders_and_says_when_it_cannot():
    # Nine equal tiles: the borders between them all merge at one level.
    tiles = np.kron(np.arange(9).reshape(3, 3) % 2, np.ones((12, 12), dtype=np.int64))
    rgb = np.where(tiles[..., None] == 1, 200, 40).astype(np.uint8).repeat(3, axis=2)
    finest = postprocess(rgb, cut=Cut(level=0.0)).labels.max()
    for regions in range(1, int(finest) + 1):
        result = postprocess(rgb, cut=Cut(regions=regions))
        assert result.labels.max() == regions and result.note == ""
    more = postprocess(rgb, cut=Cut(regions=int(finest) + 3))
    assert more.labels.max() == finest
    assert more.note == f"{int(finest) + 3} regions asked for; the hierarchy has {int(finest)} at most"
