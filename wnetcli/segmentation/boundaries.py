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

    def __post_init__(self) -> None:
        if self.wnet_weight < 0 or self.colour_weight < 0 or self.wnet_weight + self.colour_weight <= 0:
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
    if not parts:
        raise ValueError("no boundary cue left: probs is None and colour_weight is 0")
    total = sum(weight for weight, _ in parts)
    combined = sum(weight * cue for weight, cue in parts) / total
    return combined.astype(np.float32, copy=False)
