"""wnetcli.segmentation.hierarchy: superpixels, greedy merging and the ucm2 they make."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import label

from wnetcli.segmentation.hierarchy import (
    MergeOptions,
    SuperpixelOptions,
    build_hierarchy,
    merge_regions,
    watershed_superpixels,
)
from wnetcli.ucm import ucm2_to_labels

#: Merging by mean border strength alone (no likeness term, no size prior), as these tests
#: reason about border levels.
BY_BORDERS = MergeOptions(likeness=0.0, size_prior=0.0)


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
    hierarchy = build_hierarchy(strength, SuperpixelOptions(window=7), BY_BORDERS)
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
    hierarchy = build_hierarchy(strength, SuperpixelOptions(window=3, sigma=0), BY_BORDERS)
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
    edge_levels, levels, merges = merge_regions(lo, hi, sums, counts, areas, size_scale, descriptors, weight)
    assert levels.size == n - 1 and merges.shape == (n - 1, 2)
    expected = brute_force_merging(lo, hi, sums, counts, areas, size_scale, descriptors, weight)
    np.testing.assert_allclose(levels, expected, rtol=1e-6)
    assert edge_levels.min() >= levels.min() and edge_levels.max() == levels.max()


def test_size_prior_keeps_the_hierarchy_ultrametric():
    hierarchy = build_hierarchy(
        noise_strength(30, 40, seed=2), SuperpixelOptions(window=3, sigma=0), MergeOptions(size_prior=0.05)
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


def test_sparse_descriptor_parts_sum_like_their_dense_arrays():
    from wnetcli.segmentation.cues.histograms import soft_bin_positions, soft_bins
    from wnetcli.segmentation.cues.textons import one_hot
    from wnetcli.segmentation.hierarchy import PixelDescriptors

    rng = np.random.default_rng(5)
    superpixels = label(rng.integers(0, 4, (9, 11)), connectivity=1, background=-1).astype(np.int32)
    values = rng.uniform(-10, 110, (9, 11)).astype(np.float32)
    textons = rng.integers(0, 5, (9, 11))
    probs = rng.random((3, 9, 11)).astype(np.float32)
    sparse = PixelDescriptors([
        ("dense", 0.2, probs),
        ("soft_bins", 0.5, (*soft_bin_positions(values, 6, 0.0, 100.0), 6)),
        ("labels", 0.3, (textons, 5)),
    ])
    dense = np.concatenate([0.2 * probs, 0.5 * soft_bins(values, 6, 0.0, 100.0), 0.3 * one_hot(textons, 5)])
    expected = PixelDescriptors([("dense", 1.0, dense)]).region_sums(superpixels)
    assert expected.shape == (superpixels.max(), 14)
    np.testing.assert_allclose(sparse.region_sums(superpixels), expected, rtol=1e-5, atol=1e-5)
    by_loop = np.stack([dense[:, superpixels == r].sum(axis=1) for r in range(1, superpixels.max() + 1)])
    np.testing.assert_allclose(expected, by_loop, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="kind"):
        PixelDescriptors([("sparse", 1.0, probs)])


def test_split_by_adds_the_borders_of_a_second_partition():
    strength, quadrants = four_square_strength()
    halves = np.zeros_like(quadrants)
    halves[:, 6:] = 1  # a cut through the left quadrants, where the boundary map is flat
    hierarchy = build_hierarchy(strength, SuperpixelOptions(window=7), BY_BORDERS, split_by=halves)
    assert hierarchy.n_superpixels == 6
    assert same_partition(hierarchy.superpixels, label(quadrants * 2 + halves, connectivity=1))
    # The added borders lie on flat strength (but for the one pixel where each meets the
    # horizontal line): they are the first to go.
    assert hierarchy.levels[1] < 0.05
    assert same_partition(ucm2_to_labels(hierarchy.ucm2, 0.3), quadrants)


def test_flood_gives_the_superpixels_and_strength_the_merge_levels():
    strength, quadrants = four_square_strength()
    rng = np.random.default_rng(3)
    flood = ndi.gaussian_filter(rng.random(strength.shape), 1.5).astype(np.float32)
    hierarchy = build_hierarchy(strength, SuperpixelOptions(window=3), BY_BORDERS, flood=flood)
    # The borders come from the flooded map, not from the four squares' lines...
    np.testing.assert_array_equal(
        hierarchy.superpixels, watershed_superpixels(flood, SuperpixelOptions(window=3))
    )
    by_itself = build_hierarchy(strength, SuperpixelOptions(window=3), BY_BORDERS)
    assert not same_partition(hierarchy.superpixels, by_itself.superpixels)
    # ...and the levels from the strength map: the same flood with a flat strength merges at 0.
    flat = build_hierarchy(np.zeros_like(strength), SuperpixelOptions(window=3), BY_BORDERS, flood=flood)
    assert flat.levels.max() == 0 and hierarchy.levels.max() > 0
    with pytest.raises(ValueError, match="flood"):
        build_hierarchy(strength, flood=flood[:-1])
