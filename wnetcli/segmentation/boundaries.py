"""Boundary strength: the soft segmentation's own boundaries mixed with multi-scale colour gradients.

Both cues are per-pixel maps in [0, 1] on the image grid; the hierarchy
(:mod:`wnetcli.segmentation.hierarchy`) floods the combined map into superpixels and merges
them by the mean strength along their shared borders.

- W-Net cue (:func:`probability_boundaries`): the total-variation distance
  ``0.5 * sum_k |p_k(u) - p_k(v)|`` between 4-adjacent pixels, 0 where the soft map is
  constant (also where it is uniform) and 1 across a change between two confident labels.
- Colour cue (:func:`colour_gradient`): scale-normalised Gaussian gradient magnitudes of the
  CIELAB image at several scales, averaged and squashed to [0, 1).
- Histogram cues (:func:`lab_histogram_gradient`, :func:`texture_gradient`): chi-squared
  differences between the two halves of a window, of brightness and colour histograms and of
  texton histograms, as gPb's local cues.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# scipy.ndimage is imported where it is used: it takes ~0.35 s to import, and the main process
# of a folder run (decoding and the network) never needs it.

__all__ = [
    "BoundaryOptions",
    "boundary_maps",
    "boundary_strength",
    "colour_gradient",
    "probability_boundaries",
    "texton_histograms",
    "texton_map",
    "texture_gradient",
]

# Peak of sigma * |d/dx (G_sigma * step)| for a unit step: 1 / sqrt(2 pi). Dividing by it makes
# the colour cue of a step edge equal its CIELAB contrast at every scale.
_STEP_PEAK = 1.0 / np.sqrt(2.0 * np.pi)


@dataclass(frozen=True)
class BoundaryOptions:
    """How the two boundary cues are computed and mixed.

    Attributes:
        wnet_weight: weight of the W-Net cue. ``0`` gives the classical hierarchy from colour
            alone (the "without the W-Net cue" comparison).
        colour_weight: weight of the colour-gradient cue (``0``: the W-Net cue alone).
        colour_sigmas: Gaussian scales, in pixels, of the colour gradients.
        colour_contrast: CIELAB contrast (Delta E) of a step edge that maps to ``1 - 1/e``
            (about 0.63): the colour cue is ``1 - exp(-contrast / colour_contrast)``.
        wnet_sigma: the W-Net cue is smoothed with a Gaussian of this width (pixels) so that
            the watershed lines settle in the middle of a change; ``0``: not smoothed.
        histogram_weight: weight of the brightness and colour histogram gradients
            (:func:`lab_histogram_gradient`), which also see changes of texture that leave
            the mean colour alike.
        histogram_sigmas: their scales (pixels).
        histogram_bins: soft-histogram bins per CIELAB channel.
        texture_weight: weight of the texton histogram gradient (:func:`texture_gradient`),
            at the ``histogram_sigmas`` scales.
        wnet_histogram_weight: weight of the W-Net's region cue: the chi-squared gradient of
            the soft segmentation read as per-pixel histograms over the K classes, at the
            ``histogram_sigmas`` scales (where the class mix of one side of a window differs
            from the other's), which a class map that flickers inside a texture does not set
            off the way it sets off the pixel cue.
        textons: number of textons (k-means clusters of filter responses) per image.
    """

    wnet_weight: float = 1.0
    colour_weight: float = 1.0
    colour_sigmas: tuple[float, ...] = (1.0, 2.0, 4.0)
    colour_contrast: float = 40.0
    wnet_sigma: float = 1.0
    histogram_weight: float = 0.0
    histogram_sigmas: tuple[float, ...] = (4.0, 8.0)
    histogram_bins: int = 12
    texture_weight: float = 0.0
    textons: int = 32
    wnet_histogram_weight: float = 0.0

    def __post_init__(self) -> None:
        weights = (
            self.wnet_weight, self.colour_weight, self.histogram_weight, self.texture_weight, self.wnet_histogram_weight
        )
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                "wnet_weight, colour_weight, histogram_weight, texture_weight and wnet_histogram_weight must be "
                f">= 0 and not all 0, got {weights}"
            )
        if self.textons < 2:
            raise ValueError(f"textons must be at least 2, got {self.textons}")
        if not self.histogram_sigmas or min(self.histogram_sigmas) <= 0:
            raise ValueError(f"histogram_sigmas must be positive scales, got {self.histogram_sigmas}")
        if self.histogram_bins < 2:
            raise ValueError(f"histogram_bins must be at least 2, got {self.histogram_bins}")
        if not self.colour_sigmas or min(self.colour_sigmas) <= 0:
            raise ValueError(f"colour_sigmas must be positive scales, got {self.colour_sigmas}")
        if self.colour_contrast <= 0:
            raise ValueError(f"colour_contrast must be > 0, got {self.colour_contrast}")
        if self.wnet_sigma < 0:
            raise ValueError(f"wnet_sigma must be >= 0, got {self.wnet_sigma}")


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


def central_difference(values: np.ndarray, axis: int) -> np.ndarray:
    """``np.gradient(values, axis=axis)`` bit for bit (central differences, one-sided at the two
    ends), and zeros along an axis of length 1, where np.gradient raises.

    Written out as three in-place subtractions because np.gradient's general code path took
    about ten times as long on these arrays (measured: 6.4 against 0.6 ms on a (12, 161, 241)
    float32 stack), and it runs a dozen times per image.
    """
    out = np.empty_like(values)
    length = values.shape[axis]
    if length < 2:
        out.fill(0)
        return out

    def part(start, stop):
        index = [slice(None)] * values.ndim
        index[axis] = slice(start, stop)
        return tuple(index)

    inner = out[part(1, -1)]
    np.subtract(values[part(2, None)], values[part(None, -2)], out=inner)
    inner *= np.asarray(0.5, dtype=values.dtype)  # exact, as np.gradient's division by 2
    np.subtract(values[part(1, 2)], values[part(0, 1)], out=out[part(0, 1)])
    last, before_last = part(length - 1, length), part(length - 2, length - 1)
    np.subtract(values[last], values[before_last], out=out[last])
    return out


def colour_gradient(
    lab: np.ndarray, sigmas: Sequence[float] = (1.0, 2.0, 4.0), contrast: float = 40.0
) -> np.ndarray:
    """Multi-scale colour edge strength of a CIELAB image.

    At each scale ``sigma`` the gradient magnitude of the Gaussian-smoothed image, summed over
    the three channels as a Euclidean norm and multiplied by ``sigma * sqrt(2 pi)``, equals the
    Delta E contrast of an ideal step edge; the scales are averaged and mapped through
    ``1 - exp(-g / contrast)``.

    Parameters
    ----------
    lab : (H, W, 3) float ndarray
        CIELAB image (``skimage.color.rgb2lab``).
    sigmas : sequence of float
        Gaussian scales in pixels.
    contrast : float
        Delta E that maps to about 0.63.

    Returns
    -------
    (H, W) float32 ndarray in [0, 1)
    """
    from scipy import ndimage as ndi

    channels = np.moveaxis(np.asarray(lab, dtype=np.float32), -1, 0)
    total = np.zeros(channels.shape[1:], dtype=np.float32)
    for sigma in sigmas:
        # Smoothing then central differences costs half as much as two derivative-of-Gaussian
        # filters per channel; a 3-sigma kernel keeps 99.7% of the weight.
        smooth = ndi.gaussian_filter(channels, (0, sigma, sigma), mode="nearest", truncate=3.0)
        dy, dx = (central_difference(smooth, axis) for axis in (1, 2))
        total += np.sqrt((dy * dy + dx * dx).sum(axis=0)) * np.float32(sigma / _STEP_PEAK)
    total /= len(sigmas)
    return (1.0 - np.exp(-total / contrast)).astype(np.float32)


def boundary_strength(
    lab: np.ndarray,
    probs: np.ndarray | None,
    options: BoundaryOptions | None = None,
    histograms: np.ndarray | None = None,
    textons: np.ndarray | None = None,
) -> np.ndarray:
    """The combined boundary map: a weighted mean of the W-Net and colour cues.

    Parameters
    ----------
    lab : (H, W, 3) float ndarray
        CIELAB image.
    probs : (K, H, W) float ndarray or None
        The (CRF-smoothed) soft segmentation; ``None`` leaves the W-Net cue out, as does
        ``options.wnet_weight == 0``.
    options : BoundaryOptions, optional
    histograms : (3, B, h, w) float ndarray, optional
        ``lab_histograms(lab, options.histogram_bins, histogram_grid(options.histogram_sigmas))``
        if already computed.
    textons : (1, T, H, W) float ndarray, optional
        :func:`texton_histograms` of ``lab`` if already computed (for ``texture_weight``).

    Returns
    -------
    (H, W) float32 ndarray in [0, 1]
    """
    return boundary_maps(lab, probs, options, histograms, textons)[0]


def boundary_maps(
    lab: np.ndarray,
    probs: np.ndarray | None,
    options: BoundaryOptions | None = None,
    histograms: np.ndarray | None = None,
    textons: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`boundary_strength` (same arguments), and the weighted mean of the image cues alone.

    Returns
    -------
    combined : (H, W) float32 ndarray in [0, 1]
        The map of :func:`boundary_strength`.
    image_only : (H, W) float32 ndarray in [0, 1], or None
        The same mean without the W-Net cues, computed from the same cue maps; ``None`` when
        there is no image cue (colour, histogram and texture weights all 0).
    """
    options = options or BoundaryOptions()
    wnet_parts: list[tuple[float, np.ndarray]] = []
    image_parts: list[tuple[float, np.ndarray]] = []
    if probs is not None and options.wnet_weight > 0:
        wnet_parts.append((options.wnet_weight, probability_boundaries(probs, options.wnet_sigma)))
    if probs is not None and options.wnet_histogram_weight > 0:
        class_mix = np.asarray(probs, dtype=np.float32)[None]  # one group of K bins
        wnet_parts.append((options.wnet_histogram_weight, lab_histogram_gradient(class_mix, options.histogram_sigmas)))
    if options.colour_weight > 0:
        image_parts.append(
            (options.colour_weight, colour_gradient(lab, options.colour_sigmas, options.colour_contrast))
        )
    if options.histogram_weight > 0:
        grid = histogram_grid(options.histogram_sigmas)
        if histograms is None:
            histograms = lab_histograms(lab, options.histogram_bins, grid)
        gradient = lab_histogram_gradient(histograms, options.histogram_sigmas, grid, lab.shape[:2])
        image_parts.append((options.histogram_weight, gradient))
    if options.texture_weight > 0:
        image_parts.append(
            (options.texture_weight, texture_gradient(lab, options.textons, options.histogram_sigmas, textons))
        )
    if not wnet_parts and not image_parts:
        raise ValueError("no boundary cue left: probs is None and colour_weight is 0")
    image_only = _weighted_mean(image_parts) if image_parts else None
    if not wnet_parts:
        return image_only, image_only
    return _weighted_mean(wnet_parts + image_parts), image_only


def _weighted_mean(parts: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """(weight, (H, W) map) pairs -> their weighted mean, float32."""
    total = sum(weight for weight, _ in parts)
    combined = sum(weight * cue for weight, cue in parts) / total
    return combined.astype(np.float32, copy=False)


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

    ``grid > 1`` gives :func:`wnetcli.segmentation.crf.block_mean` of the per-pixel
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
    dy, dx = (central_difference(smooth, axis) for axis in (1, 2))
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
    from wnetcli.segmentation.crf import block_mean, upsample_linear

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
    centres = _kmeans_plus_plus(sample, n_textons, rng)
    for _ in range(_KMEANS_ITERATIONS):
        centres = _cluster_means(sample, _nearest_centre(sample, centres), centres)
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
    distances are one matrix product (BLAS), in chunks of rows that stay in cache: about 5x
    faster here than ``scipy.cluster.vq.vq``, which loops over pairs. The same nearest centre
    except where two centres are within rounding of each other (none differed on 10 BSDS
    val images' texton maps).
    """
    weights = -2.0 * centres.T
    offsets = (centres * centres).sum(axis=1)
    out = np.empty(len(points), dtype=np.intp)
    for start in range(0, len(points), chunk):
        out[start : start + chunk] = (points[start : start + chunk] @ weights + offsets).argmin(axis=1)
    return out


def _cluster_means(points: np.ndarray, labels: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """One Lloyd update: each centre moves to the mean of its (n, D) ``points`` (``labels`` (n,));
    a centre with no point keeps its place (it just goes unused), as scipy's ``kmeans2`` with
    ``missing="warn"`` does."""
    k = len(centres)
    counts = np.bincount(labels, minlength=k)
    sums = np.stack([np.bincount(labels, weights=points[:, d], minlength=k) for d in range(points.shape[1])], axis=1)
    return np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)


def _kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur and Vassilvitskii, 2007): (k, D) starting centres from (n, D) points.

    Each new centre is a point drawn with probability proportional to its squared distance to
    the nearest centre so far. The running nearest distance makes this O(k n D); scipy's
    ``kmeans2(minit="++")`` recomputes the distances to every chosen centre at each step,
    O(k^2 n D), which was half the texton time here. The distances to a new centre are
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


# sRGB D65 -> XYZ, and the D65 white point (2 degree observer), as skimage.color uses them.
_RGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
    dtype=np.float32,
)
_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)


def _linear_lut() -> np.ndarray:
    c = np.arange(256, dtype=np.float64) / 255.0
    return np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92).astype(np.float32)


_LINEAR = _linear_lut()


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB of an (H, W, 3) uint8 sRGB image, as ``skimage.color.rgb2lab`` (D65), in float32.

    The sRGB linearisation is a 256-entry lookup table, which makes this several times faster
    than ``rgb2lab`` on uint8 input; the results agree to about 1e-3 (float32 rounding).
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        from skimage.color import rgb2lab

        return rgb2lab(rgb).astype(np.float32)
    xyz = _LINEAR[rgb] @ (_RGB_TO_XYZ.T / _WHITE[None, :])
    small = xyz <= np.float32(0.008856)
    f = np.where(small, np.float32(7.787) * xyz + np.float32(16.0 / 116.0), np.cbrt(xyz))
    lab = np.empty_like(f)
    lab[..., 0] = np.where(small[..., 1], np.float32(903.3) * xyz[..., 1], np.float32(116.0) * f[..., 1] - 16.0)
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab
