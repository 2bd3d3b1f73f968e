"""The default cut on everyday photos outside BSDS500: scikit-image's bundled sample images.

Not a tuning set: the level scale was chosen on BSDS500 train alone (docs/experiments.md);
these check what a user sees on any photo, that the default never collapses to one region
where the hierarchy has structure.
"""

from __future__ import annotations

import numpy as np
import pytest

from wnetcli.segmentation import Cut
from wnetcli.segmentation.postprocess import postprocess

SAMPLES = ("coins", "brick", "page", "hubble_deep_field", "horse", "camera", "chelsea", "rocket", "coffee", "astronaut")


def sample(name: str) -> np.ndarray:
    """A scikit-image sample as (H, W, 3) uint8 RGB (grey and binary ones repeated over 3 channels)."""
    from skimage import data

    image = np.asarray(getattr(data, name)())
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


@pytest.fixture(scope="module")
def default_regions() -> dict[str, int]:
    return {name: int(postprocess(sample(name)).labels.max())
            for name in SAMPLES}


def test_the_default_cut_never_leaves_one_region(default_regions):
    assert all(regions > 1 for regions in default_regions.values()), default_regions


def test_the_default_cut_outlines_the_coins(default_regions):
    # 24 coins on a plain background.
    assert default_regions["coins"] >= 20, default_regions


def test_the_horse_silhouette_is_its_own_region_at_the_default(default_regions):
    # A black horse on white: the strongest structure there is, and the only one.
    assert default_regions["horse"] >= 2, default_regions


def test_a_middle_level_gives_a_middle_granularity():
    rgb = sample("coffee")
    counts = [int(postprocess(rgb, cut=Cut(level=t)).labels.max())
              for t in (0.0, 0.25, 0.5, 0.75, 0.99, 1.0)]
    assert counts == sorted(counts, reverse=True) and counts[-1] == 1 and counts[-2] >= 2
    assert counts[0] > counts[2] > counts[-2]  # the default lies strictly between the finest and the coarsest
