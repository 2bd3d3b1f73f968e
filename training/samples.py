"""Sample sheets: a PNG grid that lets a person watch the W-Net learn.

One row per sample image: the input, the encoder's argmax segmentation in label colours (the
same colours as ``wnet segment --save color``), and the decoder's reconstruction.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.model import INPUT_CENTER, INPUT_SCALE, WNet
from wnetcli.atomic import atomic_path

_GAP = 4  # white pixels between tiles


def sample_rows(model: WNet, images: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Run ``model`` in eval mode on ``images`` ((N, 3, H, W) float RGB 0..255, on the model's device).

    Returns, per image, ``(input, labels, reconstruction)``: (H, W, 3) uint8, (H, W) int64 argmax
    labels in 0..K-1, and (H, W, 3) uint8. The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probs, reconstruction = model(images)
    finally:
        model.train(was_training)
    rgb = images.detach().float().clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    labels = probs.argmax(dim=1).cpu().numpy()
    rebuilt = (reconstruction.detach().float() * INPUT_SCALE + INPUT_CENTER).clamp(0, 255).round()
    rebuilt = rebuilt.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(zip(rgb, labels, rebuilt, strict=True))


def sample_sheet(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Tile :func:`sample_rows` output into one (rows*(H+gap)-gap, 3*(W+gap)-gap, 3) uint8 image."""
    from wnetcli.segmentation.outputs import colorize

    height, width = rows[0][1].shape
    sheet = np.full((len(rows) * (height + _GAP) - _GAP, 3 * (width + _GAP) - _GAP, 3), 255, dtype=np.uint8)
    for r, (rgb, labels, rebuilt) in enumerate(rows):
        for c, tile in enumerate((rgb, colorize(labels), rebuilt)):
            top, left = r * (height + _GAP), c * (width + _GAP)
            sheet[top : top + height, left : left + width] = tile
    return sheet


def write_sample_sheet(path: str | os.PathLike[str], model: WNet, images: torch.Tensor) -> Path:
    """Write the sample sheet of ``model`` on ``images`` to ``path`` (PNG, atomically) and return the path.

    A failed write (a full disk) raises :class:`~wnetcli.errors.OutputError` naming ``path``.
    """
    target = Path(path)
    sheet = Image.fromarray(sample_sheet(sample_rows(model, images)))  # before the write: only I/O inside
    with atomic_path(target) as tmp:
        sheet.save(tmp, format="PNG")
    return target
