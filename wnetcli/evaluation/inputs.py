"""What a method gives for one image, and reading precomputed results in every format.

A *prediction* is one of three kinds (:class:`Prediction`):

- ``"ucm2"``: a hierarchy, an ultrametric contour map (2H+1, 2W+1) in [0, 1];
- ``"segs"``: a list of segmentations, one per level;
- ``"soft"``: a soft boundary map (H, W) in [0, 1] (boundary benchmark only).

A *method* is any picklable callable ``method(image: BsdsImage) -> Prediction`` (it runs in worker
processes under ``--jobs``): :class:`ResultsDir` reads files, :mod:`.baselines` computes
scikit-image hierarchies and :class:`SegmenterMethod` runs the segmentation pipeline with a
recipe (the network only where the recipe reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from wnetcli.errors import InputError, ModelError
from wnetcli.evaluation.dataset import BsdsImage

__all__ = ["KINDS", "Method", "Prediction", "ResultsDir", "SegmenterMethod", "read_prediction"]

KINDS = ("ucm2", "segs", "soft")


@dataclass
class Prediction:
    """A method's output for one image.

    Attributes
    ----------
    kind : {"ucm2", "segs", "soft"}
    data : ndarray or list of ndarray
        ``ucm2``: (2H+1, 2W+1) float in [0, 1]; ``segs``: list of (H, W) int label maps;
        ``soft``: (H, W) float in [0, 1].
    """

    kind: str
    data: Any

    def check(self, shape: tuple[int, int], source: str) -> Prediction:
        """Raise :class:`InputError` (naming ``source``) unless the prediction fits an H x W image."""
        height, width = shape
        if self.kind == "ucm2":
            expected = (2 * height + 1, 2 * width + 1)
            got = np.shape(self.data)
        elif self.kind == "soft":
            expected, got = shape, np.shape(self.data)
        elif self.kind == "segs":
            if len(self.data) == 0:
                raise InputError(f"{source}: the list of segmentations is empty")
            expected = shape
            got = next((np.shape(s) for s in self.data if np.shape(s) != shape), shape)
        else:
            raise InputError(f"{source}: unknown prediction kind {self.kind!r}")
        if got != expected:
            hint = ""
            if self.kind == "soft" and len(got) == 2 and all(side % 2 == 1 for side in got):
                hint = " (a .png is read as a soft boundary map of the image's size; a ucm2 goes in a .npy or .mat)"
            raise InputError(
                f"{source}: {self.kind} has shape {got}, expected {expected} for a {height}x{width} image{hint}"
            )
        if self.kind != "segs" and not np.isfinite(self.data).all():
            raise InputError(f"{source}: the {self.kind} map holds NaN or infinite values")
        return self


class Method(Protocol):
    """A segmentation method under evaluation (picklable; called in worker processes)."""

    name: str

    def __call__(self, image: BsdsImage) -> Prediction: ...


def _read_png(path: Path) -> np.ndarray:
    """A greyscale PNG as float in [0, 1], scaled by its bit depth (8 or 16 bit)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            array = np.asarray(img)
    except Exception as exc:  # Pillow raises several types for corrupt files
        raise InputError(f"cannot read {path}: {exc}") from exc
    if array.ndim == 3:  # a grey map saved as RGB(A): the channels are equal
        array = array[..., 0]
    scale = 65535.0 if array.dtype == np.uint16 or array.max(initial=0) > 255 else 255.0
    return array.astype(np.float64) / scale


def _read_label_png(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            array = np.asarray(img)
    except Exception as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    if array.ndim == 3:  # colour-coded labels: one id per distinct colour
        flat = array.reshape(-1, array.shape[2])
        _, inverse = np.unique(flat, axis=0, return_inverse=True)
        array = inverse.reshape(array.shape[:2])
    return array.astype(np.int64)


def _read_mat(path: Path) -> Prediction:
    from scipy.io import loadmat

    try:
        content = loadmat(path)
    except Exception as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    if "ucm2" in content:
        return Prediction("ucm2", np.asarray(content["ucm2"], dtype=np.float64))
    if "segs" in content:
        return Prediction("segs", [np.asarray(s, dtype=np.int64) for s in np.ravel(content["segs"])])
    raise InputError(f"{path} has neither a 'ucm2' nor a 'segs' variable")


def read_prediction(path: str | Path, shape: tuple[int, int]) -> Prediction:
    """Read one result file (or folder) for an image of size ``shape`` = (H, W).

    Formats: ``.mat`` with ``ucm2`` or a cell ``segs``; ``.npy`` holding a ucm2 (2H+1, 2W+1) or a
    soft map (H, W); ``.png`` likewise (16-bit PNGs are divided by 65535, 8-bit by 255); a folder
    of label PNGs, one segmentation per file in name order.
    """
    path = Path(path)
    height, width = shape
    doubled = (2 * height + 1, 2 * width + 1)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
        if not files:
            raise InputError(f"no label PNGs in {path}")
        prediction = Prediction("segs", [_read_label_png(p) for p in files])
    elif path.suffix.lower() == ".mat":
        prediction = _read_mat(path)
    elif path.suffix.lower() in (".npy", ".png"):
        if path.suffix.lower() == ".npy":
            try:
                array = np.load(path, allow_pickle=False)
            except Exception as exc:
                raise InputError(f"cannot read {path}: {exc}") from exc
        else:
            array = _read_png(path)
        kind = "ucm2" if np.shape(array) == doubled else "soft"
        prediction = Prediction(kind, np.asarray(array, dtype=np.float64))
    else:
        raise InputError(f"unsupported result file {path} (expected .mat, .npy, .png or a folder)")
    return prediction.check(shape, str(path))


# Names tried for image id ``i``, in order; ``.ucm.*`` are written by ``wnet segment --save ucm``.
_CANDIDATES = ("{i}.mat", "{i}.ucm.npy", "{i}.npy", "{i}.ucm.png", "{i}.png", "{i}")


@dataclass
class ResultsDir:
    """Precomputed results of any method: one file (or folder) per image id in ``root``."""

    root: Path
    name: str = "results"

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise InputError(f"results folder not found: {self.root}")

    def locate(self, image_id: str) -> Path:
        """The result file of ``image_id``; :class:`InputError` if there is none."""
        for pattern in _CANDIDATES:
            candidate = self.root / pattern.format(i=image_id)
            if candidate.exists():
                return candidate
        raise InputError(f"no result for image {image_id} in {self.root} (tried {image_id}.mat/.npy/.png)")

    def __call__(self, image: BsdsImage) -> Prediction:
        from PIL import Image

        with Image.open(image.image) as img:
            shape = (img.height, img.width)
        return read_prediction(self.locate(image.id), shape)


@dataclass
class SegmenterMethod:
    """The segmentation pipeline (``wnet segment``) as a method: its ucm2 per image.

    The segmenter is built on first use in each process (onnxruntime sessions do not pickle);
    it loads the model only if the recipe reads the network.

    Attributes
    ----------
    model : Path or None
        ONNX model; ``None`` is the default shipped model.
    options : SegmentOptions or None
        :class:`wnetcli.segmentation.SegmentOptions` (the recipe among them), or ``None`` for
        its defaults.
    """

    model: Path | None = None
    options: Any = None
    name: str = "wnet"
    _segmenter: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_segmenter"] = None
        return state

    def segmenter(self):
        """The :class:`wnetcli.segmentation.Segmenter`, built once per process."""
        if self._segmenter is None:
            try:
                from wnetcli.segmentation import Segmenter
            except ImportError as exc:
                raise ModelError(f"the segmentation pipeline is not available: {exc}") from exc
            self._segmenter = Segmenter(self.model, self.options)
        return self._segmenter

    def describe(self) -> dict:
        """The settings of the run (the ``settings`` of ``metrics.json``): the recipe with the
        keys of a recipe file, and the model when the recipe runs it."""
        from wnetcli.model_info import file_sha256
        from wnetcli.segmentation.recipe import recipe_to_dict

        segmenter = self.segmenter()
        runs = segmenter.runs_network
        return {
            "recipe": recipe_to_dict(segmenter.recipe),
            "max_size": segmenter.options.max_size,
            "model": str(segmenter.model_path) if runs else None,
            "model_sha256": file_sha256(segmenter.model_path) if runs else None,
        }

    def __call__(self, image: BsdsImage) -> Prediction:
        from wnetcli.images import read_rgb

        result = self.segmenter().segment(read_rgb(image.image))
        return Prediction("ucm2", np.asarray(result.ucm2, dtype=np.float64))
