"""The segmentation pipeline as a library: RGB array in, labels + ucm2 (+ soft maps) out.

:class:`Segmenter` runs the exported encoder (:mod:`.runtime`) when the recipe's cues read its
outputs, and the recipe's post-processing (:func:`.postprocess.postprocess`). Inference and
post-processing are separate methods (:meth:`Segmenter.network_maps`, :meth:`Segmenter.finish`)
so that the folder runner can overlap them; :meth:`Segmenter.segment` does both for one image.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wnetcli.errors import InputError, ModelError
from wnetcli.options import check_field_types
from wnetcli.segmentation.cues import NetworkMaps
from wnetcli.segmentation.grids import (
    block_mean_rgb,
    enlarge_labels,
    enlarge_ucm2,
    network_size,
    resize_maps,
    resize_rgb,
    shrink_factor,
)
from wnetcli.segmentation.levels import Cut
from wnetcli.segmentation.recipe import MODELS_FOLDER, RECIPES, Recipe

if TYPE_CHECKING:
    from wnetcli.model_info import ModelInfo
    from wnetcli.segmentation.runtime import OnnxModel

#: Concurrent inference calls of a folder run on the CPU (:func:`folder_options`).
AUTO_STREAMS = 2

#: The shipped default model (wnetcli/models/README.md is its model card); ``Segmenter(None, ...)`` uses it.
DEFAULT_MODEL = MODELS_FOLDER / "default.onnx"


@dataclass(frozen=True)
class SegmentOptions:
    """How to segment: the recipe, the cut, and how to run the network when it runs.

    Attributes:
        recipe: the post-processing (:class:`.recipe.Recipe`; :func:`.recipe.load_recipe`
            reads a named one or a file). The network runs if and only if its cues read the
            network's outputs, or ``soft_maps`` asks for them.
        cut: which partition of the hierarchy is output (:class:`.levels.Cut`).
        boundary_map: also return the network's boundary map (:attr:`SegmentationResult.boundaries`;
            a model trained with boundaries), which makes it run.
        soft_maps: also return the network's soft maps (:attr:`SegmentationResult.probs`),
            which makes it run.
        device: ``"auto"`` (CUDA when it really works, else CPU), ``"cpu"`` or ``"cuda"``.
        threads: onnxruntime intra-op threads of each inference call; ``None`` uses every
            core (:func:`folder_options` shares them out among the streams instead).
        streams: inference calls the folder runner keeps going at once, each on its own
            images; ``None`` is 1 here and is resolved by :func:`folder_options` for a folder run.
        batch_size: images per inference call. Only images of the same size share a batch.
        max_size: an image whose longer side exceeds this is segmented on a block grid an
            integer factor coarser (:func:`.grids.shrink_factor`), and the labels and ucm2 are
            enlarged back to its size; this bounds the memory, which grows with the pixel
            count. ``None``: never.
        spinning: let onnxruntime's idle threads busy-wait for work (off: faster on a shared
            machine and beside the post-processing processes).
    """

    recipe: Recipe = RECIPES["default"]
    cut: Cut = Cut()
    soft_maps: bool = False
    boundary_map: bool = False
    device: str = "auto"
    threads: int | None = None
    streams: int | None = None
    batch_size: int = 1
    max_size: int | None = 2048
    spinning: bool = False

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.batch_size < 1:
            raise InputError(f"SegmentOptions.batch_size must be at least 1, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"SegmentOptions.threads must be at least 1 (or None), got {self.threads}")
        if self.streams is not None and self.streams < 1:
            raise InputError(f"SegmentOptions.streams must be at least 1 (or None), got {self.streams}")
        if self.max_size is not None and self.max_size < 16:
            raise InputError(f"SegmentOptions.max_size must be at least 16 pixels (or None), got {self.max_size}")
        # Checked here too, not only where the model loads: a run whose settings never run the
        # network must still reject a misspelt device.
        from wnetcli.segmentation.runtime import DEVICES

        if self.device not in DEVICES:
            raise InputError(f"SegmentOptions.device must be one of {', '.join(DEVICES)}, got {self.device!r}")

    @property
    def runs_network(self) -> bool:
        """Whether segmenting runs the network: a cue of the recipe reads it, or soft maps are asked for."""
        return self.recipe.reads_network or self.soft_maps or self.boundary_map

    def network_outputs(self) -> frozenset[str]:
        """The model outputs each image needs: what the recipe reads, plus ``"probs"`` for
        ``soft_maps`` and ``"boundaries"`` for ``boundary_map``."""
        asked = ({"probs"} if self.soft_maps else set()) | ({"boundaries"} if self.boundary_map else set())
        return self.recipe.network_outputs() | asked


@dataclass
class SegmentationResult:
    """Everything the pipeline computes for one image of size H x W.

    Attributes:
        labels: (H, W) int32, labels 1..n, one label per connected region.
        ucm2: (2H+1, 2W+1) float32 in [0, 1], the ultrametric contour map of the hierarchy
            (BSDS convention: pixels at odd coordinates, boundaries between them at even ones),
            on the level scale (:class:`.levels.LevelScale`).
        probs: (K, H, W) float32, the network's soft segmentation (sums to 1 over K), when
            :attr:`SegmentOptions.soft_maps` asked for it, else None.
        boundaries: (H, W) float32 in [0, 1], the network's boundary map, when
            :attr:`SegmentOptions.boundary_map` asked for it, else None.
        timings: seconds per stage: ``"inference"`` plus the post-processing's ``"crf"``,
            ``"boundaries"``, ``"hierarchy"``.
        note: ``""``, or why ``labels`` does not have the number of regions asked for.
    """

    labels: np.ndarray
    ucm2: np.ndarray
    probs: np.ndarray | None = None
    boundaries: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def regions(self) -> int:
        """Number of regions in :attr:`labels`."""
        return int(self.labels.max(initial=0))


def folder_options(options: SegmentOptions) -> SegmentOptions:
    """``options`` with the folder runner's defaults for ``streams`` and ``threads`` filled in.

    On the CPU (``device="cpu"``, or ``"auto"`` without a CUDA driver) a folder run keeps
    :data:`AUTO_STREAMS` inference calls going at once (at most one per core), and unless
    ``threads`` is given each gets ``cores // streams`` threads: on the 2-core development
    machine two single-threaded calls at once were faster per image than one two-threaded call
    (docs/experiments.md): the network's small convolutions keep the two threads of one call
    waiting on each other, where two calls each use a core fully. With CUDA: one call at a
    time (the GPU runs one anyway), threads unchanged.
    """
    from wnetcli.segmentation.runtime import cuda_driver_present

    on_cpu = options.device == "cpu" or (options.device == "auto" and not cuda_driver_present())
    if not on_cpu:
        return replace(options, streams=options.streams or 1)
    cores = os.cpu_count() or 1
    streams = options.streams or min(AUTO_STREAMS, cores)
    return replace(options, streams=streams, threads=options.threads or max(1, cores // streams))


def check_rgb(rgb: np.ndarray) -> np.ndarray:
    """Return ``rgb`` if it is an (H, W, 3) uint8 array, else raise :class:`InputError`."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise InputError(
            f"expected an RGB image as an (H, W, 3) uint8 array, got shape {shape} dtype {dtype}"
        )
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise InputError(f"image is empty (shape {rgb.shape})")
    return rgb


def _network_input_size(height: int, width: int, max_size: int | None, short_side: int) -> tuple[int, int]:
    """The (height, width) the network runs at for an (H, W) image: the post-processing's size
    (:func:`.grids.shrink_factor`), shrunk further to the model's training scale
    (:func:`.grids.network_size`)."""
    factor = shrink_factor(height, width, max_size)
    return network_size(-(-height // factor), -(-width // factor), short_side)


@dataclass(frozen=True)
class Finisher:
    """The post-processing half of the pipeline, separate from the model so that it can be
    pickled to worker processes (the folder runner runs it in a process pool).

    Attributes:
        options: the :class:`SegmentOptions` (their recipe, cut, soft_maps and max_size).
    """

    options: SegmentOptions

    def __call__(
        self, rgb: np.ndarray, maps: NetworkMaps | None = None, inference_seconds: float = 0.0
    ) -> SegmentationResult:
        """Post-process one image.

        Parameters
        ----------
        rgb : ndarray, shape (H, W, 3), uint8
        maps : NetworkMaps, optional
            The network's outputs at the size it ran at (:meth:`Segmenter.network_maps`), when
            the options need them. The post-processing runs at (H, W), or on the block grid of
            an image over ``max_size`` (the labels and ucm2 are then enlarged back to (H, W));
            the maps are resized bilinearly to that size first.
        inference_seconds : float
            Recorded as ``timings["inference"]``.
        """
        from wnetcli.segmentation.postprocess import postprocess  # scikit-image: only where it runs

        check_rgb(rgb)
        options = self.options
        size = rgb.shape[:2]
        factor = shrink_factor(*size, options.max_size)
        small = block_mean_rgb(rgb, factor)
        needs = options.network_outputs()
        if needs and maps is None:
            raise InputError("these options read the network's outputs: pass its maps")
        soft_maps = _network_map(maps.soft_maps, size, "soft_maps") if "probs" in needs else None
        boundaries = _network_map(maps.boundaries, size, "boundaries") if "boundaries" in needs else None
        recipe_reads = options.recipe.network_outputs()
        post = postprocess(
            small,
            NetworkMaps(
                resize_maps(soft_maps, small.shape[:2]) if "probs" in recipe_reads else None,
                resize_maps(boundaries[None], small.shape[:2])[0] if "boundaries" in recipe_reads else None,
            ),
            options.recipe,
            options.cut,
        )
        labels, ucm2 = post.labels, post.ucm2
        if factor > 1:
            labels, ucm2 = enlarge_labels(labels, size), enlarge_ucm2(ucm2, size)
        return SegmentationResult(
            labels=labels,
            ucm2=ucm2,
            probs=resize_maps(soft_maps, size) if options.soft_maps else None,
            boundaries=resize_maps(boundaries[None], size)[0] if options.boundary_map else None,
            timings={"inference": inference_seconds, **post.timings},
            note=post.note,
        )


def _network_map(values: np.ndarray | None, size: tuple[int, int], name: str) -> np.ndarray:
    """``values`` (C, h, w) or (h, w) checked against an image of ``size``: present, and of its
    shape (not another image's, nor turned by 90 degrees, which a resize would hide)."""
    if values is None:
        raise InputError(f"these options read the network's {name}, and none were given")
    values = np.asarray(values, dtype=np.float32)
    height, width = values.shape[-2:]
    if values.ndim not in (2, 3) or not height or not width:
        raise InputError(f"the network's {name} must be (C, h, w) or (h, w) maps, got shape {values.shape}")
    if abs(height / width - size[0] / size[1]) > 0.05 * size[0] / size[1]:
        raise InputError(
            f"the network's {name} of size {height} x {width} do not have the shape of the {size[0]} x {size[1]} image"
        )
    return values


class Segmenter:
    """Segment RGB images with a recipe, running the exported W-Net encoder when the recipe reads it.

    Parameters
    ----------
    model_path : Path or None
        The ``.onnx`` file written by ``wnet export``; ``None`` for the shipped model the
        recipe names (:attr:`.recipe.NetworkRun.model`, ``default.onnx`` unless it says otherwise).
    options : SegmentOptions

    Raises
    ------
    ModelError
        When the model is missing or not a wnet export (checked for a given ``model_path``
        even when the options never run the network), or lacks an output the recipe reads.

    Examples
    --------
    >>> seg = Segmenter(Path("wnet.onnx"), SegmentOptions(recipe=load_recipe("network")))  # doctest: +SKIP
    >>> result = seg.segment(read_rgb("photo.jpg"))  # doctest: +SKIP
    >>> result.labels.shape, result.ucm2.shape  # doctest: +SKIP
    ((321, 481), (643, 963))
    """

    def __init__(self, model_path: Path | None, options: SegmentOptions | None = None) -> None:
        self.options = options or SegmentOptions()
        self.model_given = model_path is not None
        if model_path is None:
            shipped = self.options.recipe.network.shipped_model
            if not shipped.is_file():
                raise ModelError(
                    f"the shipped model {shipped.name} is missing from this installation ({shipped}): reinstall "
                    "wnet, or pass --model FILE.onnx (`wnet export` makes one from a training checkpoint)"
                )
            model_path = shipped
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError(f"model not found: {self.model_path}")
        self.finisher = Finisher(self.options)
        self._model: OnnxModel | None = None
        self._model_lock = threading.Lock()  # the folder runner's inference threads share it
        if self.runs_network:
            # Loaded now, so that a broken model, a missing output or the device fails before any image.
            missing = self.options.network_outputs() - set(self.model.outputs)
            if missing:
                raise ModelError(
                    f"recipe {self.options.recipe.name!r} (or an output asked for) reads the network's "
                    f"{', '.join(sorted(missing))}, which "
                    f"{self.model_path} does not output (a model trained with `wnet train --boundaries-from` does)"
                )
        elif self.model_given:
            # Not run, but a model the user named must still be one: a broken file fails now.
            from wnetcli.segmentation.runtime import check_model

            check_model(self.model_path)

    @property
    def model(self) -> OnnxModel:
        """The onnxruntime session (:class:`~wnetcli.segmentation.runtime.OnnxModel`), loaded on
        first use: options that never run the network (:attr:`runs_network`) never load it,
        which spares a command onnxruntime's import, the session and the device probe."""
        if self._model is None:  # the lock only while loading: every inference call reads this
            with self._model_lock:
                if self._model is None:
                    from wnetcli.segmentation.runtime import OnnxModel

                    self._model = OnnxModel(
                        self.model_path,
                        device=self.options.device,
                        threads=self.options.threads,
                        spinning=self.options.spinning,
                    )
        return self._model

    @property
    def recipe(self) -> Recipe:
        """The recipe in use."""
        return self.options.recipe

    @property
    def streams(self) -> int:
        """Inference calls the folder runner keeps going at once (:attr:`SegmentOptions.streams`, default 1)."""
        return self.options.streams or 1

    @property
    def info(self) -> ModelInfo:
        """The model's metadata (K, padding multiple, training config); loads the model."""
        return self.model.info

    @property
    def device(self) -> str:
        """``"cuda"`` or ``"cpu"``: where inference really runs (``"cpu"``, where everything
        runs, while the network has not been loaded)."""
        return "cpu" if self._model is None else self._model.device

    @property
    def device_note(self) -> str:
        """One quiet line when ``device="auto"`` fell back to the CPU, else ``""`` (also while
        the network has not been loaded: no device was chosen)."""
        return "" if self._model is None else self._model.choice.note

    @property
    def runs_network(self) -> bool:
        """Whether segmenting runs the network (:attr:`SegmentOptions.runs_network`)."""
        return self.options.runs_network

    def network_maps(self, images: Sequence[np.ndarray]) -> tuple[list[NetworkMaps | None], list[float]]:
        """:meth:`predict` when :attr:`runs_network`; else ``None`` per image and zero seconds,
        without loading the network."""
        if self.runs_network:
            return self.predict(images)
        images = [check_rgb(rgb) for rgb in images]
        return [None] * len(images), [0.0] * len(images)

    def predict(self, images: Sequence[np.ndarray]) -> tuple[list[NetworkMaps], list[float]]:
        """Run the network on several images, batching those of equal size.

        Images of different sizes are not padded to a common size: on the CPU a batch was
        never faster per image than batch 1 (``benchmarks/bench_segment.py``), so padding
        pixels would be pure waste; equal sizes (the usual case in a data set) share a batch.

        Parameters
        ----------
        images : sequence of ndarray, each (H_i, W_i, 3) uint8

        Returns
        -------
        maps : list of NetworkMaps
            The outputs the options need (:meth:`SegmentOptions.network_outputs`) at the size
            the network ran at: the post-processing's, shrunk to the model's training scale
            (:meth:`finish` maps them back): ``soft_maps`` (K, h_i, w_i) float32 and/or
            ``boundaries`` (h_i, w_i) float32.
        seconds : list of float
            Inference time charged to each image (its batch's time divided evenly).
        """
        images = [check_rgb(rgb) for rgb in images]
        outputs = tuple(sorted(self.options.network_outputs()))
        short_side = self.model.info.short_side
        sizes = [_network_input_size(*rgb.shape[:2], self.options.max_size, short_side) for rgb in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for index, size in enumerate(sizes):
            groups.setdefault(size, []).append(index)
        maps: list[NetworkMaps | None] = [None] * len(images)
        seconds = [0.0] * len(images)
        step = self.options.batch_size
        for size, indices in groups.items():
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                batch = np.stack([resize_rgb(images[i], size) for i in chunk])
                began = time.perf_counter()
                out = self.model.run(batch, outputs)
                if self.recipe.network.mirror:
                    # Mirrored W axis in, mirrored back out: both maps are in the image's frame.
                    mirrored = self.model.run(np.ascontiguousarray(batch[:, :, ::-1]), outputs)
                    out = {name: (out[name] + mirrored[name][..., ::-1]) * np.float32(0.5) for name in outputs}
                elapsed = time.perf_counter() - began
                for n, i in enumerate(chunk):
                    maps[i] = NetworkMaps(
                        soft_maps=out["probs"][n] if "probs" in out else None,
                        boundaries=out["boundaries"][n, 0] if "boundaries" in out else None,
                    )
                    seconds[i] = elapsed / len(chunk)
        return maps, seconds

    def finish(
        self, rgb: np.ndarray, maps: NetworkMaps | None = None, inference_seconds: float = 0.0
    ) -> SegmentationResult:
        """Post-process one image; see :class:`Finisher`."""
        return self.finisher(rgb, maps, inference_seconds)

    def segment_batch(self, images: Sequence[np.ndarray]) -> list[SegmentationResult]:
        """Segment several (H, W, 3) uint8 images; see :meth:`segment`."""
        maps, seconds = self.network_maps(images)
        return [self.finish(rgb, m, s) for rgb, m, s in zip(images, maps, seconds, strict=True)]

    def segment(self, rgb: np.ndarray) -> SegmentationResult:
        """Segment one image.

        Parameters
        ----------
        rgb : ndarray, shape (H, W, 3), uint8
            RGB 0..255 (use :func:`wnetcli.images.read_rgb` for files).

        Returns
        -------
        SegmentationResult
            Labels (H, W) int32 from 1, ucm2 (2H+1, 2W+1) float32 in [0, 1], and the soft maps
            (K, H, W) when asked for.
        """
        return self.segment_batch([rgb])[0]
