"""Output files of ``wnet segment``: their names, their encodings, and atomic writing.

For an input ``<relative dir>/<stem>.<ext>`` under the output folder:

========== ================================ =====================================================
kind       file                             content
========== ================================ =====================================================
labels     ``<stem>.png``                   label map, labels from 1, uint8 (or uint16 beyond 255)
overlay    ``<stem>.overlay.png``           the image with region boundaries drawn in red
color      ``<stem>.color.png``             each region in its own colour
ucm        ``<stem>.ucm.png`` / ``.ucm.npy`` ucm2 (2H+1, 2W+1): 16-bit PNG (value / 65535) or float32
probs      ``<stem>.probs.npy``             (K, H, W) float32 soft segmentation
boundaries ``<stem>.boundaries.png``        the network's boundary map, 8-bit grey (255: strength 1)
========== ================================ =====================================================

:func:`read_ucm` reads either ucm encoding back (``wnet evaluate --results`` uses it). Every
file goes through :mod:`wnetcli.atomic`, so an interrupted run never leaves a partial file
under a final name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from wnetcli.atomic import atomic_path
from wnetcli.errors import InputError

#: Optional outputs selectable with ``--save``.
EXTRA_KINDS = ("overlay", "color", "ucm", "probs", "boundaries")
UCM_FORMATS = ("png", "npy")
_UCM_SCALE = 65535.0
_BOUNDARY_RGB = np.array([255, 0, 0], dtype=np.uint8)


def output_paths(
    out_dir: Path, relative: Path, save: Iterable[str] = (), *, ucm_format: str = "png"
) -> dict[str, Path]:
    """Map each output kind (``"labels"`` plus the kinds in ``save``) to its file path.

    Parameters
    ----------
    out_dir : Path
        The output folder.
    relative : Path
        The input's path relative to its input folder (``sub/img.jpg``); the outputs mirror it.
    save : iterable of str
        Any of :data:`EXTRA_KINDS`.
    ucm_format : {"png", "npy"}
    """
    if ucm_format not in UCM_FORMATS:
        raise InputError(f"ucm format must be one of {', '.join(UCM_FORMATS)}, got {ucm_format!r}")
    base = Path(out_dir) / Path(relative).parent
    stem = Path(relative).stem
    names = {
        "labels": f"{stem}.png",
        "overlay": f"{stem}.overlay.png",
        "color": f"{stem}.color.png",
        "ucm": f"{stem}.ucm.{ucm_format}",
        "probs": f"{stem}.probs.npy",
        "boundaries": f"{stem}.boundaries.png",
    }
    paths = {"labels": base / names["labels"]}
    for kind in save:
        if kind not in EXTRA_KINDS:
            raise InputError(f"--save accepts {', '.join(EXTRA_KINDS)}; got {kind!r}")
        paths[kind] = base / names[kind]
    return paths


def labels_to_png_array(labels: np.ndarray) -> np.ndarray:
    """(H, W) labels 1..n -> uint8 when n <= 255, else uint16 (PNG has no wider greyscale)."""
    top = int(labels.max(initial=0))
    if labels.min(initial=0) < 0 or top > 65535:
        raise ValueError(f"labels must be in 0..65535 to fit a PNG, got {labels.min()}..{top}")
    return labels.astype(np.uint8 if top <= 255 else np.uint16)


def ucm_to_uint16(ucm2: np.ndarray) -> np.ndarray:
    """ucm2 float in [0, 1] -> uint16 0..65535 for a 16-bit PNG (rounded)."""
    return np.round(np.clip(ucm2, 0.0, 1.0) * _UCM_SCALE).astype(np.uint16)


def read_ucm(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a ucm2 written by :func:`write_outputs` (``.png`` or ``.npy``) as float32 in [0, 1].

    Returns
    -------
    (2H+1, 2W+1) float32 ndarray

    Raises
    ------
    InputError
        A missing or unreadable file, or one that holds no ucm2 (not a 2-D map of odd sides,
        such as a label map or a photo).
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            ucm2 = np.load(path, allow_pickle=False).astype(np.float32)
        else:
            with Image.open(path) as image:
                if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
                    raise InputError(f"{path} is not a ucm (a 16-bit PNG), but a {image.mode} image")
                ucm2 = (np.asarray(image, dtype=np.float64) / _UCM_SCALE).astype(np.float32)
    except InputError:
        raise
    except (OSError, ValueError) as exc:  # missing, truncated, not an image, a pickled .npy
        raise InputError(f"cannot read the ucm {path}: {exc}") from exc
    if ucm2.ndim != 2 or ucm2.shape[0] % 2 == 0 or ucm2.shape[1] % 2 == 0:
        raise InputError(f"{path} is not a ucm2: shape {ucm2.shape}, expected (2H+1, 2W+1)")
    return ucm2


def boundary_mask(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose right or lower neighbour has another label."""
    mask = np.zeros(labels.shape, dtype=bool)
    mask[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    mask[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return mask


# One line pixel per this many pixels of the longer side: a 1-pixel line vanishes when a
# 4000 x 3000 photo is shown scaled down to a screen (5 px there), while a BSDS-sized image
# (481 x 321) keeps its exact 1-pixel boundaries.
_PIXELS_PER_LINE_PIXEL = 800


def boundary_line_width(shape: tuple[int, ...]) -> int:
    """Width in pixels of the overlay's boundary lines for an image of ``shape`` (H, W, ...)."""
    return max(1, round(max(shape[:2]) / _PIXELS_PER_LINE_PIXEL))


def overlay_boundaries(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: ``rgb`` with the boundaries of ``labels`` ((H, W) int) painted red.

    The lines are :func:`boundary_line_width` pixels wide, so that they stay visible when a
    large image is viewed scaled down.
    """
    mask = boundary_mask(labels)
    width = boundary_line_width(labels.shape)
    if width > 1:
        from scipy import ndimage

        # A maximum filter over a square is a binary dilation by that square; scipy runs it as
        # separable 1-D passes, faster than binary_dilation on large masks (docs/experiments.md).
        mask = ndimage.maximum_filter(mask, size=width)
    out = rgb.copy()
    out[mask] = _BOUNDARY_RGB
    return out


def colorize(labels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: one colour per label, the same for a label in every image.

    Colours come from a fixed-seed generator so that label 3 is the same colour in every
    output; they are kept away from black so that no region looks like missing data.
    """
    palette = np.random.default_rng(0).integers(
        48, 256, size=(int(labels.max(initial=0)) + 1, 3), dtype=np.uint8
    )
    return palette[labels]


# zlib level 1 rather than Pillow's 6: a batch tool writes several PNGs per image, and level 1
# writes a 16-bit ucm markedly faster for a somewhat larger file (docs/experiments.md).
_PNG_COMPRESS_LEVEL = 1


# atomic_path, not atomic_open: the rename already makes a killed run leave no partial file
# under a final name, and skipping atomic_open's fsync saves a disk flush per file (several
# per image), which only a power cut would need.
def _write_png(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)


def _write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def write_outputs(paths: dict[str, Path], rgb: np.ndarray, result) -> None:
    """Write each output in ``paths`` (from :func:`output_paths`) atomically.

    Parameters
    ----------
    paths : dict of str -> Path
        The kinds to write and where; kinds not in it are not written.
    rgb : ndarray, shape (H, W, 3), uint8
        The input image (for the overlay).
    result : SegmentationResult
        ``labels`` (H, W), ``ucm2`` (2H+1, 2W+1), ``probs`` (K, H, W).

    Raises
    ------
    OutputError
        When a file cannot be written (a full disk: :attr:`~wnetcli.errors.OutputError.no_room`);
        the files written before it stay, the label map last of all.
    """
    writers = {
        "labels": lambda p: _write_png(p, labels_to_png_array(result.labels)),
        "overlay": lambda p: _write_png(p, overlay_boundaries(rgb, result.labels)),
        "color": lambda p: _write_png(p, colorize(result.labels)),
        "ucm": lambda p: (
            _write_npy(p, result.ucm2.astype(np.float32))
            if p.suffix == ".npy"
            else _write_png(p, ucm_to_uint16(result.ucm2))
        ),
        "probs": lambda p: _write_npy(p, result.probs.astype(np.float32)),
        "boundaries": lambda p: _write_png(p, np.round(np.clip(result.boundaries, 0, 1) * 255).astype(np.uint8)),
    }
    # The label map last: its presence is what marks an image as done for a resumed run.
    for kind in sorted(paths, key=lambda k: k == "labels"):
        writers[kind](paths[kind])
