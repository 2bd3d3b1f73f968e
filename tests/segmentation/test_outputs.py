"""Overlay boundary lines grow with the image, so that they stay visible on a large photo seen scaled down."""

from __future__ import annotations

import numpy as np
import pytest

from wnetcli.segmentation.outputs import overlay_boundaries


def _halves(height: int, width: int) -> np.ndarray:
    """(H, W) labels: 1 on the left half, 2 on the right; one vertical boundary."""
    labels = np.ones((height, width), np.int32)
    labels[:, width // 2 :] = 2
    return labels


def _red_columns(overlay: np.ndarray, row: int) -> np.ndarray:
    return np.flatnonzero((overlay[row] == (255, 0, 0)).all(axis=1))


def test_a_4000x3000_photo_gets_a_line_several_pixels_wide():
    height, width = 3000, 4000
    rgb = np.zeros((height, width, 3), np.uint8)
    overlay = overlay_boundaries(rgb, _halves(height, width))
    columns = _red_columns(overlay, height // 2)
    assert columns.size == 5  # max(H, W) / 800 pixels
    assert np.all(np.diff(columns) == 1)  # one solid line
    assert abs(columns.mean() - (width // 2 - 0.5)) <= 1  # centred on the boundary
    assert not overlay[:, : width // 2 - 4].any() and not overlay[:, width // 2 + 4 :].any()


def test_a_bsds_sized_image_keeps_its_1_pixel_lines():
    height, width = 321, 481
    rgb = np.full((height, width, 3), 40, np.uint8)
    overlay = overlay_boundaries(rgb, _halves(height, width))
    assert _red_columns(overlay, height // 2).tolist() == [width // 2 - 1]
    assert (overlay[:, width // 2 :] == 40).all()


@pytest.mark.parametrize(("shape", "expected"), [((1, 1), 1), ((481, 321), 1), ((1200, 900), 2), ((3000, 4000), 5)])
def test_line_width_follows_the_longer_side(shape, expected):
    from wnetcli.segmentation.outputs import boundary_line_width

    assert boundary_line_width(shape) == expected
