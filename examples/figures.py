"""The README's pictures: input, overlay, hierarchy and soft segmentation of example photos.

Runs the library API (a recipe, ``default`` unless ``--recipe`` says otherwise, and the shipped
model for the soft segmentation) and writes one PNG per photo to ``<out>/<stem>.png``
(``docs/images`` by default): the input, its boundaries at the default level, the hierarchy (the
ucm2 drawn dark where boundaries are strong) and the W-Net's argmax, side by side::

    .venv/bin/python examples/figures.py examples/images/coffee.jpg examples/images/astronaut.jpg
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wnetcli.errors import InputError  # noqa: E402
from wnetcli.images import read_rgb  # noqa: E402
from wnetcli.segmentation import Segmenter, SegmentOptions, load_recipe  # noqa: E402
from wnetcli.segmentation.outputs import boundary_mask, colorize  # noqa: E402

PANEL_WIDTH = 320
#: Yellow: the tool's red overlay vanishes on the red mug and saucer at this size.
FIGURE_BOUNDARY_RGB = (255, 225, 0)


def hierarchy_picture(ucm2: np.ndarray) -> np.ndarray:
    """(2H+1, 2W+1) ucm2 -> (H, W, 3) uint8: white background, boundaries darker as they get stronger."""
    # Each pixel shows the stronger of the borders to its right and below it.
    strength = np.maximum(ucm2[1::2, 2::2], ucm2[2::2, 1::2])
    grey = (255 * (1 - np.clip(strength, 0, 1) ** 0.7)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def shrink(array: np.ndarray, size: tuple[int, int], resample=Image.Resampling.LANCZOS) -> np.ndarray:
    """An image or label map resized to ``size`` (width, height)."""
    return np.asarray(Image.fromarray(array).resize(size, resample))


def figure(rgb: np.ndarray, result) -> np.ndarray:
    """(h, 4 * PANEL_WIDTH + 12, 3) uint8: input | boundaries | hierarchy | argmax, side by side."""
    size = (PANEL_WIDTH, round(rgb.shape[0] * PANEL_WIDTH / rgb.shape[1]))
    small_rgb = shrink(rgb, size)
    # Boundaries drawn at panel size, so that they stay one clear pixel wide.
    overlay = small_rgb.copy()
    overlay[boundary_mask(shrink(result.labels.astype(np.int32), size, Image.Resampling.NEAREST))] = (
        FIGURE_BOUNDARY_RGB
    )
    panels = [
        small_rgb,
        overlay,
        shrink(hierarchy_picture(result.ucm2), size),
        shrink(colorize(result.probs.argmax(axis=0) + 1), size, Image.Resampling.NEAREST),
    ]
    gap = np.full((size[1], 4, 3), 255, dtype=np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2], gap, panels[3]], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="photos to draw")
    parser.add_argument("--recipe", default="default", metavar="NAME|FILE", help="the post-processing recipe")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="folder of the PNGs")
    args = parser.parse_args()
    try:
        recipe = load_recipe(args.recipe)
    except InputError as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    # soft_maps: the last panel shows the network's argmax, whatever the recipe reads.
    segmenter = Segmenter(None, SegmentOptions(recipe=recipe, soft_maps=True, device="cpu"))
    for path in args.images:
        rgb = read_rgb(path)
        result = segmenter.segment(rgb)
        target = args.out / f"{path.stem}.png"
        Image.fromarray(figure(rgb, result)).save(target, optimize=True)
        print(f"{target}: {result.regions} regions")


if __name__ == "__main__":
    main()
