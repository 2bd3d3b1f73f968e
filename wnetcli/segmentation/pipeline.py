"""The segmentation pipeline as a library: RGB array in, labels + ucm2 + probabilities out.

:class:`Segmenter` runs the exported encoder (:mod:`wnetcli.segmentation.runtime`) and the
paper's post-processing (:func:`wnetcli.segmentation.postprocess.postprocess`: CRF, boundary
strength, hierarchy, one level of it). Inference and post-processing are separate methods
(:meth:`Segmenter.predict`, :meth:`Segmenter.finish`) so that the folder runner can overlap
them; :meth:`Segmenter.segment` does both for one image.
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
from PIL import Image

from wnetcli.errors import InputError, ModelError
from wnetcli.options import check_field_types

if TYPE_CHECKING:
    from wnetcli.model_info import ModelInfo
    from wnetcli.segmentation.postprocess import PostprocessOptions
    from wnetcli.segmentation.runtime import OnnxModel

#: Concurrent inference calls of a folder run on the CPU (:func:`folder_options`).
AUTO_STREAMS = 2

#: The shipped default model (wnetcli/models/README.md is its model card); ``Segmenter(None, ...)`` uses it.
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default.onnx"


@dataclass(frozen=True)
class SegmentOptions:
    """How to run the model; the post-processing options are nested, not flattened.

    Attributes:
        device: ``"auto"`` (CUDA when it really works, else CPU), ``"cpu"`` or ``"cuda"``.
        threads: onnxruntime intra-op threads of each inference call; ``None`` uses every
            core (:func:`folder_options` shares them out among the streams instead).
        streams: inference calls the folder runner (:func:`wnetcli.segmentation.batch.run_jobs`)
            keeps going at once, each on its own images; ``None`` is 1 here and is resolved by
            :func:`folder_options` for a folder run.
        batch_size: images per inference call. Only images of the same size share a batch
            (no padding to a common size: see :meth:`Segmenter.predict`).
        max_size: an image whose longer side exceeds this is segmented at that size (network
            and post-processing), and the results are mapped back to the input's H x W
            (:func:`upscale_labels`, :func:`upscale_ucm2`); this bounds the memory, which grows
            with the pixel count. ``None``: never.
        tta: test-time augmentation: the network also runs on the left-right mirror of each
            image, and the two soft maps (the mirror's mirrored back) are averaged. Twice the
            inference time; on BSDS500 it helped the W-Net cues on most measures (model card).
        spinning: let onnxruntime's idle threads busy-wait for work (off: faster on a shared
            machine and beside the post-processing processes; see
            :class:`~wnetcli.segmentation.runtime.OnnxModel`).
        postprocess: CRF / hierarchy / level options; ``None`` means the defaults of
            :class:`~wnetcli.segmentation.postprocess.PostprocessOptions`.
    """

    device: str = "auto"
    threads: int | None = None
    streams: int | None = None
    batch_size: int = 1
    max_size: int | None = 2048
    spinning: bool = False
    tta: bool = False
    postprocess: PostprocessOptions | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.postprocess is not None:  # its annotation names a type imported only for type checkers
            from wnetcli.segmentation.postprocess import PostprocessOptions

            if not isinstance(self.postprocess, PostprocessOptions):
                raise InputError(f"postprocess must be a PostprocessOptions, got {type(self.postprocess).__name__}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be at least 1 (or None), got {self.threads}")
        if self.streams is not None and self.streams < 1:
            raise InputError(f"streams must be at least 1 (or None), got {self.streams}")
        if self.max_size is not None and self.max_size < 16:
            raise InputError(f"max_size must be at least 16 pixels (or None), got {self.max_size}")
        # Checked here too, not only where the model loads: a run whose settings never run the
        # network must still reject a misspelt device.
        from wnetcli.segmentation.runtime import DEVICES

        if self.device not in DEVICES:
            raise InputError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")


@dataclass
class SegmentationResult:
    """Everything the pipeline computes for one image of size H x W.

    Attributes:
        labels: (H, W) int32, labels 1..n, one label per connected region.
        ucm2: (2H+1, 2W+1) float32 in [0, 1], the ultrametric contour map of the hierarchy
            (BSDS convention: pixels at odd coordinates, boundaries between them at even ones).
        probs: (K, H, W) float32, the CRF-smoothed soft segmentation (sums to 1 over K);
            (0, H, W) when ``PostprocessOptions.keep_probs`` is False.
        timings: seconds per stage: ``"inference"`` plus the post-processing's
            ``"crf"``, ``"boundaries"``, ``"hierarchy"``.
        note: ``""``, or why ``labels`` does not have the number of regions asked for.
    """

    labels: np.ndarray
    ucm2: np.ndarray
    probs: np.ndarray
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
    machine two single-threaded calls at once gave 78-97 ms per 320x480 image where one
    two-threaded call gave 112-145 (three runs, the shipped model): the network's small convolutions
    keep the two threads of one call waiting on each other, where two calls each use a core
    fully. With CUDA: one call at a time (the GPU runs one anyway), threads unchanged.
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


def inference_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
    """The (height, width) the network sees: the input size, or scaled so the longer side is ``max_size``."""
    longest = max(height, width)
    if max_size is None or longest <= max_size:
        return height, width
    scale = max_size / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def network_size(height: int, width: int, max_size: int | None, short_side: int) -> tuple[int, int]:
    """The (height, width) the network runs at: :func:`inference_size`, then shrunk (never
    enlarged) so that the shorter side is at most ``short_side``, the scale the model was trained
    at (:attr:`wnetcli.model_info.ModelInfo.short_side`; 0: no such limit)."""
    height, width = inference_size(height, width, max_size)
    shorter = min(height, width)
    if short_side <= 0 or shorter <= short_side:
        return height, width
    scale = short_side / shorter
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to ``size`` = (height, width) (antialiased when shrinking)."""
    if rgb.shape[:2] == size:
        return rgb
    image = Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image)


def resize_probs(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize (K, h, w) float32 probabilities to (K, *size); sums over K stay 1."""
    if probs.shape[1:] == size:
        return probs
    out = np.empty((probs.shape[0], *size), dtype=np.float32)
    for k, channel in enumerate(probs):
        image = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))  # mode "F"
        out[k] = np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return out


def nearest_index(full: int, small: int) -> np.ndarray:
    """For each of ``full`` pixels along an axis, the nearest of ``small`` pixels (centre-aligned).

    Non-decreasing, and with ``small <= full`` consecutive entries differ by 0 or 1, which
    :func:`upscale_ucm2` relies on.
    """
    return np.minimum(((np.arange(full) + 0.5) * small / full).astype(np.intp), small - 1)


def upscale_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upscaling of an (h, w) label map to ``size`` = (H, W), centre-aligned
    as PIL resizes (:func:`nearest_index`); regions stay connected."""
    from wnetcli.segmentation.hierarchy import upsample_labels

    return upsample_labels(labels, size, index=nearest_index)


def upscale_ucm2(ucm2: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Map a (2h+1, 2w+1) ucm2 onto the (2H+1, 2W+1) grid of the label map :func:`upscale_labels`
    makes, so that a threshold of the result gives exactly the upscaled regions of the same
    threshold of ``ucm2`` (:func:`wnetcli.segmentation.hierarchy.upsample_ucm2`)."""
    from wnetcli.segmentation.hierarchy import upsample_ucm2

    return upsample_ucm2(ucm2, size, index=nearest_index)


def _import_postprocess():
    # Imported when a Segmenter is built, not with this module, so that the library imports
    # (and `wnet --help` runs) before scikit-image is loaded.
    from wnetcli.segmentation import postprocess

    return postprocess


@dataclass(frozen=True)
class Finisher:
    """The post-processing half of the pipeline, separate from the model so that it can be
    pickled to worker processes (:mod:`wnetcli.segmentation.batch` runs it in a process pool).

    Attributes:
        max_size: as :attr:`SegmentOptions.max_size`.
        postprocess_options: :class:`~wnetcli.segmentation.postprocess.PostprocessOptions`.
    """

    max_size: int | None
    postprocess_options: PostprocessOptions

    def __call__(
        self, rgb: np.ndarray, probs: np.ndarray, inference_seconds: float = 0.0
    ) -> SegmentationResult:
        """Post-process one image's probabilities (CRF, boundaries, hierarchy, level).

        Parameters
        ----------
        rgb : ndarray, shape (H, W, 3), uint8
        probs : ndarray, shape (K, h, w), float32
            From :meth:`Segmenter.predict`, at the network's size (:func:`network_size`). The
            post-processing runs at (H, W), or at the reduced size of an image over
            ``max_size`` (the results are then mapped back to (H, W)); the probabilities are
            resized bilinearly to that size first.
        inference_seconds : float
            Recorded as ``timings["inference"]``.
        """
        check_rgb(rgb)
        size = rgb.shape[:2]
        small = inference_size(*size, self.max_size)
        probs = np.asarray(probs)
        if probs.ndim != 3 or probs.shape[0] < 1:
            raise InputError(f"probs must be (K, h, w), got shape {probs.shape}")
        height, width = probs.shape[1:]
        # (K, 0, 0) is the placeholder of maps nothing reads; any other size is resized to the
        # image, which must not hide maps of another image or turned by 90 degrees.
        if height and width and abs(height / width - size[0] / size[1]) > 0.05 * size[0] / size[1]:
            raise InputError(
                f"probs of size {height} x {width} do not have the shape of the {size[0]} x {size[1]} image"
            )
        postprocess = _import_postprocess().postprocess
        options = self.postprocess_options
        # Soft maps that the post-processing will not read are not resized (K bilinear resizes).
        post_probs = resize_probs(probs, small) if options.reads_probs() else None
        post = postprocess(resize_rgb(rgb, small), post_probs, options)
        timings = {"inference": inference_seconds, **post.timings}
        if small == size:
            return SegmentationResult(
                labels=post.labels, ucm2=post.ucm2, probs=post.probs, timings=timings, note=post.note
            )
        return SegmentationResult(
            labels=upscale_labels(post.labels, size),
            ucm2=upscale_ucm2(post.ucm2, size),
            probs=resize_probs(post.probs, size),
            timings=timings,
            note=post.note,
        )


class Segmenter:
    """Segment RGB images with an exported W-Net encoder and the paper's post-processing.

    Parameters
    ----------
    model_path : Path or None
        The ``.onnx`` file written by ``wnet export``; ``None`` for the shipped default model.
    options : SegmentOptions

    Raises
    ------
    ModelError
        When the model is missing or not a wnet export (checked for a given ``model_path``
        even when the options never run the network).

    Examples
    --------
    >>> seg = Segmenter(Path("wnet.onnx"), SegmentOptions(device="cpu"))  # doctest: +SKIP
    >>> result = seg.segment(read_rgb("photo.jpg"))  # doctest: +SKIP
    >>> result.labels.shape, result.ucm2.shape  # doctest: +SKIP
    ((321, 481), (643, 963))
    """

    def __init__(self, model_path: Path | None, options: SegmentOptions | None = None) -> None:
        self.options = options or SegmentOptions()
        given = model_path is not None
        if model_path is None:
            if not DEFAULT_MODEL.is_file():
                raise ModelError(
                    f"the default model is missing from this installation ({DEFAULT_MODEL}): reinstall wnet, "
                    "or pass --model FILE.onnx (`wnet export` makes one from a training checkpoint)"
                )
            model_path = DEFAULT_MODEL
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError(f"model not found: {self.model_path}")
        postprocess_options = self.options.postprocess or _import_postprocess().PostprocessOptions()
        self.finisher = Finisher(max_size=self.options.max_size, postprocess_options=postprocess_options)
        self._model: OnnxModel | None = None
        self._model_lock = threading.Lock()  # the folder runner's inference threads share it
        if self.runs_network:
            _ = self.model  # loaded now, so that a broken model or device fails before any image
        elif given:
            # Not run, but a model the user named must still be one: a broken file fails now.
            from wnetcli.segmentation.runtime import check_model

            check_model(self.model_path)

    @property
    def model(self) -> OnnxModel:
        """The onnxruntime session (:class:`~wnetcli.segmentation.runtime.OnnxModel`), loaded on
        first use: settings that never run the network (:attr:`runs_network`) never load it,
        which spares a command onnxruntime's import and the session (0.3 s measured here) and
        the device probe."""
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
    def postprocess_options(self) -> PostprocessOptions:
        """The post-processing options in use (the defaults when none were given)."""
        return self.finisher.postprocess_options

    @property
    def streams(self) -> int:
        """Inference calls the folder runner keeps going at once (:attr:`SegmentOptions.streams`, default 1)."""
        return self.options.streams or 1

    @property
    def info(self) -> ModelInfo:
        """The model's metadata (K, padding multiple, training config)."""
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
        """Whether segmenting runs the network: only when the post-processing reads its soft
        maps (a W-Net cue, or ``keep_probs``). Otherwise the labels and the hierarchy are the
        same without them, so :meth:`soft_maps` skips the network, as the CRF is skipped."""
        return self.finisher.postprocess_options.reads_probs()

    def soft_maps(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
        """:meth:`predict` when :attr:`runs_network`; else, without running (or loading) the
        network, (1, 0, 0) float32 placeholders (what :meth:`finish` accepts for unread soft
        maps) and zero seconds per image."""
        if self.runs_network:
            return self.predict(images)
        images = [check_rgb(rgb) for rgb in images]
        return [np.zeros((1, 0, 0), dtype=np.float32) for _ in images], [0.0] * len(images)

    def predict(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
        """Run the network on several images, batching those of equal size.

        Images of different sizes are not padded to a common size: on the CPU a batch was
        never faster per image than batch 1 (see ``benchmarks/bench_segment.py``), so padding
        pixels would be pure waste; equal sizes (the usual case in a data set) share a batch.

        Parameters
        ----------
        images : sequence of ndarray, each (H_i, W_i, 3) uint8

        Returns
        -------
        probs : list of ndarray, each (K, h_i, w_i) float32
            Softmax probabilities at the network's size (:func:`network_size`): the input's
            own size, or smaller for an image over ``max_size`` or above the model's training
            scale (:meth:`finish` maps the results back).
        seconds : list of float
            Inference time charged to each image (its batch's time divided evenly).
        """
        images = [check_rgb(rgb) for rgb in images]
        short_side = self.model.info.short_side
        sizes = [network_size(*rgb.shape[:2], self.options.max_size, short_side) for rgb in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for index, size in enumerate(sizes):
            groups.setdefault(size, []).append(index)
        probs: list[np.ndarray | None] = [None] * len(images)
        seconds = [0.0] * len(images)
        step = self.options.batch_size
        for size, indices in groups.items():
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                batch = np.stack([resize_rgb(images[i], size) for i in chunk])
                began = time.perf_counter()
                out = self.model.run(batch)
                if self.options.tta:
                    # Mirrored W axis in, mirrored back out: both maps are in the image's frame.
                    mirrored = self.model.run(np.ascontiguousarray(batch[:, :, ::-1]))[..., ::-1]
                    out = (out + mirrored) * np.float32(0.5)
                elapsed = time.perf_counter() - began
                for i, p in zip(chunk, out, strict=True):
                    probs[i] = p
                    seconds[i] = elapsed / len(chunk)
        return probs, seconds

    def finish(
        self, rgb: np.ndarray, probs: np.ndarray, inference_seconds: float = 0.0
    ) -> SegmentationResult:
        """Post-process one image's probabilities; see :class:`Finisher`."""
        return self.finisher(rgb, probs, inference_seconds)

    def segment_batch(self, images: Sequence[np.ndarray]) -> list[SegmentationResult]:
        """Segment several (H, W, 3) uint8 images; see :meth:`segment`."""
        probs, seconds = self.soft_maps(images)
        return [self.finish(rgb, p, s) for rgb, p, s in zip(images, probs, seconds, strict=True)]

    def segment(self, rgb: np.ndarray) -> SegmentationResult:
        """Segment one image.

        Parameters
        ----------
        rgb : ndarray, shape (H, W, 3), uint8
            RGB 0..255 (use :func:`wnetcli.images.read_rgb` for files).

        Returns
        -------
        SegmentationResult
            Labels (H, W) int32 from 1, ucm2 (2H+1, 2W+1) float32 in [0, 1], probs (K, H, W).
        """
        return self.segment_batch([rgb])[0]
