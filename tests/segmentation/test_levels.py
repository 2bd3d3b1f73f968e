"""wnetcli.segmentation.levels: the 0..1 level scale of a hierarchy and exact cuts by region count."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from wnetcli.errors import InputError
from wnetcli.segmentation.hierarchy import SuperpixelOptions, build_hierarchy
from wnetcli.segmentation.levels import (
    DEFAULT_LEVEL,
    LevelScale,
    border_strength,
    calibrate_levels,
    cut_into_regions,
)
from wnetcli.ucm import ucm2_to_labels


def smooth_noise(height: int, width: int, seed: int) -> np.ndarray:
    """A boundary map of smoothed noise in [0, 1]: a hierarchy with many superpixels."""
    strength = ndi.gaussian_filter(np.random.default_rng(seed).random((height, width)), 2)
    return (strength - strength.min()) / np.ptp(strength)


def grid_of_tiles(tiles: int = 4, size: int = 8, contrast: float = 0.5) -> np.ndarray:
    """A boundary map of ``tiles x tiles`` equal squares separated by lines of one strength:
    every merge between two tiles ties at one level."""
    strength = np.zeros((tiles * size, tiles * size), dtype=np.float32)
    for k in range(1, tiles):
        strength[k * size - 1 : k * size + 1, :] = contrast
        strength[:, k * size - 1 : k * size + 1] = contrast
    return strength


def test_calibrated_levels_keep_every_partition_and_the_ends():
    ucm2 = build_hierarchy(smooth_noise(30, 40, seed=0)).ucm2
    for divisor in (0.5, 1.0, 2.5):
        calibrated = calibrate_levels(ucm2, divisor)
        assert calibrated.min() >= 0 and calibrated.max() <= 1
        for t in (0.1, 0.3, 0.6):
            mapped = float(calibrate_levels(np.float32(t), divisor))
            # The cut of the calibrated map at the mapped level is the same partition.
            np.testing.assert_array_equal(ucm2_to_labels(calibrated, mapped), ucm2_to_labels(ucm2, t))
    np.testing.assert_array_equal(calibrate_levels(np.array([0.0, 1.0]), 3.0), [0.0, 1.0])
    np.testing.assert_allclose(calibrate_levels(ucm2, 1.0), ucm2, atol=1e-7)
    assert float(calibrate_levels(np.float32(0.01), 2.0)) == pytest.approx(0.005, rel=0.02)  # ~ u / divisor near 0
    values = np.linspace(0, 1, 101, dtype=np.float32)
    assert (np.diff(calibrate_levels(values, 1.7)) > 0).all()  # monotone
    with pytest.raises(ValueError, match="factor"):
        calibrate_levels(values, 0.0)


def test_border_strength_is_the_mean_level_of_the_border_pixels():
    ucm2 = np.zeros((9, 9), dtype=np.float32)  # a 4x4 image
    ucm2[1:-1, 4] = 0.6  # one vertical border between columns 1 and 2, rows 0..3
    ucm2[4, 5:-1] = 0.2  # a weaker one on the right half
    boundary = ucm2[2::2, 2::2]
    assert border_strength(ucm2) == pytest.approx(boundary[boundary > 0].mean())
    assert 0.2 < border_strength(ucm2) < 0.6
    assert border_strength(np.zeros((9, 9), dtype=np.float32)) == 0.0  # one region


@pytest.mark.parametrize("contrast", [0.05, 0.3, 0.9])
def test_the_scale_puts_the_top_at_one_and_changes_no_partition(contrast):
    hierarchy = build_hierarchy(contrast * smooth_noise(30, 40, seed=1))
    ucm2, levels = LevelScale().rescale(hierarchy.ucm2, hierarchy.levels)
    assert float(ucm2.max()) == pytest.approx(1.0) and float(levels.max()) == pytest.approx(1.0)
    assert ucm2.min() >= 0 and (np.diff(levels) >= 0).all()
    # The same partitions in the same order: each merge level maps to one scaled level.
    raw = np.unique(hierarchy.levels)
    scaled = [np.unique(levels[hierarchy.levels == value]) for value in raw]
    assert all(s.size == 1 for s in scaled) and (np.diff(np.concatenate(scaled)) > 0).all()
    for value, mapped in zip(raw[::7], np.concatenate(scaled)[::7], strict=True):
        np.testing.assert_array_equal(ucm2_to_labels(ucm2, float(mapped)), ucm2_to_labels(hierarchy.ucm2, float(value)))


@pytest.mark.parametrize("contrast", [0.02, 0.1, 0.3, 1.0])
def test_the_default_cut_never_leaves_one_region_where_there_are_borders(contrast):
    hierarchy = build_hierarchy(contrast * smooth_noise(30, 40, seed=2))
    ucm2, _ = LevelScale().rescale(hierarchy.ucm2, hierarchy.levels)
    assert ucm2_to_labels(ucm2, DEFAULT_LEVEL).max() > 1
    assert ucm2_to_labels(ucm2, 1.0).max() == 1


def test_on_a_strong_image_the_default_cut_is_the_calibrated_cut():
    scale = LevelScale()
    hierarchy = build_hierarchy(smooth_noise(30, 40, seed=3))
    factor = (border_strength(hierarchy.ucm2) / scale.reference) ** scale.calibration
    calibrated = calibrate_levels(hierarchy.ucm2, factor)
    assert calibrated.max() * scale.top_fraction > scale.cut  # strong enough for the fixed cut
    ucm2, _ = scale.rescale(hierarchy.ucm2, hierarchy.levels)
    np.testing.assert_array_equal(ucm2_to_labels(ucm2, DEFAULT_LEVEL), ucm2_to_labels(calibrated, scale.cut))


def test_on_a_weak_image_the_default_cut_is_a_fraction_of_its_top():
    scale = LevelScale(calibration=0.0)
    hierarchy = build_hierarchy(0.2 * smooth_noise(30, 40, seed=4))
    top = float(hierarchy.ucm2.max())
    assert top < scale.cut
    ucm2, _ = scale.rescale(hierarchy.ucm2, hierarchy.levels)
    np.testing.assert_array_equal(
        ucm2_to_labels(ucm2, DEFAULT_LEVEL), ucm2_to_labels(hierarchy.ucm2, scale.top_fraction * top)
    )


def test_a_hierarchy_of_one_region_is_left_as_it_is():
    ucm2 = np.zeros((9, 11), dtype=np.float32)
    out, levels = LevelScale().rescale(ucm2, np.zeros(0, dtype=np.float32))
    np.testing.assert_array_equal(out, ucm2)
    assert levels.size == 0


@pytest.mark.parametrize(
    ("field", "value"), [("calibration", -0.1), ("reference", 0.0), ("cut", 1.0), ("top_fraction", 1.0)]
)
def test_level_scale_refuses_values_out_of_range_naming_the_field(field, value):
    with pytest.raises(InputError, match=field):
        LevelScale(**{field: value})


def test_cut_into_regions_gives_exactly_n_regions_even_where_merge_levels_tie():
    hierarchy = build_hierarchy(grid_of_tiles(), SuperpixelOptions(window=3, sigma=0))
    n = hierarchy.n_superpixels
    assert n == 16
    assert np.unique(hierarchy.levels[hierarchy.levels > 0]).size < n - 1  # ties: a threshold cannot tell them apart
    previous = None
    for regions in range(n, 0, -1):
        labels = cut_into_regions(hierarchy.superpixels, hierarchy.merges, regions)
        assert labels.max() == regions and set(np.unique(labels)) == set(range(1, regions + 1))
        # Each region is 4-connected, and each cut is a coarsening of the one before.
        assert all(ndi.label(labels == r)[1] == 1 for r in range(1, regions + 1))
        if previous is not None:
            pairs = np.unique(np.stack([previous.ravel(), labels.ravel()]), axis=1)
            assert len(np.unique(pairs[0])) == pairs.shape[1]
        previous = labels
    # More regions than the hierarchy has: its finest partition.
    assert cut_into_regions(hierarchy.superpixels, hierarchy.merges, n + 5).max() == n
    with pytest.raises(InputError, match="regions"):
        cut_into_regions(hierarchy.superpixels, hierarchy.merges, 0)


def test_cut_into_regions_agrees_with_the_ucm_where_levels_do_not_tie():
    hierarchy = build_hierarchy(smooth_noise(40, 50, seed=5), SuperpixelOptions(window=3, sigma=0))
    levels = hierarchy.levels
    for regions in (1, 2, 5, 17):
        made = hierarchy.n_superpixels - regions
        if made > 0 and made < levels.size and levels[made - 1] == levels[made]:
            continue  # a tie: only the replay can give this count
        threshold = float(levels[made - 1]) if made > 0 else 0.0
        labels = cut_into_regions(hierarchy.superpixels, hierarchy.merges, regions)
        by_threshold = ucm2_to_labels(hierarchy.ucm2, threshold)
        pairs = np.unique(np.stack([labels.ravel(), by_threshold.ravel()]), axis=1)
        assert len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))
