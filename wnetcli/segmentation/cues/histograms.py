"""Histogram cues: brightness and colour histogram gradients (gPb's local cues), and the soft
colour histograms that the region likeness compares."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wnetcli.errors import InputError
from wnetcli.segmentation.cues.base import Cue, ImageContext
from wnetcli.segmentation.cues.colour import gradient

__all__ = [
    "LAB_RANGES",
    "ColourHistograms",
    "histogram_gradient",
    "histogram_grid",
    "lab_histogram_gradient",
    "lab_histograms",
    "soft_bin_positions",
    "soft_bins",
]


@dataclass(frozen=True)
class ColourHistograms(Cue):
    """Brightness and colour histograms of L, a and b (soft bins over :data:`LAB_RANGES`).

    As a boundary cue: the chi-squared difference between the histograms of the two halves of
    a window around each pixel, maximised over orientation and averaged over the scales
    (:func:`lab_histogram_gradient`); it also sees changes of texture that leave the mean
    colour alike. As a likeness cue: each region's mean histograms, compared by total
    variation distance, L, a and b a third each.

    Attributes:
        sigmas: window scales (image pixels) of the gradient, averaged.
        bins: soft-histogram bins per channel.
    """

    name = "colour_histograms"
    gives = frozenset({"boundary", "likeness"})

    sigmas: tuple[float, ...] = (4.0, 8.0)
    bins: int = 12

    def check(self) -> None:
        self._positive_scales("sigmas")
        if self.bins < 2:
            raise InputError(f"ColourHistograms.bins must be at least 2, got {self.bins}")

    def boundary(self, context: ImageContext) -> np.ndarray:
        sigmas = context.scales_on_grid(self.sigmas)
        grid = histogram_grid(sigmas)
        histograms = lab_histograms(context.lab, self.bins, grid)
        return lab_histogram_gradient(histograms, sigmas, grid, context.shape)

    def likeness(self, context: ImageContext, weight: float) -> list:
        return [
            ("soft_bins", weight / 3, (*soft_bin_positions(context.lab[..., c], self.bins, low, high), self.bins))
            for c, (low, high) in enumerate(LAB_RANGES)
        ]


#: Value ranges of the soft histograms of L, a and b (CIELAB); values outside go to the end bins.
LAB_RANGES = ((0.0, 100.0), (-60.0, 60.0), (-60.0, 60.0))

# Exponent of the chi-squared gradients (square root: a gradient on the scale of a histogram
# distance rather than of its square) and the mass added to every bin before dividing by it;
# both measured on BSDS500 train (benchmarks/tune_pipeline.py).
_HISTOGRAM_POWER = 0.5
_HISTOGRAM_EPS = 0.02


def _bin_position(values: np.ndarray, n_bins: int, low: float, high: float) -> np.ndarray:
    """Values clipped to [low, high] on the bin scale: 0 at the first centre, n_bins - 1 at the last."""
    return (np.clip(values, low, high) - low) * np.float32((n_bins - 1) / (high - low))


def soft_bins(values: np.ndarray, n_bins: int, low: float, high: float) -> np.ndarray:
    """Triangular soft assignment of (H, W) values to ``n_bins`` centres evenly spread over [low, high].

    Returns (n_bins, H, W) float32 weights summing to 1 at every pixel.
    """
    position = _bin_position(values, n_bins, low, high)
    out = np.empty((n_bins, *values.shape), dtype=np.float32)
    for b in range(n_bins):
        np.maximum(0.0, 1.0 - np.abs(position - b), out=out[b])
    return out


def soft_bin_positions(values: np.ndarray, n_bins: int, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`soft_bins` in sparse form: each value lies between two neighbouring bins.

    Returns ``(lower, upper_weight)``: (H, W) int64 bin indices in [0, n_bins - 2] and (H, W)
    float32 weights in [0, 1]; the value puts ``1 - upper_weight`` in bin ``lower`` and
    ``upper_weight`` in bin ``lower + 1``, exactly the two non-zero entries of :func:`soft_bins`.
    """
    position = _bin_position(values, n_bins, low, high)
    lower = np.minimum(position.astype(np.int64), n_bins - 2)
    return lower, (position - lower).astype(np.float32)


def lab_histograms(lab: np.ndarray, n_bins: int, grid: int = 1) -> np.ndarray:
    """Soft histograms of L, a and b per pixel, or their means over ``grid x grid`` blocks.

    ``grid > 1`` gives :func:`wnetcli.segmentation.grids.block_mean` of the per-pixel
    histograms (edge-padded blocks) without making the full-size array: the block's pixels
    are binned one offset at a time.

    Returns (3, n_bins, ceil(H / grid), ceil(W / grid)) float32, each summing to 1 over bins.
    """
    if grid == 1:
        return np.stack([soft_bins(lab[..., c], n_bins, low, high) for c, (low, high) in enumerate(LAB_RANGES)])
    height, width = lab.shape[:2]
    rows_out, cols_out = -(-height // grid), -(-width // grid)
    out = np.zeros((3, n_bins, rows_out, cols_out), dtype=np.float32)
    for i in range(grid):
        rows = np.minimum(np.arange(rows_out) * grid + i, height - 1)  # past the edge: the edge, as padding
        for j in range(grid):
            cols = np.minimum(np.arange(cols_out) * grid + j, width - 1)
            offset = lab[rows[:, None], cols[None, :]]
            for c, (low, high) in enumerate(LAB_RANGES):
                out[c] += soft_bins(offset[..., c], n_bins, low, high)
    out *= np.float32(1.0 / (grid * grid))
    return out


def _histogram_factor(sigma: float) -> int:
    """How much coarser than the image the histogram gradient at ``sigma`` is computed (1..4)."""
    return int(min(4, max(1, sigma // 2)))


def histogram_grid(sigmas: Sequence[float]) -> int:
    """The coarsest block grid from which the histogram gradients at all ``sigmas`` can start
    (the greatest common divisor of their factors): the ``grid`` of :func:`lab_histograms`
    that :func:`lab_histogram_gradient` needs."""
    return math.gcd(*(_histogram_factor(sigma) for sigma in sigmas))


def histogram_gradient(channels: np.ndarray, sigma: float, eps: float = _HISTOGRAM_EPS) -> np.ndarray:
    """Oriented chi-squared difference of local histograms, maximised over orientation.

    ``channels`` (B, H, W) are per-pixel histograms (non-negative, summing to 1 over B). Around
    each pixel the two halves of a Gaussian window (split by a line of orientation theta) have
    histograms g and h; with ``S = G * c`` and ``D = sigma sqrt(2 pi) d/dn (G * c)`` (the
    derivative across the line, which for a step between two histograms equals g - h),
    ``chi2(theta) = sum_b D_b^2 / (4 S_b)``. Since ``D`` is linear in (cos theta, sin theta),
    chi2 is a quadratic form in them, and its maximum over theta is the larger eigenvalue of a
    2 x 2 matrix: no loop over orientations.

    Returns (H, W) float32 in [0, 1] (1 across a step between disjoint histograms).

    References
    ----------
    .. [1] D. Martin, C. Fowlkes and J. Malik, "Learning to Detect Natural Image Boundaries
           Using Local Brightness, Color, and Texture Cues", IEEE TPAMI 26(5), 2004 (the
           half-disc histogram gradients this approximates).
    """
    from scipy import ndimage as ndi

    smooth = ndi.gaussian_filter(channels, (0, sigma, sigma), mode="nearest", truncate=2.5)
    dy, dx = (gradient(smooth, axis) for axis in (1, 2))
    weight = np.float32((sigma * np.sqrt(2 * np.pi)) ** 2 / 4) / (smooth + np.float32(eps))
    a = np.einsum("bij,bij,bij->ij", dx, dx, weight)
    b = np.einsum("bij,bij,bij->ij", dx, dy, weight)
    c = np.einsum("bij,bij,bij->ij", dy, dy, weight)
    largest = 0.5 * (a + c) + np.sqrt(0.25 * (a - c) ** 2 + b * b)
    return np.clip(largest, 0.0, 1.0).astype(np.float32)


def lab_histogram_gradient(
    histograms: np.ndarray,
    sigmas: Sequence[float] = (4.0, 8.0),
    grid: int = 1,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Brightness and colour histogram gradients, averaged over L, a, b and over the scales.

    Parameters
    ----------
    histograms : (G, B, h, w) float ndarray
        G groups of B-bin per-pixel histograms (:func:`lab_histograms`: L, a, b), at the
        image's size or as block means on a ``grid`` times coarser grid.
    sigmas : sequence of float
        Scales (pixels of the image). A scale sigma >= 2 is computed on a grid
        ``floor(sigma / 2)`` times coarser (at most 4) and upsampled bilinearly: the smoothing
        removes what the coarse grid loses, at a fraction of the cost. Each of these factors
        must be a multiple of ``grid`` (:func:`histogram_grid`).
    grid : int
        The block size of ``histograms`` (1: per pixel).
    shape : (H, W), optional
        The image's size; needed when ``grid > 1`` (else ``(h, w)``).

    Returns
    -------
    (H, W) float32 ndarray in [0, 1]
        The mean of ``histogram_gradient ** 0.5``.
    """
    from wnetcli.segmentation.grids import block_mean, upsample_linear

    groups, n_bins = histograms.shape[:2]
    height, width = shape if shape is not None else histograms.shape[2:]
    flat = np.asarray(histograms, dtype=np.float32).reshape(groups * n_bins, *histograms.shape[2:])
    coarse: dict[int, np.ndarray] = {grid: flat}
    total = np.zeros((height, width), dtype=np.float32)
    for sigma in sigmas:
        factor = _histogram_factor(sigma)
        if factor % grid:
            raise ValueError(f"histograms on a {grid}-pixel grid cannot give the gradient at sigma {sigma}")
        if factor not in coarse:
            coarse[factor] = block_mean(flat, factor // grid)
        small = coarse[factor]
        grad = sum(
            histogram_gradient(small[g * n_bins : (g + 1) * n_bins], sigma / factor) ** np.float32(_HISTOGRAM_POWER)
            for g in range(groups)
        ) / groups
        total += upsample_linear(grad, (height, width), factor) if factor > 1 else grad
    return total / len(sigmas)
