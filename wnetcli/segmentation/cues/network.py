"""Network cues: what the W-Net's outputs contribute to the hierarchy.

Each reads the network's soft maps (``smoothed``: after the CRF, as the paper's Algorithm 2
does) or its boundary map (a model trained with boundaries), so a recipe holding one of them
makes the pipeline run the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wnetcli.segmentation.cues.base import BOUNDARIES, SMOOTHED_MAPS, SOFT_MAPS, Cue, ImageContext
from wnetcli.segmentation.cues.histograms import lab_histogram_gradient

__all__ = [
    "ArgmaxSplit",
    "NetworkBoundaries",
    "NetworkClassMix",
    "NetworkEdges",
    "NetworkLikeness",
    "probability_boundaries",
]


@dataclass(frozen=True)
class _SoftMapCue(Cue):
    """A cue of the network's soft maps; ``smoothed``: after the CRF."""

    smoothed: bool = True

    @property
    def reads(self) -> frozenset[str]:
        return frozenset({SMOOTHED_MAPS if self.smoothed else SOFT_MAPS})

    def maps(self, context: ImageContext) -> np.ndarray:
        return context.soft_maps(self.smoothed)


@dataclass(frozen=True)
class NetworkEdges(_SoftMapCue):
    """Boundary cue: where the soft segmentation changes (:func:`probability_boundaries`).

    Attributes:
        smoothed: read the CRF-smoothed soft maps.
        sigma: Gaussian smoothing (image pixels) of the map, so that the watershed lines settle
            in the middle of a change; 0: none.
    """

    name = "network_edges"
    gives = frozenset({"boundary"})

    sigma: float = 1.0

    def check(self) -> None:
        self._at_least("sigma", 0.0)

    def boundary(self, context: ImageContext) -> np.ndarray:
        return probability_boundaries(self.maps(context), context.on_grid(self.sigma))


@dataclass(frozen=True)
class NetworkClassMix(_SoftMapCue):
    """Boundary cue: the chi-squared gradient of the soft segmentation read as per-pixel
    histograms over its K classes (where the class mix of one side of a window differs from
    the other's), which a class map that flickers inside a texture does not set off as
    :class:`NetworkEdges` does.

    Attributes:
        smoothed: read the CRF-smoothed soft maps.
        sigmas: window scales (image pixels), averaged.
    """

    name = "network_class_mix"
    gives = frozenset({"boundary"})

    sigmas: tuple[float, ...] = (4.0, 8.0)

    def check(self) -> None:
        self._positive_scales("sigmas")

    def boundary(self, context: ImageContext) -> np.ndarray:
        class_mix = np.asarray(self.maps(context), dtype=np.float32)[None]  # one group of K bins
        return lab_histogram_gradient(class_mix, context.scales_on_grid(self.sigmas))


@dataclass(frozen=True)
class NetworkLikeness(_SoftMapCue):
    """Likeness cue: each region's mean soft segmentation (a distribution over K), compared by
    total variation distance.

    Attributes:
        smoothed: read the CRF-smoothed soft maps.
    """

    name = "network_likeness"
    gives = frozenset({"likeness"})

    def likeness(self, context: ImageContext, weight: float) -> list:
        return [("dense", weight, self.maps(context))]


@dataclass(frozen=True)
class ArgmaxSplit(_SoftMapCue):
    """Partition cue: the superpixels are also cut along the changes of the soft segmentation's
    argmax, as the paper's Algorithm 2 takes its candidate borders from the CRF segmentation.

    Attributes:
        smoothed: read the CRF-smoothed soft maps.
    """

    name = "argmax_split"
    gives = frozenset({"partition"})

    def partition(self, context: ImageContext) -> np.ndarray:
        return self.maps(context).argmax(axis=0)


@dataclass(frozen=True)
class NetworkBoundaries(Cue):
    """Boundary cue: the boundary map of a model trained with boundaries (``wnet train
    --boundaries-from``), which learnt from a teacher hierarchy which local patterns are
    lasting region borders.

    Attributes:
        sigma: Gaussian smoothing (image pixels) of the map; 0: none.
    """

    name = "network_boundaries"
    gives = frozenset({"boundary"})

    sigma: float = 0.0

    def check(self) -> None:
        self._at_least("sigma", 0.0)

    @property
    def reads(self) -> frozenset[str]:
        return frozenset({BOUNDARIES})

    def boundary(self, context: ImageContext) -> np.ndarray:
        boundaries = context.network_boundaries()
        if self.sigma > 0:
            from scipy import ndimage as ndi

            boundaries = ndi.gaussian_filter(boundaries, context.on_grid(self.sigma), mode="nearest")
        return np.clip(boundaries, 0.0, 1.0).astype(np.float32, copy=False)


def probability_boundaries(probs: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Where the soft segmentation changes: the largest TV distance to a 4-neighbour.

    Parameters
    ----------
    probs : (K, H, W) float ndarray
        Class probabilities, summing to 1 over K.
    sigma : float
        Width (pixels) of a Gaussian smoothing of the result; 0 for none.

    Returns
    -------
    (H, W) float32 ndarray in [0, 1]
    """
    probs = np.asarray(probs, dtype=np.float32)
    right = 0.5 * np.abs(np.diff(probs, axis=2)).sum(axis=0)  # (H, W-1)
    down = 0.5 * np.abs(np.diff(probs, axis=1)).sum(axis=0)  # (H-1, W)
    out = np.zeros(probs.shape[1:], dtype=np.float32)
    # Both pixels of a changing pair are marked: a two-pixel ridge whose crest the watershed
    # line follows.
    np.maximum(out[:, :-1], right, out=out[:, :-1])
    np.maximum(out[:, 1:], right, out=out[:, 1:])
    np.maximum(out[:-1, :], down, out=out[:-1, :])
    np.maximum(out[1:, :], down, out=out[1:, :])
    if sigma > 0:
        from scipy import ndimage as ndi

        out = ndi.gaussian_filter(out, sigma, mode="nearest")
    return np.clip(out, 0.0, 1.0)
