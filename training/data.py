"""Training data: finding the images, random resized crops and flips, one batch per step.

With boundary training each image is paired with its teacher target (:mod:`training.teacher`),
which goes through the same crop and flip; the boundary update's images also get a colour
jitter.

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
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from training.config import TrainConfig
from training.teacher import read_target
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


@dataclass(frozen=True)
class Crop:
    """A crop box (``top``, ``left``, ``height``, ``width`` in pixels) and whether to flip it
    left-right; applied alike to an image and to its boundary target, so that the two stay
    aligned."""

    top: int
    left: int
    height: int
    width: int
    flip: bool = False

    def apply(
        self, array: np.ndarray, size: int, resize: Callable[[torch.Tensor, int], torch.Tensor], *,
        borders: bool = False,
    ) -> torch.Tensor:
        """Crop ``array`` ((H, W, C) or (H, W), any numeric dtype), resize it with ``resize``
        (a (1, C, h, w) float32 tensor and ``size`` -> (1, C, size, size)), flip if asked:
        (C, size, size) float32.

        ``borders``: ``array`` is a boundary map in the BSDS convention, where pixel (i, j)
        holds the border to its right (:func:`wnetcli.ucm.ucm2_to_boundary`). Mirrored, that
        border lies to the pixel's left, so a flipped crop takes its columns one further left:
        then each border stays on the pixel left of it, as in the unflipped image (the first
        column of the image stands in for the border left of it).
        """
        rows = slice(self.top, self.top + self.height)
        if borders and self.flip:
            columns = np.clip(np.arange(self.left - 1, self.left + self.width - 1), 0, None)
            crop = array[rows][:, columns]
        else:
            crop = np.ascontiguousarray(array[rows, self.left : self.left + self.width])
        tensor = torch.from_numpy(crop if crop.ndim == 3 else crop[..., None]).permute(2, 0, 1)[None].float()
        tensor = resize(tensor, size)[0]
        return tensor.flip(-1) if self.flip else tensor


def draw_crop(rng: np.random.Generator, height: int, width: int, *, min_area: float, flip: bool) -> Crop:
    """A random :class:`Crop` of an ``height`` x ``width`` image (:func:`crop_box`), flipped with
    probability 1/2 when ``flip``."""
    top, left, box_h, box_w = crop_box(rng, height, width, min_area)
    return Crop(top, left, box_h, box_w, flip and rng.random() < 0.5)


def resize_image(crop: torch.Tensor, size: int) -> torch.Tensor:
    """(1, C, h, w) float32 on 0..255 -> (1, C, size, size): antialiased bilinear, clamped to 0..255."""
    if crop.shape[-2:] != (size, size):
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return crop.clamp(0, 255)


def resize_boundaries(target: torch.Tensor, size: int) -> torch.Tensor:
    """(1, C, h, w) float32 boundary map -> (1, C, size, size), keeping one-pixel lines.

    Each axis that grows is enlarged bilinearly first; then each axis that shrinks is
    max-pooled, so that a thin boundary survives shrinking (an average would fade it).
    """
    grown = (max(target.shape[-2], size), max(target.shape[-1], size))
    if grown != tuple(target.shape[-2:]):
        target = F.interpolate(target, size=grown, mode="bilinear", align_corners=False)
    if grown != (size, size):
        target = F.adaptive_max_pool2d(target, (size, size))
    return target


def random_resized_crop(
    image: np.ndarray, size: int, rng: np.random.Generator, *, min_area: float, flip: bool
) -> torch.Tensor:
    """A random crop of ``image`` ((H, W, 3) uint8) resized to a (3, size, size) float32 tensor on 0..255."""
    crop = draw_crop(rng, image.shape[0], image.shape[1], min_area=min_area, flip=flip)
    return crop.apply(image, size, resize_image)


def center_crop(image: np.ndarray, size: int) -> torch.Tensor:
    """The largest centred square of ``image`` resized to (3, size, size) float32 on 0..255 (sample sheets)."""
    height, width = image.shape[:2]
    side = min(height, width)
    return Crop((height - side) // 2, (width - side) // 2, side, side).apply(image, size, resize_image)


#: Colour jitter of the boundary update's images: brightness, contrast and saturation factors
#: drawn from 1 -/+ these, a hue rotation of up to this fraction of a turn. The teacher's
#: boundaries do not change with these, so the network learns borders that do not hinge on
#: exact colours.
JITTER_BRIGHTNESS = 0.3
JITTER_CONTRAST = 0.3
JITTER_SATURATION = 0.3
JITTER_HUE = 0.05

# RGB -> YIQ (NTSC); a hue shift is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_LUMA = _RGB_TO_YIQ[0]


def colour_jitter(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random brightness, contrast, saturation and hue of one image, drawn from ``rng``.

    Parameters
    ----------
    image : torch.Tensor
        (3, H, W) float32 RGB on 0..255.
    rng : numpy.random.Generator
        Draws four numbers per call (the factors of :data:`JITTER_BRIGHTNESS` and the others).

    Returns
    -------
    torch.Tensor
        (3, H, W) float32 on 0..255 (clamped after each change).
    """
    brightness, contrast, saturation = (
        float(rng.uniform(1 - amount, 1 + amount)) for amount in (JITTER_BRIGHTNESS, JITTER_CONTRAST, JITTER_SATURATION)
    )
    angle = float(rng.uniform(-JITTER_HUE, JITTER_HUE)) * 2 * np.pi
    image = (image * brightness).clamp(0, 255)
    luma = torch.einsum("c,chw->hw", _LUMA, image)
    image = ((image - luma.mean()) * contrast + luma.mean()).clamp(0, 255)
    luma = torch.einsum("c,chw->hw", _LUMA, image)
    image = ((image - luma) * saturation + luma).clamp(0, 255)
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = torch.tensor([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]], dtype=torch.float32)
    hue = torch.linalg.inv(_RGB_TO_YIQ) @ rotation @ _RGB_TO_YIQ
    return torch.einsum("dc,chw->dhw", hue, image).clamp(0, 255)


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
        self._target_paths: list[Path] | None = None
        self._targets: list[np.ndarray] | None = None
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

    def image(self, index: int) -> np.ndarray | None:
        """Image ``index`` as (H, W, 3) uint8 RGB, or None if its file cannot be read (warned once)."""
        if self._cache is not None:
            return self._cache[index]
        if index in self._bad:
            return None
        image = self._read(self.paths[index])
        if image is None:
            self._bad.add(index)
        return image

    def _fetch(self, index: int) -> tuple[int, np.ndarray]:
        """The first readable image from ``index`` on (wrapping around), with its index."""
        for offset in range(len(self.paths)):
            candidate = (index + offset) % len(self.paths)
            image = self.image(candidate)
            if image is not None:
                return candidate, image
        raise DataError(f"none of the {len(self.paths)} training images could be read")

    def get(self, index: int) -> np.ndarray:
        """Image ``index`` as (H, W, 3) uint8 RGB; an unreadable file is replaced by the next readable one."""
        return self._fetch(index)[1]

    def attach_targets(self, targets: Sequence[Path | None]) -> None:
        """Pair each image with its boundary target file (:mod:`training.teacher`), in the order
        of :attr:`paths`; images whose target is None are left out from now on.

        In memory, the targets are read now; otherwise when their image is drawn.

        Raises
        ------
        DataError
            If no image has a target, or ``targets`` does not match the images.
        """
        if len(targets) != len(self.paths):
            raise DataError(f"{len(targets)} boundary targets for {len(self.paths)} training images")
        kept = [index for index, target in enumerate(targets) if target is not None]
        if not kept:
            raise DataError(f"none of the {len(self.paths)} training images has a boundary target")
        position = {index: new for new, index in enumerate(kept)}
        self.paths = [self.paths[index] for index in kept]
        self._bad = {position[index] for index in self._bad if index in position}
        self._target_paths = [targets[index] for index in kept]
        if self._cache is not None:
            self._cache = [self._cache[index] for index in kept]
            self._targets = [read_target(path) for path in self._target_paths]

    @property
    def has_targets(self) -> bool:
        """True once :meth:`attach_targets` was called."""
        return self._target_paths is not None

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``index`` ((H, W, 3) uint8) and its boundary target ((H, W) uint8, 255 = strength 1),
        replaced by the next readable pair as :meth:`get` does.

        Raises
        ------
        DataError
            Without :meth:`attach_targets`, or when a target does not have its image's size.
        """
        if self._target_paths is None:
            raise DataError("the training images have no boundary targets (attach_targets was not called)")
        index, image = self._fetch(index)
        target = self._targets[index] if self._targets is not None else read_target(self._target_paths[index])
        if target.shape != image.shape[:2]:
            raise DataError(
                f"the boundary target {self._target_paths[index]} is {target.shape[1]}x{target.shape[0]}, its image "
                f"{self.paths[index]} {image.shape[1]}x{image.shape[0]} at max_side {self.max_side}: delete the target"
            )
        return image, target


def step_rng(seed: int, step: int, rank: int = 0) -> np.random.Generator:
    """The generator that draws step ``step``'s batch on process ``rank``."""
    return np.random.default_rng([seed, step, rank])


class BoundaryBatch(NamedTuple):
    """One step's data with boundary training (:func:`make_boundary_batch`).

    Attributes:
        images: (N, 3, S, S) float32 RGB on 0..255, the N-cut and reconstruction updates'
            batch (the same as :func:`make_batch`).
        jittered: the same crops after :func:`colour_jitter`: the boundary update's input.
        targets: (N, 1, S, S) float32 in [0, 1], the teacher's boundaries on the same crops.
    """

    images: torch.Tensor
    jittered: torch.Tensor
    targets: torch.Tensor


def _draw_batch(
    images: TrainingImages, config: TrainConfig, step: int, rank: int, targets: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    rng = step_rng(config.seed, step, rank)
    indices = rng.integers(0, len(images), size=config.batch_size)
    crops, maps = [], []
    for index in indices:
        image, target = images.pair(int(index)) if targets else (images.get(int(index)), None)
        crop = draw_crop(rng, image.shape[0], image.shape[1], min_area=config.min_crop_area, flip=config.flip)
        crops.append(crop.apply(image, config.size, resize_image))
        if target is not None:
            maps.append(crop.apply(target, config.size, resize_boundaries, borders=True) / 255)
    return torch.stack(crops), torch.stack(maps) if targets else None


def make_batch(images: TrainingImages, config: TrainConfig, step: int, rank: int = 0) -> torch.Tensor:
    """Step ``step``'s minibatch for process ``rank``: (batch_size, 3, size, size) float32 RGB on 0..255."""
    return _draw_batch(images, config, step, rank, targets=False)[0]


def make_boundary_batch(images: TrainingImages, config: TrainConfig, step: int, rank: int = 0) -> BoundaryBatch:
    """Step ``step``'s minibatch with boundary targets (images with :meth:`TrainingImages.attach_targets`).

    The images are those of :func:`make_batch`; the targets go through the same crops and
    flips; the colour jitter is drawn from its own generator of ``(seed, step, rank)``.
    """
    crops, targets = _draw_batch(images, config, step, rank, targets=True)
    rng = np.random.default_rng([config.seed, step, rank, 1])
    jittered = torch.stack([colour_jitter(crop, rng) for crop in crops])
    return BoundaryBatch(crops, jittered, targets)


class StepBatches(torch.utils.data.Dataset):
    """Map-style data set whose item ``i`` is the whole batch of step ``start + i`` (for a DataLoader)."""

    def __init__(self, images: TrainingImages, config: TrainConfig, start: int, stop: int, rank: int = 0) -> None:
        self.images, self.config, self.start, self.stop, self.rank = images, config, start, stop, rank

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, index: int) -> torch.Tensor | BoundaryBatch:
        make = make_boundary_batch if self.config.boundary_weight > 0 else make_batch
        return make(self.images, self.config, self.start + index, self.rank)


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
) -> Iterator[torch.Tensor | BoundaryBatch]:
    """Batches of steps ``start .. stop - 1`` in order: from memory in this process, else via workers.

    :func:`make_boundary_batch` when ``config.boundary_weight > 0``, else :func:`make_batch`.
    """
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
