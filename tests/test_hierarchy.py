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
    upsample_labels,
    upsample_ucm2,
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


def _region_graph(labels: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        cross = a != b
        pairs |= {(min(x, y), max(x, y)) for x, y in zip(a[cross].tolist(), b[cross].tolist(), strict=True)}
    return pairs


@pytest.mark.parametrize(
    ("coarse", "full"), [((5, 7), (10, 14)), ((5, 7), (9, 13)), ((3, 4), (11, 9)), ((1, 1), (3, 2))]
)
def test_upsampled_labels_keep_the_region_graph(coarse, full):
    rng = np.random.default_rng(sum(full))
    labels = label(rng.integers(0, 3, coarse), connectivity=1, background=-1)
    big = upsample_labels(labels, full)
    assert big.shape == full
    assert set(np.unique(big)) == set(np.unique(labels))  # no row or column skipped
    assert _region_graph(big) == _region_graph(labels)
    for region in np.unique(big):  # still 4-connected
        assert label(big == region, connectivity=1).max() == 1
    if full == (10, 14):  # an exact factor: blocks
        np.testing.assert_array_equal(big, np.repeat(np.repeat(labels, 2, 0), 2, 1))
    with pytest.raises(ValueError, match="smaller"):
        upsample_labels(labels, (coarse[0] - 1 or 0, full[1]))


@pytest.mark.parametrize("shape", [(31, 47), (32, 48), (16, 24), (40, 25)])
def test_an_upsampled_ucm2_cuts_into_the_upsampled_regions(shape):
    coarse = build_hierarchy(noise_strength(16, 24, seed=3), SuperpixelOptions(window=3, sigma=0))
    big = upsample_ucm2(coarse.ucm2, shape)
    assert big.shape == (2 * shape[0] + 1, 2 * shape[1] + 1) and big.dtype == np.float32
    assert set(np.unique(big)) <= set(np.unique(coarse.ucm2))
    for threshold in [0.0, *np.unique(coarse.levels)[::3]]:
        small = ucm2_to_labels(coarse.ucm2, threshold)
        assert same_partition(ucm2_to_labels(big, threshold), upsample_labels(small, shape))
    with pytest.raises(ValueError, match="smaller"):
        upsample_ucm2(coarse.ucm2, (15, 24))


def test_sparse_descriptor_parts_sum_like_their_dense_arrays():
    from wnetcli.segmentation.boundaries import one_hot, soft_bin_positions, soft_bins
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
    hierarchy = build_hierarchy(strength, split_by=halves)
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
    hierarchy = build_hierarchy(strength, SuperpixelOptions(window=3), flood=flood)
    # The borders come from the flooded map, not from the four squares' lines...
    np.testing.assert_array_equal(
        hierarchy.superpixels, watershed_superpixels(flood, SuperpixelOptions(window=3))
    )
    assert not same_partition(hierarchy.superpixels, build_hierarchy(strength, SuperpixelOptions(window=3)).superpixels)
    # ...and the levels from the strength map: the same flood with a flat strength merges at 0.
    flat = build_hierarchy(np.zeros_like(strength), SuperpixelOptions(window=3), flood=flood)
    assert flat.levels.max() == 0 and hierarchy.levels.max() > 0
    with pytest.raises(ValueError, match="flood"):
        build_hierarchy(strength, flood=flood[:-1])
