"""benchmarks/bench_helpers.py: its library equivalents give the helpers' outputs where the
benchmark says they do (so that its timings compare like with like)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_helpers  # noqa: E402

from wnetcli.segmentation import grids  # noqa: E402
from wnetcli.segmentation.cues import colour  # noqa: E402


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_block_reduce_of_the_edge_padded_image_is_block_mean(factor):
    image = np.random.default_rng(factor).random((3, 17, 23), dtype=np.float32)
    np.testing.assert_allclose(
        bench_helpers.library_block_mean(image, factor), grids.block_mean(image, factor), atol=1e-6
    )


@pytest.mark.parametrize("factor", [2, 4])
def test_zoom_on_the_pixel_centre_grid_is_upsample_linear(factor):
    shape = (21, 30)
    small = np.random.default_rng(factor).random((2, -(-shape[0] // factor), -(-shape[1] // factor)), np.float32)
    np.testing.assert_allclose(
        bench_helpers.library_upsample_linear(small, shape, factor),
        grids.upsample_linear(small, shape, factor),
        atol=1e-6,
    )


def test_the_helpers_are_swapped_back():
    original = colour.rgb_to_lab
    with bench_helpers.swapped("rgb_to_lab"):
        assert colour.rgb_to_lab is bench_helpers.library_rgb_to_lab
    assert colour.rgb_to_lab is original
