"""Resampling between the resolutions of the pipeline, with one index convention.

Discrete maps (labels, ucm2) live on *block grids*: a grid ``f`` times coarser than an (H, W)
image has ``ceil(H / f) x ceil(W / f)`` cells, cell ``(i // f, j // f)`` holding the mean of
the f x f block of pixels (the image edge-padded to a multiple of f). Going back, pixel
``(i, j)`` takes cell ``(block_index(H, h)[i], block_index(W, w)[j])``. Every discrete grid of
the pipeline is one of these: an image over ``max_size`` (:func:`shrink_factor`) and the coarse
hierarchy of a recipe (``grid.downsample``), so that a cut of the coarse hierarchy is exactly
the enlarged cut of it.

Continuous maps (the network's soft maps and boundaries) are resized bilinearly to any size
(:func:`resize_maps`), as is the image fed to the network (:func:`resize_rgb`), which runs at
the scale it was trained at (:func:`network_size`).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "block_index",
    "block_mean",
    "block_mean_rgb",
    "enlarge_labels",
    "enlarge_ucm2",
    "network_size",
    "resize_maps",
    "resize_rgb",
    "shrink_factor",
    "upsample_linear",
]


def shrink_factor(height: int, width: int, max_size: int | None) -> int:
    """The smallest integer ``f`` whose block grid (:func:`block_mean`) has a longer side of at
    most ``max_size`` pixels; 1 when the image fits (or ``max_size`` is None)."""
    longest = max(height, width)
    if max_size is None or longest <= max_size:
        return 1
    return math.ceil(longest / max_size)


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor x factor`` blocks of the last two axes (edge-padded to a multiple).

    Parameters
    ----------
    image : (..., H, W) float ndarray
    factor : int

    Returns
    -------
    (..., ceil(H / factor), ceil(W / factor)) float32 ndarray
    """
    if factor == 1:
        return image.astype(np.float32, copy=False)
    height, width = image.shape[-2:]
    pad_h, pad_w = -height % factor, -width % factor
    if pad_h or pad_w:
        pad = [(0, 0)] * (image.ndim - 2) + [(0, pad_h), (0, pad_w)]
        image = np.pad(image, pad, mode="edge")
    # Summing the factor**2 strided views is several times faster than a reshape + mean over
    # two non-adjacent axes.
    total = np.zeros(
        (*image.shape[:-2], image.shape[-2] // factor, image.shape[-1] // factor), dtype=np.float32
    )
    for i in range(factor):
        for j in range(factor):
            total += image[..., i::factor, j::factor]
    total *= np.float32(1.0 / (factor * factor))
    return total


def block_mean_rgb(rgb: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, 3) uint8 -> its ``factor x factor`` block means, (ceil(H/f), ceil(W/f), 3) uint8."""
    if factor == 1:
        return rgb
    means = block_mean(np.moveaxis(rgb, -1, 0).astype(np.float32), factor)
    return np.moveaxis(np.round(means), 0, -1).astype(np.uint8)


def _linear_taps(size_out: int, size_in: int, factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of the bilinear upsampling that inverts :func:`block_mean`'s grid."""
    centre = (np.arange(size_out, dtype=np.float32) + 0.5) / factor - 0.5
    centre = np.clip(centre, 0, size_in - 1)
    low = np.floor(centre).astype(np.intp)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (centre - low).astype(np.float32)


def upsample_linear(image: np.ndarray, shape: tuple[int, int], factor: int) -> np.ndarray:
    """Bilinear upsampling of the last two axes from a :func:`block_mean` grid to ``shape``.

    Parameters
    ----------
    image : (..., h, w) float32 ndarray
    shape : (H, W)
        The full-resolution size; ``h == ceil(H / factor)``.
    factor : int

    Returns
    -------
    (..., H, W) float32 ndarray
    """
    if factor == 1:
        return image
    y0, y1, fy = _linear_taps(shape[0], image.shape[-2], factor)
    x0, x1, fx = _linear_taps(shape[1], image.shape[-1], factor)
    rows = image[..., y0, :] * (1 - fy)[:, None] + image[..., y1, :] * fy[:, None]
    return rows[..., x0] * (1 - fx) + rows[..., x1] * fx


def block_index(full: int, small: int) -> np.ndarray:
    """For each of ``full`` pixels along an axis, its cell on a grid of ``small`` cells:
    ``i * small // full``, which is cell ``i // f`` of the ``ceil(full / f)`` block grids of
    :func:`block_mean`. With ``small <= full`` it is non-decreasing, steps by 0 or 1 and skips
    no cell, which :func:`enlarge_labels` and :func:`enlarge_ucm2` rely on."""
    return np.arange(full) * small // full


def enlarge_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-cell enlargement of an (h, w) label map to ``shape`` (H, W), H >= h, W >= w.

    Pixel (i, j) takes cell ``(block_index(H, h)[i], block_index(W, w)[j])``. No coarse row or
    column is skipped, so two regions touch in the result exactly when they touch in
    ``labels`` (the region adjacency graph is unchanged) and each region stays 4-connected.
    """
    height, width = shape
    if height < labels.shape[0] or width < labels.shape[1]:
        raise ValueError(f"cannot enlarge {labels.shape} labels to the smaller {shape}")
    rows = block_index(height, labels.shape[0])
    cols = block_index(width, labels.shape[1])
    return labels[rows[:, None], cols[None, :]]


def enlarge_ucm2(ucm2: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The ucm2 of the :func:`enlarge_labels` enlargement to ``shape`` (H, W).

    A border between two pixels of the enlarged grid that fall in different coarse pixels
    takes the coarse border's level; one inside a coarse pixel is 0. So every cut of the
    result is the enlarged cut of ``ucm2`` at the same threshold.

    Parameters
    ----------
    ucm2 : (2h+1, 2w+1) float ndarray
    shape : (H, W) with H >= h and W >= w

    Returns
    -------
    (2H+1, 2W+1) float32 ndarray, junctions and outer frame as
    :func:`wnetcli.ucm.edges_to_ucm2` draws them
    """
    from wnetcli.ucm import edges_to_ucm2

    height, width = shape
    small_h, small_w = (ucm2.shape[0] - 1) // 2, (ucm2.shape[1] - 1) // 2
    if height < small_h or width < small_w:
        raise ValueError(f"cannot enlarge a {small_h}x{small_w} ucm2 to the smaller {shape}")
    right, down = ucm2[1:-1:2, 2:-1:2], ucm2[2:-1:2, 1:-1:2]  # (h, w-1), (h-1, w) border levels
    rows, cols = block_index(height, small_h), block_index(width, small_w)
    # Full-grid pairs that straddle two coarse pixels (consecutive: the index skips none).
    col_steps = np.flatnonzero(cols[1:] != cols[:-1])
    row_steps = np.flatnonzero(rows[1:] != rows[:-1])
    big_right = np.zeros((height, width - 1), dtype=np.float32)
    big_right[:, col_steps] = right[rows[:, None], cols[col_steps][None, :]]
    big_down = np.zeros((height - 1, width), dtype=np.float32)
    big_down[row_steps, :] = down[rows[row_steps][:, None], cols[None, :]]
    return edges_to_ucm2(big_right, big_down)


def network_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """The (height, width) the network runs at: the input's, shrunk (never enlarged) so that
    the shorter side is at most ``short_side``, the scale the model was trained at
    (:attr:`wnetcli.model_info.ModelInfo.short_side`; 0: no such limit)."""
    shorter = min(height, width)
    if short_side <= 0 or shorter <= short_side:
        return height, width
    scale = short_side / shorter
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to ``size`` = (height, width) (bilinear, antialiased when shrinking)."""
    from PIL import Image

    if rgb.shape[:2] == size:
        return rgb
    image = Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image)


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize (C, h, w) float32 maps to (C, *size), channel by channel; soft maps
    that sum to 1 over C still do."""
    from PIL import Image

    if maps.shape[1:] == size:
        return maps
    out = np.empty((maps.shape[0], *size), dtype=np.float32)
    for c, channel in enumerate(maps):
        image = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))  # mode "F"
        out[c] = np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return out
