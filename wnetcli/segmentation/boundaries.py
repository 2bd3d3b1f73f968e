"""Boundary strength: the soft segmentation's own boundaries mixed with multi-scale colour gradients.

Both cues are per-pixel maps in [0, 1] on the image grid; the hierarchy
(:mod:`wnetcli.segmentation.hierarchy`) floods the combined map into superpixels and merges
them by the mean strength along their shared borders.

- W-Net cue (:func:`probability_boundaries`): the total-variation distance
  ``0.5 * sum_k |p_k(u) - p_k(v)|`` between 4-adjacent pixels, 0 where the soft map is
  constant (also where it is uniform) and 1 across a change between two confident labels.
- Colour cue (:func:`colour_gradient`): scale-normalised Gaussian gradient magnitudes of the
  CIELAB image at several scales, averaged and squashed to [0, 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["BoundaryOptions", "boundary_strength", "colour_gradient", "probability_boundaries"]

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
    """

    wnet_weight: float = 1.0
    colour_weight: float = 1.0
    colour_sigmas: tuple[float, ...] = (1.0, 2.0, 4.0)
    colour_contrast: float = 40.0
    wnet_sigma: float = 1.0
    histogram_weight: float = 0.0
    histogram_sigmas: tuple[float, ...] = (4.0, 8.0)
    histogram_bins: int = 12
    histogram_power: float = 0.5
    histogram_eps: float = 0.02
    histogram_channels: tuple[float, ...] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        weights = (self.wnet_weight, self.colour_weight, self.histogram_weight)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                f"wnet_weight and colour_weight must be >= 0 and not both 0, "
                f"got {self.wnet_weight} and {self.colour_weight}"
            )
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
        out = ndi.gaussian_filter(out, sigma, mode="nearest")
    return np.clip(out, 0.0, 1.0)


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
    channels = np.moveaxis(np.asarray(lab, dtype=np.float32), -1, 0)
    total = np.zeros(channels.shape[1:], dtype=np.float32)
    for sigma in sigmas:
        # Smoothing then central differences costs half as much as two derivative-of-Gaussian
        # filters per channel; a 3-sigma kernel keeps 99.7% of the weight.
        smooth = ndi.gaussian_filter(channels, (0, sigma, sigma), mode="nearest", truncate=3.0)
        dy, dx = (
            np.gradient(smooth, axis=a) if smooth.shape[a] > 1 else np.zeros_like(smooth) for a in (1, 2)
        )
        total += np.sqrt((dy * dy + dx * dx).sum(axis=0)) * np.float32(sigma / _STEP_PEAK)
    total /= len(sigmas)
    return (1.0 - np.exp(-total / contrast)).astype(np.float32)


def boundary_strength(
    lab: np.ndarray, probs: np.ndarray | None, options: BoundaryOptions | None = None
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

    Returns
    -------
    (H, W) float32 ndarray in [0, 1]
    """
    options = options or BoundaryOptions()
    parts: list[tuple[float, np.ndarray]] = []
    if probs is not None and options.wnet_weight > 0:
        parts.append((options.wnet_weight, probability_boundaries(probs, options.wnet_sigma)))
    if options.colour_weight > 0:
        parts.append(
            (options.colour_weight, colour_gradient(lab, options.colour_sigmas, options.colour_contrast))
        )
    if options.histogram_weight > 0:
        parts.append((options.histogram_weight, lab_histogram_gradient(lab, options)))
    if not parts:
        raise ValueError("no boundary cue left: probs is None and colour_weight is 0")
    total = sum(weight for weight, _ in parts)
    combined = sum(weight * cue for weight, cue in parts) / total
    return combined.astype(np.float32, copy=False)


def soft_bins(values: np.ndarray, n_bins: int, low: float, high: float) -> np.ndarray:
    """Triangular soft assignment of (H, W) values to ``n_bins`` centres evenly spread over [low, high].

    Returns (n_bins, H, W) float32 weights summing to 1 at every pixel.
    """
    position = (np.clip(values, low, high) - low) * np.float32((n_bins - 1) / (high - low))
    out = np.empty((n_bins, *values.shape), dtype=np.float32)
    for b in range(n_bins):
        np.maximum(0.0, 1.0 - np.abs(position - b), out=out[b])
    return out


def histogram_gradient(channels: np.ndarray, sigma: float, eps: float = 0.02) -> np.ndarray:
    """Oriented chi-squared difference of local histograms, maximised over orientation.

    ``channels`` (B, H, W) are per-pixel histograms (non-negative, summing to 1 over B). Around
    each pixel the two halves of a Gaussian window (split by a line of orientation theta) have
    histograms g and h; with ``S = G * c`` and ``D = sigma sqrt(2 pi) d/dn (G * c)`` (the
    derivative across the line, which for a step between two histograms equals g - h),
    ``chi2(theta) = sum_b D_b^2 / (4 S_b)``. Since ``D`` is linear in (cos theta, sin theta),
    chi2 is a quadratic form in them, and its maximum over theta is the larger eigenvalue of a
    2 x 2 matrix: no loop over orientations.

    Returns (H, W) float32 in [0, 1] (1 across a step between disjoint histograms).
    """
    smooth = ndi.gaussian_filter(channels, (0, sigma, sigma), mode="nearest", truncate=2.5)
    dy = np.gradient(smooth, axis=1) if smooth.shape[1] > 1 else np.zeros_like(smooth)
    dx = np.gradient(smooth, axis=2) if smooth.shape[2] > 1 else np.zeros_like(smooth)
    weight = np.float32((sigma * np.sqrt(2 * np.pi)) ** 2 / 4) / (smooth + np.float32(eps))
    a = np.einsum("bij,bij,bij->ij", dx, dx, weight)
    b = np.einsum("bij,bij,bij->ij", dx, dy, weight)
    c = np.einsum("bij,bij,bij->ij", dy, dy, weight)
    largest = 0.5 * (a + c) + np.sqrt(0.25 * (a - c) ** 2 + b * b)
    return np.clip(largest, 0.0, 1.0).astype(np.float32)


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    from wnetcli.segmentation.crf import block_mean

    return block_mean(image, factor)


def multiscale_histogram_gradient(channels: np.ndarray, options: BoundaryOptions) -> np.ndarray:
    """Mean over ``options.histogram_sigmas`` of :func:`histogram_gradient` ** power, on (H, W).

    A scale sigma >= 2 is computed on a grid ``factor = floor(sigma / 2)`` times coarser (capped at
    4) and upsampled bilinearly: the smoothing removes what the coarse grid loses.
    """
    from wnetcli.segmentation.crf import upsample_linear

    height, width = channels.shape[1:]
    total = np.zeros((height, width), dtype=np.float32)
    for sigma in options.histogram_sigmas:
        factor = int(min(4, max(1, sigma // 2)))
        small = _block_mean(channels, factor) if factor > 1 else channels
        grad = histogram_gradient(small, sigma / factor, options.histogram_eps)
        if factor > 1:
            grad = upsample_linear(grad, (height, width), factor)
        total += grad ** np.float32(options.histogram_power)
    return total / len(options.histogram_sigmas)


def lab_histogram_gradient(lab: np.ndarray, options: BoundaryOptions) -> np.ndarray:
    """Brightness and colour histogram gradients (L in 0..100, a and b in -60..60), weighted mean."""
    ranges = ((0.0, 100.0), (-60.0, 60.0), (-60.0, 60.0))
    total = np.zeros(lab.shape[:2], dtype=np.float32)
    for channel, ((low, high), weight) in enumerate(zip(ranges, options.histogram_channels, strict=True)):
        if weight > 0:
            bins = soft_bins(lab[..., channel], options.histogram_bins, low, high)
            total += weight * multiscale_histogram_gradient(bins, options)
    return total / max(sum(options.histogram_channels), 1e-9)
