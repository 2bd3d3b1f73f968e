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

# .gif is read as its first frame (what Pillow gives on open): listed here so that a folder walk
# finds what naming the file directly already segments.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif"})


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

    A broken symbolic link (dangling, a loop) with an image suffix inside a folder is listed (as
    the link's own path, unresolved), so that reading it fails with a message naming it
    (:func:`read_rgb`) instead of the file vanishing from the run.
    """
    excluded = [Path(folder).resolve() for folder in exclude]
    found: dict[Path, Path] = {}
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise InputError(f"input not found: {root}{_dangling_hint(root)}")
        if root.is_file():
            found.setdefault(root.resolve(), Path(root.name))
            continue
        skipped = [folder for folder in excluded if not root.resolve().is_relative_to(folder)]
        walker = root.rglob("*") if recursive else root.glob("*")
        for candidate in walker:
            if not is_image_path(candidate):
                continue
            if _is_broken_link(candidate):
                # Keyed by the link itself: its target cannot be reached, and read_rgb must see
                # the link to say what is wrong.
                resolved = candidate.absolute()
            elif candidate.is_file():
                resolved = candidate.resolve()
            else:
                continue
            if not any(resolved.is_relative_to(folder) for folder in skipped):
                found.setdefault(resolved, candidate.relative_to(root))
    return sorted(((p, rel) for p, rel in found.items()), key=lambda pair: str(pair[1]))


def _is_broken_link(path: Path) -> bool:
    """True when ``path`` is a symbolic link whose target cannot be reached (missing, a loop, no permission)."""
    if not path.is_symlink():
        return False
    try:
        path.stat()
    except OSError:
        return True
    return False


def _dangling_hint(path: Path) -> str:
    """``": dangling symbolic link to TARGET"`` when ``path`` is a link to nothing, else ``""``."""
    try:
        if not path.is_symlink():
            return ""
        path.stat()
    except FileNotFoundError:
        try:
            return f": dangling symbolic link to {os.readlink(path)}"
        except OSError:
            return ": dangling symbolic link"
    except OSError:  # a loop or a permission error: the caller's own message says which
        return ""
    return ""


def _unreadable(path: Path, exc: BaseException) -> InputError:
    """The one-line error for an image file that Pillow could not open or decode."""
    if isinstance(exc, FileNotFoundError):
        hint = _dangling_hint(path)
        return InputError(f"cannot read image {path}{hint}" if hint else f"image not found: {path}")
    return InputError(f"cannot read image {path}: {exc}")


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
    """Read an image file as an (H, W, 3) uint8 RGB array; raise :class:`InputError` if unreadable.

    Animated or multi-page files (GIF, TIFF, WebP) give their first frame.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            # Pillow opens on frame 0; seek explicitly so that the first frame is a stated
            # contract rather than a side effect of how the file was opened.
            image.seek(0)
            image.load()
            return to_rgb_array(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise _unreadable(path, exc) from exc


# EXIF orientations 5 to 8 turn the image by 90 degrees: read_rgb swaps height and width.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})


def read_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """The (H, W) that :func:`read_rgb` gives for ``path``, from the header alone (EXIF orientation applied).

    Raises :class:`InputError` (as :func:`read_rgb` does) when the file cannot be opened.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(0x0112) in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
            return height, width
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise _unreadable(path, exc) from exc
