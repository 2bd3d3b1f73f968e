"""Texture cue: textons (k-means clusters of local filter responses), their histogram gradient
and the texton histograms that the region likeness compares (gPb's texture cue)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wnetcli.errors import InputError
from wnetcli.segmentation.cues.base import Cue, ImageContext
from wnetcli.segmentation.cues.histograms import lab_histogram_gradient

__all__ = [
    "TEXTON_SAMPLE", "TEXTON_SCALES", "Textons", "one_hot", "texton_histograms", "texton_map", "texture_gradient",
]


@dataclass(frozen=True)
class Textons(Cue):
    """Textons of the image's brightness (:func:`texton_map`).

    As a boundary cue: the chi-squared gradient of the texton histograms of the two halves of
    a window (:func:`texture_gradient`). As a likeness cue: each region's texton histogram.

    Attributes:
        textons: clusters per image.
        scales: Gaussian scales (image pixels) of the filter bank.
        downsample: the textons are computed on a grid this many times coarser than the
            recipe's (block means) and enlarged back (nearest cell).
        sigmas: window scales (image pixels) of the gradient, averaged.
    """

    name = "textons"
    gives = frozenset({"boundary", "likeness"})

    textons: int = 32
    scales: tuple[float, ...] = (1.0, 2.0)
    downsample: int = 1
    sigmas: tuple[float, ...] = (4.0, 8.0)

    def check(self) -> None:
        if self.textons < 2:
            raise InputError(f"Textons.textons must be at least 2, got {self.textons}")
        self._positive_scales("scales")
        self._positive_scales("sigmas")
        if not 1 <= self.downsample <= 8:
            raise InputError(f"Textons.downsample must be between 1 and 8, got {self.downsample}")

    def labels(self, context: ImageContext) -> np.ndarray:
        """(h, w) int32 texton labels on the context's grid (computed once per image)."""
        return context.memo(("textons", self.textons, self.scales, self.downsample), lambda: self._labels(context))

    def _labels(self, context: ImageContext) -> np.ndarray:
        from wnetcli.segmentation.cues.colour import rgb_to_lab
        from wnetcli.segmentation.grids import block_mean_rgb, enlarge_labels

        coarser = self.downsample
        grid = context.downsample * coarser
        lab = context.lab if coarser == 1 else rgb_to_lab(block_mean_rgb(context.grid_rgb, coarser))
        scales = tuple(float(scale) / grid for scale in self.scales)
        # On a coarser grid the k-means sample shrinks with the pixels: the same share of them.
        textons = texton_map(lab, self.textons, scales=scales, sample_size=max(2000, TEXTON_SAMPLE // grid**2))
        return textons if coarser == 1 else enlarge_labels(textons, context.shape)

    def boundary(self, context: ImageContext) -> np.ndarray:
        return lab_histogram_gradient(one_hot(self.labels(context), self.textons)[None],
                                      context.scales_on_grid(self.sigmas))

    def likeness(self, context: ImageContext, weight: float) -> list:
        return [("labels", weight, (self.labels(context), self.textons))]


#: Scales (pixels) of the texton filter bank: Gaussian first and second derivatives of L.
TEXTON_SCALES = (1.0, 2.0)
#: Pixels sampled to fit the k-means of an image's filter responses (all are then assigned).
TEXTON_SAMPLE = 10_000


def texton_map(
    lab: np.ndarray,
    n_textons: int = 32,
    seed: int = 0,
    scales: Sequence[float] = TEXTON_SCALES,
    sample_size: int = TEXTON_SAMPLE,
) -> np.ndarray:
    """Per-pixel texton labels: k-means clusters of the image's local filter responses.

    The filter bank is the five Gaussian derivatives of orders one and two of L (d/dx, d/dy,
    d2/dx2, d2/dy2, d2/dxdy) at each of ``scales``; each pixel's response
    vector is scaled to ``log(1 + |r| / 0.03) * r / |r|`` (Malik et al.'s contrast
    normalisation, so that strong edges do not own every cluster). The clusters are fitted on
    a fixed random sample of ``sample_size`` pixels (seeded: the same image gives the same
    map) and every pixel gets its nearest centre.

    Parameters
    ----------
    lab : (H, W, 3) float ndarray
        CIELAB image (L in 0..100).
    n_textons : int
        Number of clusters.
    seed : int
    scales : sequence of float
        Gaussian scales (pixels) of the filter bank.
    sample_size : int
        Pixels the k-means is fitted on.

    Returns
    -------
    (H, W) int32 ndarray of labels in [0, n_textons)
    """
    grey = np.asarray(lab[..., 0], dtype=np.float32) / np.float32(100.0)
    # (D, pixels): one contiguous row per filter, so that no step writes or reads with a stride.
    responses = _derivative_responses(grey, scales).reshape(len(scales) * len(_DERIVATIVE_ORDERS), -1)
    norm = np.sqrt(np.einsum("dn,dn->n", responses, responses))
    responses *= np.log1p(norm / np.float32(0.03)) / np.maximum(norm, np.float32(1e-12))
    rng = np.random.default_rng(seed)
    sample = responses[:, rng.choice(responses.shape[1], size=min(sample_size, responses.shape[1]), replace=False)].T
    if not np.ptp(sample, axis=0).any():  # a flat image: one texture
        return np.zeros(grey.shape, dtype=np.int32)
    sample = sample.astype(np.float64)
    centres = _lloyd(sample, _kmeans_plus_plus(sample, n_textons, rng))
    return _nearest_centre(responses.T, centres.astype(np.float32)).reshape(grey.shape).astype(np.int32)


#: The filter bank's derivative orders (rows, columns): d/dx, d/dy, d2/dx2, d2/dy2, d2/dxdy.
_DERIVATIVE_ORDERS = ((0, 1), (1, 0), (0, 2), (2, 0), (1, 1))
#: Lloyd iterations of the texton k-means after its k-means++ start.
_KMEANS_ITERATIONS = 8


def _derivative_responses(grey: np.ndarray, scales: Sequence[float]) -> np.ndarray:
    """(S * 5, H, W) float32: ``ndi.gaussian_filter(grey, s, order=o) * s ** sum(o)`` for each
    scale s and order o of :data:`_DERIVATIVE_ORDERS`, bit for bit, with the row passes shared:
    gaussian_filter filters the rows first, and the five orders need only three row filters."""
    from scipy import ndimage as ndi

    out = np.empty((len(scales) * len(_DERIVATIVE_ORDERS), *grey.shape), dtype=np.float32)
    for s, sigma in enumerate(scales):
        by_rows = {
            order: ndi.gaussian_filter1d(grey, sigma, axis=0, order=order, mode="reflect") for order in (0, 1, 2)
        }
        for o, (row_order, col_order) in enumerate(_DERIVATIVE_ORDERS):
            plane = out[s * len(_DERIVATIVE_ORDERS) + o]
            ndi.gaussian_filter1d(by_rows[row_order], sigma, axis=1, order=col_order, mode="reflect", output=plane)
            plane *= np.float32(sigma ** (row_order + col_order))
    return out


def _nearest_centre(points: np.ndarray, centres: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(n,) int index of the nearest of (k, D) ``centres`` (squared Euclidean) for (n, D) ``points``
    (C- or Fortran-ordered).

    ``|p - c|^2 = |p|^2 - 2 p.c + |c|^2`` and ``|p|^2`` does not change the argmin, so the
    distances are one matrix product (BLAS), in chunks of rows that stay in cache: faster than
    ``scipy.cluster.vq.vq``, which loops over pairs (``benchmarks/bench_helpers.py``;
    docs/experiments.md). The same nearest centre except where two centres are within rounding
    of each other.
    """
    weights = -2.0 * centres.T
    offsets = (centres * centres).sum(axis=1)
    out = np.empty(len(points), dtype=np.intp)
    for start in range(0, len(points), chunk):
        out[start : start + chunk] = (points[start : start + chunk] @ weights + offsets).argmin(axis=1)
    return out


def _lloyd(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """:data:`_KMEANS_ITERATIONS` Lloyd updates of (k, D) ``centres`` on (n, D) ``points``
    (``scipy.cluster.vq.kmeans2`` from the given start); a centre with no point keeps its place
    and goes unused, which kmeans2 warns about and which is expected here (a texture with fewer
    distinct responses than textons)."""
    import warnings

    from scipy.cluster.vq import kmeans2

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="One of the clusters is empty")
        centres, _ = kmeans2(points, centres, iter=_KMEANS_ITERATIONS, minit="matrix", missing="warn")
    return centres


def _kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur and Vassilvitskii, 2007): (k, D) starting centres from (n, D) points.

    Each new centre is a point drawn with probability proportional to its squared distance to
    the nearest centre so far. The running nearest distance makes this O(k n D); scipy's
    ``kmeans2(minit="++")`` recomputes the distances to every chosen centre at each step,
    O(k^2 n D), a large part of the texton time (docs/experiments.md). The distances to a new centre are
    ``|p|^2 - 2 p.c + |c|^2`` (one matrix-vector product), clipped at 0 against rounding.
    """
    squared = np.einsum("ij,ij->i", points, points)

    def squared_distances(centre: np.ndarray) -> np.ndarray:
        return np.maximum(squared - 2.0 * (points @ centre) + centre @ centre, 0.0)

    centres = np.empty((k, points.shape[1]), dtype=points.dtype)
    centres[0] = points[rng.integers(len(points))]
    nearest = squared_distances(centres[0])
    for i in range(1, k):
        cumulative = np.cumsum(nearest)
        if cumulative[-1] <= 0:  # fewer distinct points than k: the rest repeat and go unused
            centres[i:] = centres[0]
            break
        pick = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1])), len(points) - 1)
        centres[i] = points[pick]
        np.minimum(nearest, squared_distances(centres[i]), out=nearest)
    return centres


def texton_histograms(
    lab: np.ndarray, n_textons: int = 32, scales: Sequence[float] = TEXTON_SCALES, sample_size: int = TEXTON_SAMPLE
) -> np.ndarray:
    """:func:`texton_map` as per-pixel one-hot histograms: (1, n_textons, H, W) float32."""
    return one_hot(texton_map(lab, n_textons, scales=scales, sample_size=sample_size), n_textons)[None]


def one_hot(labels: np.ndarray, n: int) -> np.ndarray:
    """(H, W) ints in [0, n) -> (n, H, W) float32 one-hot histograms."""
    out = np.zeros((n, *labels.shape), dtype=np.float32)
    np.put_along_axis(out, labels[None], np.float32(1.0), axis=0)
    return out


def texture_gradient(
    lab: np.ndarray, n_textons: int = 32, sigmas: Sequence[float] = (4.0, 8.0), textons: np.ndarray | None = None
) -> np.ndarray:
    """The texture cue: the histogram gradient of :func:`texton_map`, averaged over scales.

    ``textons``: :func:`texton_histograms` of ``lab`` if already computed. Returns (H, W)
    float32 in [0, 1], like :func:`lab_histogram_gradient` (one group of one-hot bins).
    """
    return lab_histogram_gradient(texton_histograms(lab, n_textons) if textons is None else textons, sigmas)
