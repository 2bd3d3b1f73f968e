"""wnetcli.ucm: cutting a ucm2 into segmentations, and boundary maps of segmentations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wnetcli.ucm import (
    check_ucm2,
    edges_to_ucm2,
    labels_to_ucm2,
    nested_levels,
    seg_to_boundary,
    ucm2_to_boundary,
    ucm2_to_labels,
)

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bsds500-bench"


def four_squares(size: int = 8) -> np.ndarray:
    """Labels 1..4 in the four quadrants of a size x size image."""
    labels = np.ones((size, size), dtype=np.int32)
    labels[:, size // 2 :] += 1
    labels[size // 2 :, :] += 2
    return labels


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label maps describe the same regions (labels may differ)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def test_labels_to_ucm2_round_trip_through_the_levels():
    fine = four_squares()
    coarse = np.where(fine <= 2, 1, 2)  # top half and bottom half
    ucm2 = labels_to_ucm2([fine, coarse])
    assert ucm2.shape == (17, 17)
    assert same_partition(ucm2_to_labels(ucm2, 0.0), fine)
    assert same_partition(ucm2_to_labels(ucm2, 0.49), fine)
    assert same_partition(ucm2_to_labels(ucm2, 0.5), coarse)
    assert ucm2_to_labels(ucm2, 1.0).max() == 1  # above every edge: one region
    assert ucm2_to_labels(ucm2, 0.0).max() == 4  # labels are consecutive from 1
    assert ucm2_to_labels(ucm2, 0.0).min() == 1


def test_ucm2_to_labels_joins_pixels_through_diagonal_gaps():
    # A closed diagonal line of strength 1 on the doubled grid still leaks through its corners
    # under 8-connectivity, as MATLAB's bwlabel does in the official benchmark.
    ucm2 = np.zeros((7, 7))
    for k in range(7):
        ucm2[k, 6 - k] = 1.0
    assert ucm2_to_labels(ucm2, 0.5).max() == 1


@pytest.mark.needs_data
def test_gpb_ucm2_levels_get_coarser():
    pytest.importorskip("scipy.io")
    from scipy.io import loadmat

    path = BENCH / "ucm2" / "2018.mat"
    if not path.is_file():
        pytest.skip(f"BSDS bench data not found at {BENCH}")
    ucm2 = loadmat(path)["ucm2"]
    counts = [int(ucm2_to_labels(ucm2, t).max()) for t in (0.05, 0.2, 0.5, 0.9)]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] > counts[-1] >= 1
    assert ucm2_to_labels(ucm2, 0.2).shape == (ucm2.shape[0] // 2, ucm2.shape[1] // 2)


def test_ucm2_to_boundary_takes_the_even_even_points():
    ucm2 = np.arange(7 * 9, dtype=float).reshape(7, 9)
    bdry = ucm2_to_boundary(ucm2)
    assert bdry.shape == (3, 4)
    np.testing.assert_array_equal(bdry, ucm2[2::2, 2::2])


@pytest.mark.parametrize("shape", [(4, 4), (6, 5, 2), (0, 3)])
def test_check_ucm2_rejects_shapes_off_the_doubled_grid(shape):
    with pytest.raises(ValueError, match="2H\\+1"):
        check_ucm2(np.zeros(shape))


def test_seg_to_boundary_marks_the_pixel_left_of_a_vertical_edge():
    labels = np.array([[1, 2, 2, 2]] * 4)
    expected = np.zeros((4, 4), dtype=bool)
    expected[:, 0] = True
    np.testing.assert_array_equal(seg_to_boundary(labels), expected)


def test_seg_to_boundary_corner_rule_and_copied_last_row_and_column():
    labels = np.array([[1, 1, 2], [1, 1, 2], [3, 3, 3]])
    # Pixel (i, j) is the junction of the 2x2 block below-right of it: marked when any of the
    # block's four edges separates labels. The last row and column repeat the ones before.
    expected = np.array([[0, 1, 1], [1, 1, 1], [1, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(seg_to_boundary(labels), expected)


def test_seg_to_boundary_of_one_region_is_empty():
    assert not seg_to_boundary(np.ones((5, 7), dtype=int)).any()


def test_labels_to_ucm2_checks_its_levels():
    with pytest.raises(ValueError, match="at least one"):
        labels_to_ucm2([])
    with pytest.raises(ValueError, match="increasing"):
        labels_to_ucm2([four_squares(), four_squares()], heights=[0.5, 0.2])
    with pytest.raises(ValueError, match="shape"):
        labels_to_ucm2([four_squares(8), four_squares(6)])


@pytest.mark.parametrize("seed", range(6))
def test_nested_levels_give_the_cuts_of_ucm2_to_labels(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(2, 14, 2)
    # Not an ultrametric: arbitrary edge and junction values, so that 8-connections through
    # junctions and frame cells matter.
    ucm2 = rng.random((2 * height + 1, 2 * width + 1)) ** 2
    ucm2[1::2, 1::2] = 0
    thresholds = np.linspace(0.01, 0.99, 25)
    base, groups = nested_levels(ucm2, thresholds)
    current = None
    for t, group in zip(thresholds, groups, strict=True):
        current = group if group is not None else current
        assert same_partition(current[base], ucm2_to_labels(ucm2, t))
    assert groups[0] is not None and base.min() == 0


def test_nested_levels_refuse_a_ucm2_with_raised_pixels():
    ucm2 = np.zeros((5, 5))
    ucm2[1, 1] = 0.5
    assert nested_levels(ucm2, [0.1, 0.6]) is None


def test_edges_to_ucm2_puts_borders_and_junctions_on_the_doubled_grid():
    right = np.array([[0.2], [0.0]], dtype=np.float32)  # 2 x 2 image
    down = np.array([[0.0, 0.7]], dtype=np.float32)
    ucm2 = edges_to_ucm2(right, down)
    assert ucm2.shape == (5, 5)
    assert ucm2[1, 2] == np.float32(0.2) and ucm2[3, 2] == 0 and ucm2[2, 3] == np.float32(0.7)
    assert ucm2[2, 2] == np.float32(0.7)  # the junction takes the max of its four borders
    np.testing.assert_array_equal(ucm2[1::2, 1::2], 0)
