"""Mean-field CRF smoothing of soft segmentations, in NumPy/SciPy (no compiled CRF package).

A fully connected CRF (Kraehenbuehl and Koltun 2011) with unary ``-log p``, an appearance
(position + colour) kernel and a smoothness (position) kernel, Potts compatibility, solved by a
few mean-field iterations. Two approximations keep it fast enough for 481 x 321 images on one
CPU core:

- the kernels are truncated to a local window, and the messages are computed on a grid
  downsampled by ``downsample`` (block means of the image and of the probabilities), where the
  appearance kernel is one sparse matrix built once per image;
- the last update combines the full-resolution unary with the (bilinearly upsampled) low-res
  message, so that where the network is sure its pixel-accurate boundaries are kept.

``pydensecrf2`` was not used: it has no wheel for this platform (checked with
``pip download --only-binary :all: pydensecrf2``).

References
----------
.. [1] P. Kraehenbuehl and V. Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian
       Edge Potentials", NIPS 2011.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from wnetcli.errors import InputError
from wnetcli.options import check_field_types
from wnetcli.segmentation.grids import block_mean, upsample_linear

# scipy.ndimage and scipy.sparse are imported where they are used: they are slow to import
# (docs/experiments.md, start-up), and the main process of a folder run (decoding and the
# network) never needs them.
if TYPE_CHECKING:
    from scipy import sparse

__all__ = ["CRFOptions", "dense_crf"]

# Probabilities are clipped here before the log (and before the last update's product), so
# a hard 0 from the network is a large but finite unary cost that the CRF can still overrule.
_EPS = 1e-6
# Lowest (log) message of the last update: exp(-60) * _EPS is still a normal float32.
_MESSAGE_FLOOR = -60.0


@dataclass(frozen=True)
class CRFOptions:
    """Kernel widths and weights of :func:`dense_crf`.

    The messages are normalised by the spatial kernel's sum, so each weight is the log-odds
    bonus a label receives when every neighbour in the window agrees with it (and, for the
    appearance kernel, has the same colour).

    Attributes:
        iterations: mean-field updates (0 returns the input unchanged).
        appearance_weight: weight of the appearance kernel (DenseCRF's ``w1``).
        appearance_xy: its spatial standard deviation in full-resolution pixels (``theta_alpha``).
        appearance_lab: its colour standard deviation in CIELAB units (``theta_beta``).
        smoothness_weight: weight of the position-only kernel (``w2``).
        smoothness_xy: its standard deviation in full-resolution pixels (``theta_gamma``).
        downsample: the messages are computed on a grid this many times coarser.
        radius: half-width, in low-res cells, of the appearance kernel's window; the kernel
            reaches ``radius * downsample`` full-resolution pixels.
    """

    iterations: int = 5
    appearance_weight: float = 4.0
    appearance_xy: float = 12.0
    appearance_lab: float = 10.0
    smoothness_weight: float = 1.0
    smoothness_xy: float = 3.0
    downsample: int = 4
    radius: int = 3

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("iterations", "radius"):
            if getattr(self, name) < 0:
                raise InputError(f"CRFOptions.{name} must be >= 0, got {getattr(self, name)}")
        if self.downsample < 1:
            raise InputError(f"CRFOptions.downsample must be >= 1, got {self.downsample}")
        for name in ("appearance_xy", "appearance_lab", "smoothness_xy"):
            if getattr(self, name) <= 0:
                raise InputError(f"CRFOptions.{name} must be > 0, got {getattr(self, name)}")


def _overlap(size: int, shift: int) -> tuple[slice, slice]:
    """Slices (source, neighbour) of an axis of ``size`` cells whose neighbour at ``shift`` exists."""
    length = max(0, size - abs(shift))
    start = max(0, -shift)
    return slice(start, start + length), slice(start + shift, start + shift + length)


def _appearance_matrix(lab: np.ndarray, options: CRFOptions) -> sparse.csr_matrix:
    """Sparse (n, n) appearance kernel on the low-res grid, rows normalised by the spatial sum.

    ``lab`` is the (h, w, 3) low-res CIELAB image; n = h * w. The centre (self) term is left out,
    as in the fully connected CRF.
    """
    from scipy import sparse

    h, w = lab.shape[:2]
    index = np.arange(h * w).reshape(h, w)
    scale = options.downsample / options.appearance_xy
    rows, cols, vals = [], [], []
    spatial_sum = np.zeros((h, w), dtype=np.float32)
    r = options.radius
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx == 0:
                continue
            spatial = np.float32(np.exp(-0.5 * (dy * dy + dx * dx) * scale * scale))
            # The part of the grid whose neighbour at (dy, dx) exists.
            (ys, yd), (xs, xd) = _overlap(h, dy), _overlap(w, dx)
            diff = lab[ys, xs] - lab[yd, xd]
            colour = np.exp(-0.5 * np.einsum("ijc,ijc->ij", diff, diff) / options.appearance_lab**2)
            rows.append(index[ys, xs].ravel())
            cols.append(index[yd, xd].ravel())
            vals.append((spatial * colour).astype(np.float32).ravel())
            spatial_sum[ys, xs] += spatial
    matrix = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(h * w, h * w)
    )
    # Normalising by the spatial (not the bilateral) sum: a pixel unlike all its neighbours
    # receives a weak message instead of an amplified one.
    norm = 1.0 / np.maximum(spatial_sum.ravel(), 1e-6)
    return sparse.diags(norm.astype(np.float32)) @ matrix


def _softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    logits = logits - logits.max(axis=axis, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=axis, keepdims=True)
    return logits


def _message(
    q: np.ndarray,
    appearance: sparse.csr_matrix,
    shape: tuple[int, int, int],
    sigma: float,
    options: CRFOptions,
) -> np.ndarray:
    """The mean-field message (n, K) of the marginals ``q`` (n, K): both kernels, Potts weights."""
    message = options.appearance_weight * (appearance @ q)
    if options.smoothness_weight:
        from scipy import ndimage as ndi

        smooth = ndi.gaussian_filter(q.T.reshape(shape), sigma=(0, sigma, sigma), mode="nearest")
        message += options.smoothness_weight * smooth.reshape(shape[0], -1).T
    return message


def dense_crf(rgb: np.ndarray, probs: np.ndarray, options: CRFOptions | None = None) -> np.ndarray:
    """Smooth a soft segmentation with a (windowed, downsampled) fully connected CRF.

    The colour term compares CIELAB values (``skimage.color.rgb2lab`` of the block-averaged
    image), in which Euclidean distances follow perceived colour differences.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 ndarray
        The image.
    probs : (K, H, W) float ndarray
        Per-pixel class probabilities (softmax over K).
    options : CRFOptions, optional

    Returns
    -------
    (K, H, W) float32 ndarray
        The mean-field marginals, summing to 1 over K.

    Raises
    ------
    ValueError
        If the shapes of ``lab`` and ``probs`` do not match.
    """
    options = options or CRFOptions()
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or rgb.shape != (*probs.shape[1:], 3):
        raise ValueError(
            f"probs must be (K, H, W) and rgb (H, W, 3) of the same size, got {probs.shape}, {rgb.shape}"
        )
    if options.iterations == 0 or probs.shape[0] == 1:
        return probs.copy()
    k, height, width = probs.shape
    s = options.downsample
    low_probs = block_mean(probs, s)  # (K, h, w)
    h, w = low_probs.shape[1:]
    # Pixels in rows, classes in columns: the layout a CSR matrix times a dense matrix wants.
    unary = np.log(np.clip(low_probs, _EPS, 1.0)).reshape(k, h * w).T.copy()
    from skimage.color import rgb2lab

    low_rgb = np.moveaxis(block_mean(np.moveaxis(rgb, -1, 0), s), 0, -1) / np.float32(255)
    appearance = _appearance_matrix(rgb2lab(low_rgb).astype(np.float32), options)
    sigma = options.smoothness_xy / s
    # Smoothing a constant gives back the constant only up to the border mode: 'nearest' keeps
    # it exact, so the Gaussian message needs no normalisation.
    q = _softmax(unary.copy(), axis=1)
    for _ in range(options.iterations):
        q = _softmax(unary + _message(q, appearance, (k, h, w), sigma, options), axis=1)
    # Last message from the final low-res marginals, applied to the full-resolution unary:
    # softmax(log p + m) = p exp(m) / sum_k p exp(m), which needs no log of the (K, H, W)
    # probabilities and no per-pixel maximum (a measurable part of the CRF's time:
    # docs/experiments.md, the CRF's last update). Subtracting each
    # cell's largest message changes every class of a pixel by the same amount after the
    # (convex) bilinear upsampling, so the softmax is unchanged and exp(m) <= 1 cannot
    # overflow; the floor keeps it from underflowing to 0 for every class with absurdly
    # large weights.
    message = _message(q, appearance, (k, h, w), sigma, options)
    message -= message.max(axis=1, keepdims=True)
    up = upsample_linear(np.ascontiguousarray(message.T).reshape(k, h, w), (height, width), s)
    full = np.exp(np.maximum(up, np.float32(_MESSAGE_FLOOR), out=up), out=up)
    full *= np.clip(probs, _EPS, 1.0)
    full /= full.sum(axis=0, keepdims=True)
    return full.astype(np.float32, copy=False)
