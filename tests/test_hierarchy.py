"""wnetcli.segmentation.hierarchy: superpixels, greedy merging and the ucm2 they make."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import label

from wnetcli.segmentation.hierarchy import (
    SuperpixelOptions,
    build_hierarchy,
    edges_to_ucm2,
    merge_regions,
    threshold_for_regions,
    watershed_superpixels,
)
from wnetcli.ucm import ucm2_to_labels


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label maps describe the same regions (labels may differ)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def four_square_strength(size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A boundary map of four quadrants (strong vertical, weaker horizontal line) and the quadrants."""
    quadrants = np.ones((size, size), dtype=np.int32)
    quadrants[:, size // 2 :] += 1
    quadrants[size // 2 :, :] += 2
    strength = np.zeros((size, size), dtype=np.float32)
    strength[:, size // 2 - 1 : size // 2 + 1] = 0.9
    strength[size // 2 - 1 : size // 2 + 1, :] = np.maximum(strength[size // 2 - 1 : size // 2 + 1, :], 0.5)
    return strength, quadrants


def noise_strength(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = ndi.gaussian_filter(rng.random((height, width)), 1.0) ** 2
    return (smooth / smooth.max()).astype(np.float32)


def test_four_flat_squares_give_four_regions_then_two_then_one():
    strength, quadrants = four_square_strength()
    hierarchy = build_hierarchy(strength)
    np.testing.assert_array_equal(hierarchy.superpixels, quadrants)
    assert same_partition(ucm2_to_labels(hierarchy.ucm2, 0.3), quadrants)
    halves = ucm2_to_labels(hierarchy.ucm2, 0.7)  # the weaker horizontal line is gone
    assert halves.max() == 2 and same_partition(halves, (quadrants - 1) % 2)
    assert ucm2_to_labels(hierarchy.ucm2, 0.95).max() == 1
    # The horizontal borders average 0.5 with a little of the 0.9 line where they cross it.
    assert hierarchy.levels[0] == hierarchy.levels[1] and 0.5 <= hierarchy.levels[0] < 0.6
    assert hierarchy.levels[2] == np.float32(0.9)


@pytest.mark.parametrize(("height", "width"), [(31, 47), (1, 9), (9, 1), (1, 1), (2, 3)])
def test_ucm2_is_ultrametric_and_its_cuts_are_nested(height, width):
    strength = noise_strength(height, width)
    hierarchy = build_hierarchy(strength, SuperpixelOptions(window=3, sigma=0))
    ucm2 = hierarchy.ucm2
    assert ucm2.shape == (2 * height + 1, 2 * width + 1) and ucm2.dtype == np.float32
    assert ucm2.min() >= 0 and ucm2.max() <= 1
    np.testing.assert_array_equal(ucm2[1::2, 1::2], 0)
    assert np.all(np.diff(hierarchy.levels) >= 0)
    right, down = ucm2[1:-1:2, 2:-1:2], ucm2[2:-1:2, 1:-1:2]
    previous = None
    for t in [-1.0, *np.unique(hierarchy.levels).tolist()]:
        labels = hierarchy.superpixels if t < 0 else ucm2_to_labels(ucm2, t)
        # Closed contours: a border separates two regions of the cut exactly when its value is above t.
        if t >= 0:
            np.testing.assert_array_equal(labels[:, 1:] != labels[:, :-1], right > t)
            np.testing.assert_array_equal(labels[1:] != labels[:-1], down > t)
        # Region count: superpixels minus the merges at or below t.
        assert labels.max() == hierarchy.n_superpixels - np.count_nonzero(hierarchy.levels <= t)
        if previous is not None:
            # Nested: every region of the finer cut lies inside one region of the coarser.
            pairs = np.unique(np.stack([previous.ravel(), labels.ravel()]), axis=1)
            assert len(np.unique(pairs[0])) == pairs.shape[1]
        previous = labels
    assert previous.max() == 1


def test_threshold_for_regions_gives_that_many_regions():
    hierarchy = build_hierarchy(noise_strength(40, 50, seed=3), SuperpixelOptions(window=3, sigma=0))
    n = hierarchy.n_superpixels
    assert n > 20
    for regions in (1, 2, 5, 17, n - 1):
        t = threshold_for_regions(hierarchy.levels, regions)
        got = ucm2_to_labels(hierarchy.ucm2, t).max()
        ties = np.count_nonzero(hierarchy.levels == np.float32(t)) - 1
        assert regions - ties <= got <= regions
    assert threshold_for_regions(hierarchy.levels, n) == 0.0
    with pytest.raises(ValueError, match="regions"):
        threshold_for_regions(hierarchy.levels, 0)


def brute_force_merging(lo, hi, sums, counts, areas, size_scale, descriptors=None, weight=0.0):
    """Greedy merging recomputed from scratch at every step: the reference for merge_regions."""
    group = list(range(len(areas)))
    levels, level = [], 0.0
    while len(set(group)) > 1:
        size = {g: sum(a for a, h in zip(areas, group, strict=True) if h == g) for g in set(group)}
        mean = {}
        if weight:
            for g in set(group):
                members = [r for r, h in enumerate(group) if h == g]
                mean[g] = descriptors[members].sum(axis=0) / size[g]
        borders: dict[tuple[int, int], list[float]] = {}
        for a, b, s, c in zip(lo, hi, sums, counts, strict=True):
            ga, gb = sorted((group[a], group[b]))
            if ga != gb:
                acc = borders.setdefault((ga, gb), [0.0, 0])
                acc[0] += s
                acc[1] += c

        def cost(item, size=size, mean=mean):
            (ga, gb), (s, c) = item
            factor = 1 - np.exp(-min(size[ga], size[gb]) / size_scale) if size_scale else 1.0
            value = s / c
            if weight:
                value = (1 - weight) * value + weight * 0.5 * np.abs(mean[ga] - mean[gb]).sum()
            return value * factor

        best = min(borders.items(), key=cost)
        level = max(level, cost(best))
        levels.append(level)
        ga, gb = best[0]
        group = [ga if g == gb else g for g in group]
    return np.array(levels, dtype=np.float32)


@pytest.mark.parametrize(("size_scale", "weight"), [(0.0, 0.0), (4.0, 0.0), (0.0, 0.6), (4.0, 0.3)])
def test_merge_regions_matches_a_brute_force_greedy_merge(size_scale, weight):
    rng = np.random.default_rng(5)
    superpixels = label(rng.integers(0, 3, (12, 12)), connectivity=1, background=-1)
    n = int(superpixels.max())
    areas = np.bincount(superpixels.ravel())[1:]
    # A graph of 4-adjacent regions with random border strengths (distinct, so no ties).
    pairs = set()
    for a, b in ((superpixels[:, 1:], superpixels[:, :-1]), (superpixels[1:], superpixels[:-1])):
        cross = a != b
        pairs |= {(min(x, y) - 1, max(x, y) - 1) for x, y in zip(a[cross], b[cross], strict=True)}
    lo, hi = (np.array(v) for v in zip(*sorted(pairs), strict=True))
    counts = rng.integers(1, 6, lo.size)
    sums = rng.random(lo.size) * counts
    # Region descriptor sums: a random probability vector per pixel, summed over the region.
    descriptors = rng.dirichlet(np.ones(3), size=n) * areas[:, None]
    edge_levels, levels = merge_regions(lo, hi, sums, counts, areas, size_scale, descriptors, weight)
    assert levels.size == n - 1
    expected = brute_force_merging(lo, hi, sums, counts, areas, size_scale, descriptors, weight)
    np.testing.assert_allclose(levels, expected, rtol=1e-6)
    assert edge_levels.min() >= levels.min() and edge_levels.max() == levels.max()


def test_size_prior_keeps_the_hierarchy_ultrametric():
    hierarchy = build_hierarchy(
        noise_strength(30, 40, seed=2), SuperpixelOptions(window=3, sigma=0, size_prior=0.05)
    )
    ucm2 = hierarchy.ucm2
    for t in np.unique(hierarchy.levels)[::3]:
        labels = ucm2_to_labels(ucm2, float(t))
        np.testing.assert_array_equal(labels[:, 1:] != labels[:, :-1], ucm2[1:-1:2, 2:-1:2] > t)
        assert labels.max() == hierarchy.n_superpixels - np.count_nonzero(hierarchy.levels <= t)


def test_superpixels_are_four_connected_and_cover_the_image():
    strength = noise_strength(30, 30, seed=7)
    superpixels = watershed_superpixels(strength)
    assert superpixels.min() == 1
    assert label(superpixels, connectivity=1, background=0).max() == superpixels.max()
    fewer = watershed_superpixels(strength, SuperpixelOptions(window=7, sigma=1.0))
    assert fewer.max() <= watershed_superpixels(strength, SuperpixelOptions(window=3, sigma=0)).max()


def test_edges_to_ucm2_puts_borders_and_junctions_on_the_doubled_grid():
    right = np.array([[0.2], [0.0]], dtype=np.float32)  # 2 x 2 image
    down = np.array([[0.0, 0.7]], dtype=np.float32)
    ucm2 = edges_to_ucm2(right, down)
    assert ucm2.shape == (5, 5)
    assert ucm2[1, 2] == np.float32(0.2) and ucm2[3, 2] == 0 and ucm2[2, 3] == np.float32(0.7)
    assert ucm2[2, 2] == np.float32(0.7)  # the junction takes the max of its four borders
    np.testing.assert_array_equal(ucm2[1::2, 1::2], 0)
