"""Training data: finding the images, random resized crops and flips, one batch per step.

Every step's batch is a pure function of ``(seed, step, rank)``: the image indices, crop boxes
and flips come from a NumPy generator seeded with those three numbers. Resuming a run therefore
needs only the step, a DataLoader's worker count cannot change the data, and each process of a
distributed run draws its own images.

Small data sets are decoded once into memory (uint8), so that CPU training is not bound by JPEG
decoding; larger ones (VOC2012 has 17k images) are decoded on the fly in DataLoader workers.
"""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.config import TrainConfig
from wnetcli.errors import DataError, InputError
from wnetcli.images import find_images, read_rgb
from wnetcli.workers import STOP_SIGNALS

#: Where a VOC tree keeps its photos, relative to the folder given to ``--data``, most specific first.
VOC_IMAGE_DIRS = (Path("VOCdevkit/VOC2012/JPEGImages"), Path("VOC2012/JPEGImages"), Path("JPEGImages"))

Warn = Callable[[str], None]


def _default_warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def resolve_image_root(path: str | os.PathLike[str]) -> Path:
    """The folder to search for training images: a VOC tree's ``JPEGImages``, else ``path`` itself.

    A VOC tree is recognised by ``VOCdevkit/VOC2012/JPEGImages``, ``VOC2012/JPEGImages`` or
    ``JPEGImages`` below ``path``; only that folder is used (VOC's ``SegmentationClass`` PNGs
    are label maps, not photos).
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"training data not found: {root}")
    if not root.is_dir():
        raise DataError(f"--data must be a folder of images or a VOC tree, got the file {root}")
    for candidate in VOC_IMAGE_DIRS:
        if (root / candidate).is_dir():
            return root / candidate
    return root


def find_training_images(path: str | os.PathLike[str]) -> list[Path]:
    """All images below ``path`` (recursive; see :func:`resolve_image_root`), sorted; never empty.

    Raises
    ------
    DataError
        If the folder does not exist or holds no image files.
    """
    root = resolve_image_root(path)
    images = [image for image, _ in find_images([root], recursive=True)]
    if not images:
        raise DataError(
            f"no training images in {root} (looked recursively for .jpg, .png, .tif, .bmp, .webp files)"
        )
    return images


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale an (H, W, 3) uint8 image so that its shorter side is at most ``max_side`` (0: never)."""
    height, width = image.shape[:2]
    short = min(height, width)
    if max_side <= 0 or short <= max_side:
        return image
    scale = max_side / short
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    resized = F.interpolate(tensor, size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def crop_box(rng: np.random.Generator, height: int, width: int, min_area: float) -> tuple[int, int, int, int]:
    """A random (top, left, box_height, box_width) covering ``min_area``..1 of the image, aspect 3/4..4/3."""
    area = rng.uniform(min_area, 1.0) * height * width
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    box_h = int(min(height, max(1, round(np.sqrt(area / aspect)))))
    box_w = int(min(width, max(1, round(np.sqrt(area * aspect)))))
    top = int(rng.integers(0, height - box_h + 1))
    left = int(rng.integers(0, width - box_w + 1))
    return top, left, box_h, box_w


def random_resized_crop(
    image: np.ndarray, size: int, rng: np.random.Generator, *, min_area: float, flip: bool
) -> torch.Tensor:
    """A random crop of ``image`` ((H, W, 3) uint8) resized to a (3, size, size) float32 tensor on 0..255."""
    top, left, box_h, box_w = crop_box(rng, image.shape[0], image.shape[1], min_area)
    do_flip = flip and rng.random() < 0.5
    crop = torch.from_numpy(np.ascontiguousarray(image[top : top + box_h, left : left + box_w]))
    crop = crop.permute(2, 0, 1)[None].float()
    if (box_h, box_w) != (size, size):
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    crop = crop[0].clamp(0, 255)
    return crop.flip(-1) if do_flip else crop


def center_crop(image: np.ndarray, size: int) -> torch.Tensor:
    """The largest centred square of ``image`` resized to (3, size, size) float32 on 0..255 (sample sheets)."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = torch.from_numpy(np.ascontiguousarray(image[top : top + side, left : left + side]))
    square = square.permute(2, 0, 1)[None].float()
    if side != size:
        square = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return square[0].clamp(0, 255)


class TrainingImages:
    """The training images, decoded once into memory or read on demand.

    Parameters
    ----------
    paths : list of Path
        Image files (from :func:`find_training_images`).
    max_side : int
        Shorter side after loading (see :class:`~training.config.TrainConfig`).
    in_memory : bool
        Decode everything now. Unreadable files are then dropped with a warning; if none is
        readable, :class:`DataError`. Otherwise a file that cannot be read when it is drawn is
        replaced by the next readable one (warning once per file).
    warn : callable, optional
        Receives warning messages (default: :func:`warnings.warn`).
    """

    def __init__(self, paths: list[Path], *, max_side: int, in_memory: bool, warn: Warn | None = None) -> None:
        if not paths:
            raise DataError("the training data set is empty")
        self._warn = warn or _default_warn
        self.max_side = max_side
        self.paths = list(paths)
        self._cache: list[np.ndarray] | None = None
        self._bad: set[int] = set()
        if in_memory:
            kept, cache = [], []
            for path in self.paths:
                image = self._read(path)
                if image is not None:
                    kept.append(path)
                    cache.append(image)
            if not cache:
                raise DataError(f"none of the {len(self.paths)} training images could be read")
            self.paths, self._cache = kept, cache

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def in_memory(self) -> bool:
        """True when the images were decoded at construction."""
        return self._cache is not None

    def _read(self, path: Path) -> np.ndarray | None:
        try:
            return shrink(read_rgb(path), self.max_side)
        except InputError as exc:
            self._warn(f"skipping unreadable training image: {exc}")
            return None

    def get(self, index: int) -> np.ndarray:
        """Image ``index`` as (H, W, 3) uint8 RGB; an unreadable file is replaced by the next readable one."""
        if self._cache is not None:
            return self._cache[index]
        for offset in range(len(self.paths)):
            candidate = (index + offset) % len(self.paths)
            if candidate in self._bad:
                continue
            image = self._read(self.paths[candidate])
            if image is not None:
                return image
            self._bad.add(candidate)
        raise DataError(f"none of the {len(self.paths)} training images could be read")


def step_rng(seed: int, step: int, rank: int = 0) -> np.random.Generator:
    """The generator that draws step ``step``'s batch on process ``rank``."""
    return np.random.default_rng([seed, step, rank])


def make_batch(images: TrainingImages, config: TrainConfig, step: int, rank: int = 0) -> torch.Tensor:
    """Step ``step``'s minibatch for process ``rank``: (batch_size, 3, size, size) float32 RGB on 0..255."""
    rng = step_rng(config.seed, step, rank)
    indices = rng.integers(0, len(images), size=config.batch_size)
    crops = [
        random_resized_crop(images.get(int(i)), config.size, rng, min_area=config.min_crop_area, flip=config.flip)
        for i in indices
    ]
    return torch.stack(crops)


class StepBatches(torch.utils.data.Dataset):
    """Map-style data set whose item ``i`` is the whole batch of step ``start + i`` (for a DataLoader)."""

    def __init__(self, images: TrainingImages, config: TrainConfig, start: int, stop: int, rank: int = 0) -> None:
        self.images, self.config, self.start, self.stop, self.rank = images, config, start, stop, rank

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, index: int) -> torch.Tensor:
        return make_batch(self.images, self.config, self.start + index, self.rank)


def _worker_init(_worker_id: int) -> None:
    # Each worker decodes one batch at a time; more threads per worker only oversubscribe the cores.
    torch.set_num_threads(1)
    # Ctrl-C and SIGTERM reach the whole process group (a terminal, SLURM's time limit): the run
    # handles them and saves at the end of its step, which needs the next batches. A worker
    # ended by them made the DataLoader raise "worker exited unexpectedly" instead. Run after
    # torch's own worker handlers, so this one holds; the workers end with the loader, or with
    # the run (torch watches its parent).
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)


def iterate_batches(
    images: TrainingImages, config: TrainConfig, start: int, stop: int, rank: int = 0
) -> Iterator[torch.Tensor]:
    """Batches of steps ``start .. stop - 1`` in order: from memory in this process, else via workers."""
    dataset = StepBatches(images, config, start, stop, rank)
    if images.in_memory or config.workers == 0:
        for index in range(len(dataset)):
            yield dataset[index]
        return
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,  # each item already is a batch
        shuffle=False,
        num_workers=config.workers,
        worker_init_fn=_worker_init,
        prefetch_factor=2,
        persistent_workers=False,
    )
    yield from loader


def load_training_images(
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], config: TrainConfig, warn: Warn | None = None
) -> TrainingImages:
    """Find the images under ``data`` (one folder or several) and decode them into memory if there
    are at most ``config.cache_limit``.

    Each folder is searched as :func:`find_training_images` does (and must hold images); a file
    reached through two of the folders is used once.
    """
    folders = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    if not folders:
        raise DataError("no training data folder given")
    paths = list(dict.fromkeys(path.resolve() for folder in folders for path in find_training_images(folder)))
    return TrainingImages(paths, max_side=config.max_side, in_memory=len(paths) <= config.cache_limit, warn=warn)


def describe_data(data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> str:
    """The training data as recorded in checkpoints and ONNX metadata: the folders, comma-separated."""
    folders = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    return ", ".join(str(folder) for folder in folders)
