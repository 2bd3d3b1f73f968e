"""Finding BSDS500 images and reading their human annotations (.mat files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wnetcli.errors import DataError
from wnetcli.images import is_image_path, read_size

__all__ = ["SPLITS", "BsdsImage", "GroundTruth", "find_split", "load_ground_truth", "pair_folder"]

SPLITS = ("test", "val", "train")

# The official download nests the data below BSR/BSDS500/data; copies often start at data/.
_LAYOUTS = (Path("BSR") / "BSDS500" / "data", Path("BSDS500") / "data", Path("data"), Path("."))


@dataclass(frozen=True)
class BsdsImage:
    """One image of a split and its annotation file.

    Attributes
    ----------
    id : str
        The image id (file stem, e.g. ``"2018"``).
    image : Path
        The photograph (.jpg).
    ground_truth : Path
        The annotations (.mat with a ``groundTruth`` cell array).
    """

    id: str
    image: Path
    ground_truth: Path


@dataclass
class GroundTruth:
    """The human annotations of one image.

    Attributes
    ----------
    segmentations : list of (H, W) uint16 ndarray
        Label maps, labels from 1, one per annotator.
    boundaries : list of (H, W) bool ndarray
        Boundary maps, one per annotator.
    """

    segmentations: list[np.ndarray]
    boundaries: list[np.ndarray]

    @property
    def shape(self) -> tuple[int, int]:
        """Image size (H, W)."""
        return tuple(self.segmentations[0].shape)


def pair_folder(images_dir: Path, gt_dir: Path) -> list[BsdsImage]:
    """Pair every image in ``images_dir`` with ``gt_dir/<id>.mat``, sorted by id.

    Raises
    ------
    DataError
        If ``images_dir`` holds no image or an image has no annotation file.
    """
    images = sorted((p for p in images_dir.iterdir() if p.is_file() and is_image_path(p)), key=lambda p: p.stem)
    if not images:
        raise DataError(f"no images in {images_dir}")
    pairs = []
    for image in images:
        mat = gt_dir / f"{image.stem}.mat"
        if not mat.is_file():
            raise DataError(f"image {image} has no annotations: {mat} is missing")
        pairs.append(BsdsImage(image.stem, image, mat))
    return pairs


def find_split(root: str | Path, split: str = "test") -> list[BsdsImage]:
    """The images of a BSDS500 split, in either layout.

    Accepted layouts below ``root``: ``BSR/BSDS500/data/{images,groundTruth}/SPLIT`` (the official
    download) or ``{images,groundTruth}/SPLIT``.

    Raises
    ------
    DataError
        If ``root`` or the split is missing, or an image has no annotation file.
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"BSDS500 folder not found: {root}")
    for layout in _LAYOUTS:
        base = root / layout
        if (base / "images").is_dir() and (base / "groundTruth").is_dir():
            images_dir, gt_dir = base / "images" / split, base / "groundTruth" / split
            if not images_dir.is_dir() or not gt_dir.is_dir():
                raise DataError(f"split {split!r} not found: expected {images_dir} and {gt_dir}")
            return pair_folder(images_dir, gt_dir)
    raise DataError(
        f"{root} is not a BSDS500 folder: expected BSR/BSDS500/data/{{images,groundTruth}}/{split} "
        f"or {{images,groundTruth}}/{split} below it"
    )


def load_ground_truth(path: str | Path, image: str | Path | None = None) -> GroundTruth:
    """Read a BSDS annotation file.

    Parameters
    ----------
    path : path-like
        A .mat file whose variable ``groundTruth`` is a 1 x N cell array of structs with fields
        ``Segmentation`` (uint16 labels) and ``Boundaries`` (0/1).
    image : path-like, optional
        The photograph annotated: its size (H, W) must be the annotations' size.

    Raises
    ------
    DataError
        If the file cannot be read, does not have that structure, or is not of ``image``'s size.
    """
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    try:
        cells = loadmat(path)["groundTruth"]
    except KeyError:
        raise DataError(f"{path} has no variable 'groundTruth'") from None
    except Exception as exc:  # scipy raises several types for corrupt or non-MAT files
        raise DataError(f"cannot read annotations {path}: {exc}") from exc
    segmentations, boundaries = [], []
    try:
        for cell in np.ravel(cells):
            seg = np.asarray(cell["Segmentation"][0, 0])
            bdry = np.asarray(cell["Boundaries"][0, 0]).astype(bool)
            if seg.ndim != 2 or seg.shape != bdry.shape:
                raise ValueError(f"Segmentation {seg.shape} and Boundaries {bdry.shape} disagree")
            segmentations.append(seg)
            boundaries.append(bdry)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise DataError(f"malformed annotations in {path}: {exc}") from exc
    if not segmentations:
        raise DataError(f"{path} holds no annotation")
    if len({s.shape for s in segmentations}) != 1:
        raise DataError(f"annotations in {path} have different sizes")
    gt = GroundTruth(segmentations, boundaries)
    if image is not None:
        # Checked here, before any method runs: a method's output is compared with the
        # annotations' size, so a wrong-sized annotation file would otherwise be reported as the
        # method's error.
        height, width = read_size(image)
        if gt.shape != (height, width):
            raise DataError(
                f"annotation file {path} is {gt.shape[0]}x{gt.shape[1]} but its image {image} is "
                f"{height}x{width}: the annotations belong to another image or were resized"
            )
    return gt
