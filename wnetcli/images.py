"""Finding and reading images as RGB arrays, without torch.

Every reader in wnet (training data, ``segment``, ``evaluate``) goes through
:func:`read_rgb`, so that EXIF orientation, grey, palette, RGBA and 16-bit images are
handled the same way everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from wnetcli.errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})


def is_image_path(path: Path) -> bool:
    """True when ``path`` has one of :data:`IMAGE_SUFFIXES` (case-insensitive) and is not hidden."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def find_images(
    paths: Iterable[str | os.PathLike[str]],
    *,
    recursive: bool = True,
    exclude: Iterable[str | os.PathLike[str]] = (),
) -> list[tuple[Path, Path]]:
    """List the images named by ``paths`` (files or folders), sorted, without duplicates.

    Returns ``(image_path, relative_path)`` pairs; ``relative_path`` is the path below the
    folder it was found in (just the file name for a file given directly), which callers
    use to mirror the input tree in their outputs. Images inside an ``exclude`` folder are
    left out of the folder walks (a run's own output folder inside its input folder, whose
    overlays would otherwise be segmented again on every rerun); a file named directly, and a
    folder that is itself inside an ``exclude`` folder, are always searched. A path that does
    not exist raises :class:`InputError`.
    """
    excluded = [Path(folder).resolve() for folder in exclude]
    found: dict[Path, Path] = {}
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise InputError(f"input not found: {root}")
        if root.is_file():
            found.setdefault(root.resolve(), Path(root.name))
            continue
        skipped = [folder for folder in excluded if not root.resolve().is_relative_to(folder)]
        walker = root.rglob("*") if recursive else root.glob("*")
        for candidate in walker:
            if candidate.is_file() and is_image_path(candidate):
                resolved = candidate.resolve()
                if not any(resolved.is_relative_to(folder) for folder in skipped):
                    found.setdefault(resolved, candidate.relative_to(root))
    return sorted(((p, rel) for p, rel in found.items()), key=lambda pair: str(pair[1]))


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert a Pillow image of any mode to an (H, W, 3) uint8 RGB array (0..255).

    EXIF orientation is applied. 16-bit and 32-bit integer images are scaled down by their
    bit depth (not by their own maximum, so a dark 16-bit image stays dark); float images
    are taken to be in 0..1. Alpha is dropped (composited on nothing, as most viewers
    show a segmentation input).
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in {"I;16", "I;16B", "I;16L", "I;16N", "I"}:
        values = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) <= 65535 else 2**32 - 1
        grey = np.clip(np.round(values / scale * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.round(values * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGBA" if "A" in image.mode or image.mode == "P" else "RGB").convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array; raise :class:`InputError` if unreadable."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb_array(image)
    except FileNotFoundError as exc:
        raise InputError(f"image not found: {path}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from exc
