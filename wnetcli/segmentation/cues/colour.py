"""Colour cue: multi-scale CIELAB gradients, and the CIELAB conversion the cues share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wnetcli.errors import InputError
from wnetcli.segmentation.cues.base import Cue, ImageContext

# scipy.ndimage is imported where it is used: it is slow to import (docs/experiments.md, start-up),
# and the main process of a folder run (decoding and the network) never needs it.

__all__ = ["LabGradient", "colour_gradient", "gradient", "rgb_to_lab"]


@dataclass(frozen=True)
class LabGradient(Cue):
    """Boundary cue: the image's colour edges at several scales (:func:`colour_gradient`).

    Attributes:
        sigmas: Gaussian scales (image pixels) of the gradients, averaged.
        contrast: the CIELAB contrast (Delta E) of a step edge that maps to ``1 - 1/e``
            (about 0.63): the cue is ``1 - exp(-g / contrast)`` for a gradient ``g`` in Delta E.
    """

    name = "lab_gradient"
    gives = frozenset({"boundary"})

    sigmas: tuple[float, ...] = (1.0, 2.0, 4.0)
    contrast: float = 40.0

    def check(self) -> None:
        self._positive_scales("sigmas")
        if not self.contrast > 0:
            raise InputError(f"LabGradient.contrast must be > 0, got {self.contrast}")

    def boundary(self, context: ImageContext) -> np.ndarray:
        return colour_gradient(context.lab, context.scales_on_grid(self.sigmas), self.contrast)


# Peak of sigma * |d/dx (G_sigma * step)| for a unit step: 1 / sqrt(2 pi). Dividing by it makes
# the colour cue of a step edge equal its CIELAB contrast at every scale.
_STEP_PEAK = 1.0 / np.sqrt(2.0 * np.pi)


def gradient(values: np.ndarray, axis: int) -> np.ndarray:
    """``np.gradient(values, axis=axis)`` (central differences, one-sided at the ends), and zeros
    along an axis of length 1, where np.gradient raises."""
    if values.shape[axis] < 2:
        return np.zeros_like(values)
    return np.gradient(values, axis=axis)


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
        dy, dx = (gradient(smooth, axis) for axis in (1, 2))
        total += np.sqrt((dy * dy + dx * dx).sum(axis=0)) * np.float32(sigma / _STEP_PEAK)
    total /= len(sigmas)
    return (1.0 - np.exp(-total / contrast)).astype(np.float32)


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
