"""Classic scikit-image segmenters as hierarchies, to compare against in the same run.

Each baseline is run at a list of scale parameters, finest first. The segmentations are made
nested (each region of a level is given to the region of the next raw segmentation it overlaps
most) and drawn as a ucm2 whose level k sits at height k / L (:func:`wnetcli.ucm.labels_to_ucm2`),
so that the benchmark's thresholds sweep the scale parameter like they sweep a contour detector's
strength.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wnetcli.errors import InputError
from wnetcli.evaluation.dataset import BsdsImage
from wnetcli.evaluation.inputs import Prediction

__all__ = ["BASELINES", "Baseline", "baseline_levels", "nest_levels"]

#: Scale parameter of each baseline, from fine to coarse.
BASELINES: dict[str, tuple[float, ...]] = {
    # felzenszwalb: `scale` (larger = larger regions)
    "felzenszwalb": (50, 100, 200, 400, 800, 1600, 3200),
    # slic: number of superpixels (fewer = larger regions)
    "slic": (1600, 800, 400, 200, 100, 50, 25, 12),
    # quickshift: `kernel_size` of the density estimate (the tree is cut at 3x that distance)
    "quickshift": (2, 3, 5, 7, 10),
    # watershed of the colour gradient from this many compact markers
    "watershed": (1600, 800, 400, 200, 100, 50, 25, 12),
}


def _segment(name: str, rgb: np.ndarray, scale: float) -> np.ndarray:
    from skimage import filters, segmentation
    from skimage.color import rgb2gray

    if name == "felzenszwalb":
        return segmentation.felzenszwalb(rgb, scale=scale, sigma=0.8, min_size=20)
    if name == "slic":
        return segmentation.slic(rgb, n_segments=int(scale), compactness=10, start_label=1)
    if name == "quickshift":
        return segmentation.quickshift(rgb, kernel_size=scale, max_dist=3 * scale, ratio=0.5)
    if name == "watershed":
        gradient = filters.sobel(rgb2gray(rgb))
        return segmentation.watershed(gradient, markers=int(scale), compactness=0.001)
    raise InputError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")


def nest_levels(levels: list[np.ndarray]) -> list[np.ndarray]:
    """Make a fine-to-coarse list of segmentations nested.

    Level 0 is kept; each region of nested level k-1 takes the label of the region of raw level k
    that covers most of its pixels.

    Parameters
    ----------
    levels : list of (H, W) int ndarray

    Returns
    -------
    list of (H, W) int64 ndarray
        Nested label maps, labels from 0, each a coarsening of the one before.
    """
    _, first = np.unique(np.asarray(levels[0]).ravel(), return_inverse=True)
    nested = [first.reshape(np.shape(levels[0])).astype(np.int64)]
    for raw in levels[1:]:
        _, coarse = np.unique(np.asarray(raw).ravel(), return_inverse=True)
        fine = nested[-1].ravel()
        n_fine, n_coarse = int(fine.max()) + 1, int(coarse.max()) + 1
        table = np.bincount(fine * n_coarse + coarse, minlength=n_fine * n_coarse).reshape(n_fine, n_coarse)
        parent = np.argmax(table, axis=1)
        _, parent = np.unique(parent, return_inverse=True)
        nested.append(parent[nested[-1]])
    return nested


def baseline_levels(name: str, rgb: np.ndarray) -> list[np.ndarray]:
    """The nested segmentations of baseline ``name`` on an (H, W, 3) uint8 image, finest first."""
    if name not in BASELINES:
        raise InputError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    return nest_levels([_segment(name, rgb, scale) for scale in BASELINES[name]])


@dataclass
class Baseline:
    """A scikit-image baseline as an evaluation method: image -> ucm2 over its scale parameter."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in BASELINES:
            raise InputError(f"unknown method {self.name!r}; choose one of {', '.join(BASELINES)}")

    def __call__(self, image: BsdsImage) -> Prediction:
        from wnetcli.images import read_rgb
        from wnetcli.ucm import labels_to_ucm2

        return Prediction("ucm2", labels_to_ucm2(baseline_levels(self.name, read_rgb(image.image))))
