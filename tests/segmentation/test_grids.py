"""wnetcli.segmentation.grids: block grids and their one index convention, bilinear maps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import label

from wnetcli.segmentation.grids import (
    block_mean,
    block_mean_rgb,
    enlarge_labels,
    enlarge_ucm2,
    network_size,
    resize_maps,
    shrink_factor,
    upsample_linear,
)
from wnetcli.segmentation.hierarchy import SuperpixelOptions, build_hierarchy
from wnetcli.ucm import ucm2_to_labels


def noise_strength(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = ndi.gaussian_filter(rng.random((height, width)), 1.0) ** 2
    return (smooth / smooth.max()).astype(np.float32)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def _region_graph(labels: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        cross = a != b
        pairs |= {(min(x, y), max(x, y)) for x, y in zip(a[cross].tolist(), b[cross].tolist(), strict=True)}
    return pairs


@pytest.mark.parametrize(
    ("coarse", "full"), [((5, 7), (10, 14)), ((5, 7), (9, 13)), ((3, 4), (11, 9)), ((1, 1), (3, 2))]
)
def test_enlarged_labels_keep_the_region_graph(coarse, full):
    rng = np.random.default_rng(sum(full))
    labels = label(rng.integers(0, 3, coarse), connectivity=1, background=-1)
    big = enlarge_labels(labels, full)
    assert big.shape == full
    assert set(np.unique(big)) == set(np.unique(labels))  # no row or column skipped
    assert _region_graph(big) == _region_graph(labels)
    for region in np.unique(big):  # still 4-connected
        assert label(big == region, connectivity=1).max() == 1
    if full == (10, 14):  # an exact factor: blocks
        np.testing.assert_array_equal(big, np.repeat(np.repeat(labels, 2, 0), 2, 1))
    with pytest.raises(ValueError, match="smaller"):
        enlarge_labels(labels, (coarse[0] - 1 or 0, full[1]))


@pytest.mark.parametrize("shape", [(31, 47), (32, 48), (16, 24), (40, 25)])
def test_an_enlarged_ucm2_cuts_into_the_enlarged_regions(shape):
    coarse = build_hierarchy(noise_strength(16, 24, seed=3), SuperpixelOptions(window=3, sigma=0))
    big = enlarge_ucm2(coarse.ucm2, shape)
    assert big.shape == (2 * shape[0] + 1, 2 * shape[1] + 1) and big.dtype == np.float32
    assert set(np.unique(big)) <= set(np.unique(coarse.ucm2))
    for threshold in [0.0, *np.unique(coarse.levels)[::3]]:
        small = ucm2_to_labels(coarse.ucm2, threshold)
        assert same_partition(ucm2_to_labels(big, threshold), enlarge_labels(small, shape))
    with pytest.raises(ValueError, match="smaller"):
        enlarge_ucm2(coarse.ucm2, (15, 24))




def test_block_mean_and_linear_upsampling_keep_constants_and_sizes():
    image = np.random.default_rng(2).random((2, 8, 12)).astype(np.float32)
    np.testing.assert_allclose(block_mean(image, 4)[:, 0, 0], image[:, :4, :4].mean(axis=(1, 2)), rtol=1e-5)
    constant = np.full((3, 4, 3), 0.25, dtype=np.float32)
    up = upsample_linear(constant, (13, 10), 4)
    assert up.shape == (3, 13, 10)
    np.testing.assert_allclose(up, 0.25)
    assert block_mean(np.zeros((1, 13, 10)), 4).shape == (1, 4, 3)
    rgb = np.full((7, 9, 3), 200, dtype=np.uint8)
    assert block_mean_rgb(rgb, 2).shape == (4, 5, 3) and (block_mean_rgb(rgb, 2) == 200).all()
    assert block_mean_rgb(rgb, 1) is rgb


@pytest.mark.parametrize(
    ("shape", "max_size", "factor"),
    [((321, 481), 2048, 1), ((3000, 4000), 2048, 2), ((2049, 100), 2048, 2), ((5000, 6144), 2048, 3),
     ((100, 100), None, 1)],
)
def test_shrink_factor_is_the_smallest_integer_grid_that_fits(shape, max_size, factor):
    assert shrink_factor(*shape, max_size) == factor
    if max_size is not None:
        assert max(-(-side // factor) for side in shape) <= max_size


def test_network_size_shrinks_to_the_training_scale_only():
    assert network_size(321, 481, 320) == (320, 480)
    assert network_size(200, 300, 320) == (200, 300)
    assert network_size(321, 481, 0) == (321, 481)


def test_resized_soft_maps_still_sum_to_one():
    rng = np.random.default_rng(0)
    maps = rng.random((4, 9, 13)).astype(np.float32)
    maps /= maps.sum(axis=0)
    big = resize_maps(maps, (20, 31))
    assert big.shape == (4, 20, 31) and big.dtype == np.float32
    np.testing.assert_allclose(big.sum(axis=0), 1.0, atol=1e-5)
    assert resize_maps(maps, (9, 13)) is maps
