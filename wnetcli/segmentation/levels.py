"""The level scale of a hierarchy: where its merge levels sit in [0, 1], and cutting it.

A hierarchy's raw merge levels are mean boundary strengths; how high they go depends on the
image's contrast. :class:`LevelScale` maps them, per image and monotonically (so no partition
changes, only the level at which it appears), onto the scale that ``--level`` reads:

- 1.0 is where the image's strongest structure merges (the last merge: one region);
- :data:`DEFAULT_LEVEL` (0.5) is the default cut. On an image of strong contrast it is the
  data-set cut chosen on BSDS500 train; on an image whose strongest structure is weaker than
  that, it is a fixed fraction of the way up to the top, so the default never leaves a single
  region where the hierarchy has structure above its finest level;
- levels in between are spread linearly on either side of the default.

:func:`cut_into_regions` cuts at a number of regions exactly, replaying the merges in order
(a ucm threshold cannot separate merges tied at one level).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wnetcli.errors import InputError
from wnetcli.options import check_field_types

__all__ = [
    "DEFAULT_LEVEL",
    "Cut",
    "LevelScale",
    "border_strength",
    "calibrate_levels",
    "cut_into_regions",
]

#: The default cut on the scale of :class:`LevelScale`.
DEFAULT_LEVEL = 0.5


def border_strength(ucm2: np.ndarray) -> float:
    """How strong an image's finest region borders are: the mean ucm level over the border
    pixels of the image-size boundary map (``ucm2[2::2, 2::2] > 0``, as the BSDS benchmark
    reads a ucm2); 0 for an image of one region."""
    borders = np.asarray(ucm2)[2::2, 2::2]
    values = borders[borders > 0]
    return float(values.mean()) if values.size else 0.0


def calibrate_levels(values: np.ndarray, factor: float) -> np.ndarray:
    """Divide the odds of ucm levels by ``factor``: ``u / (u + factor * (1 - u))``.

    A monotone map of [0, 1] onto itself that keeps 0 and 1, so it changes no partition of
    the hierarchy, only the levels at which they appear: with ``factor > 1`` every border
    weakens (a fixed threshold then merges more), with ``factor < 1`` it strengthens. Near 0 it
    is a plain division by ``factor``.

    Parameters
    ----------
    values : float ndarray in [0, 1]
        A ucm2, or merge levels.
    factor : float
        > 0.

    Returns
    -------
    float32 ndarray of the same shape, in [0, 1]
    """
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    values = np.asarray(values, dtype=np.float32)
    return (values / (values + np.float32(factor) * (1 - values))).astype(np.float32)


@dataclass(frozen=True)
class LevelScale:
    """How one image's merge levels are put on the 0..1 scale of ``--level``.

    Two monotone steps, each per image:

    1. Calibration: the odds of every level are divided by ``(b / reference) ** calibration``
       (:func:`calibrate_levels`), ``b`` the image's :func:`border_strength`: an image whose
       borders are all strong (many contrasted edges) needs a higher cut than one of faint
       borders for the same granularity.
    2. Scale: the calibrated level ``pivot`` maps to :data:`DEFAULT_LEVEL` and the image's top
       (last) merge level to 1.0, linearly between 0, the pivot and the top, where ``pivot``
       is ``cut`` or, on an image whose top is lower than ``cut / top_fraction``,
       ``top_fraction`` times its top.

    Attributes:
        calibration: exponent of step 1 (0: no calibration), in [0, 2].
        reference: the border strength that step 1 leaves unchanged (the median of BSDS500
            train's images).
        cut: the calibrated level of the default cut on an image of strong contrast (the
            covering-ODS level of BSDS500 train).
        top_fraction: on an image of weaker contrast the default cut lies at this fraction of
            its top level, in (0, 1) (the lowest fraction that left every BSDS500 train
            measure within chance of the cut at ``cut``; docs/experiments.md).
    """

    calibration: float = 0.4
    reference: float = 0.171
    cut: float = 0.37
    top_fraction: float = 0.78

    def __post_init__(self) -> None:
        check_field_types(self)
        if not 0.0 <= self.calibration <= 2.0:
            raise InputError(f"LevelScale.calibration must be in [0, 2], got {self.calibration}")
        if not self.reference > 0:
            raise InputError(f"LevelScale.reference must be > 0, got {self.reference}")
        if not 0.0 < self.cut < 1.0:
            raise InputError(f"LevelScale.cut must be in (0, 1), got {self.cut}")
        if not 0.0 < self.top_fraction < 1.0:
            raise InputError(f"LevelScale.top_fraction must be in (0, 1), got {self.top_fraction}")

    def rescale(self, ucm2: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Put a raw hierarchy on this scale.

        Parameters
        ----------
        ucm2 : (2H+1, 2W+1) float ndarray in [0, 1]
            The hierarchy's raw ultrametric contour map.
        levels : (n-1,) float ndarray
            Its non-decreasing merge levels, the same values as ``ucm2``'s borders.

        Returns
        -------
        ucm2, levels : float32 ndarrays of the same shapes, in [0, 1]
            The top merge at 1.0; a hierarchy of one region (no merge above 0) is returned
            unchanged.
        """
        ucm2 = np.asarray(ucm2, dtype=np.float32)
        levels = np.asarray(levels, dtype=np.float32)
        strength = border_strength(ucm2)
        if strength <= 0:  # one region: nothing to scale
            return ucm2, levels
        if self.calibration > 0:
            factor = (strength / self.reference) ** self.calibration
            ucm2, levels = calibrate_levels(ucm2, factor), calibrate_levels(levels, factor)
        top = float(ucm2.max())
        pivot = min(self.cut, self.top_fraction * top)
        return self._stretch(ucm2, pivot, top), self._stretch(levels, pivot, top)

    @staticmethod
    def _stretch(values: np.ndarray, pivot: float, top: float) -> np.ndarray:
        """[0, pivot] -> [0, DEFAULT_LEVEL] and [pivot, top] -> [DEFAULT_LEVEL, 1], linearly
        (``0 < pivot < top``)."""
        below = values * np.float32(DEFAULT_LEVEL / pivot)
        slope = np.float32((1 - DEFAULT_LEVEL) / (top - pivot))
        above = np.float32(DEFAULT_LEVEL) + (values - np.float32(pivot)) * slope
        return np.where(values <= pivot, below, np.minimum(above, np.float32(1.0))).astype(np.float32)


def cut_into_regions(superpixels: np.ndarray, merges: np.ndarray, regions: int) -> np.ndarray:
    """The partition of a hierarchy with exactly ``regions`` regions, where it has that many.

    Parameters
    ----------
    superpixels : (H, W) int ndarray
        The finest regions, labels 1..n.
    merges : (m, 2) int ndarray
        The hierarchy's merges in order, each the 0-based ids of the two regions it joined
        (:attr:`wnetcli.segmentation.hierarchy.Hierarchy.merges`); ``m = n - 1`` for an image.
    regions : int
        Wanted number of regions, >= 1.

    Returns
    -------
    (H, W) int32 ndarray
        Labels 1..k after the first ``n - regions`` merges, tied levels taken in merge order:
        ``k = regions`` when ``1 <= regions <= n``, else the nearest partition the hierarchy
        has (``k = n`` for more regions than superpixels).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if regions < 1:
        raise InputError(f"regions must be at least 1, got {regions}")
    superpixels = np.asarray(superpixels)
    n = int(superpixels.max())
    done = np.asarray(merges, dtype=np.int64).reshape(-1, 2)[: max(0, n - regions)]
    graph = coo_matrix((np.ones(len(done), dtype=np.int8), (done[:, 0], done[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    # Components numbered in order of their first superpixel: labels 1..k.
    return (component[superpixels - 1] + 1).astype(np.int32)


@dataclass(frozen=True)
class Cut:
    """Which partition of the hierarchy to output.

    Attributes:
        regions: exactly this many regions (:func:`cut_into_regions`), or
        level: the cut of the scaled ucm2 at this level in [0, 1] (:class:`LevelScale`);
            both None: :data:`DEFAULT_LEVEL`.
    """

    regions: int | None = None
    level: float | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.regions is not None and self.level is not None:
            raise InputError("Cut: give either regions or level, not both")
        if self.regions is not None and self.regions < 1:
            raise InputError(f"Cut.regions must be at least 1, got {self.regions}")
        if self.level is not None and not 0.0 <= self.level <= 1.0:
            raise InputError(f"Cut.level must be in [0, 1], got {self.level}")

    def labels(
        self, ucm2: np.ndarray, levels: np.ndarray, superpixels: np.ndarray, merges: np.ndarray
    ) -> tuple[np.ndarray, float, str]:
        """Cut a scaled hierarchy.

        Parameters
        ----------
        ucm2 : (2H+1, 2W+1) float ndarray
            The hierarchy on the :class:`LevelScale`.
        levels : (n-1,) float ndarray
            Its merge levels, on the same scale.
        superpixels : (H, W) int ndarray, labels 1..n
        merges : (n-1, 2) int ndarray
            As :attr:`wnetcli.segmentation.hierarchy.Hierarchy.merges`.

        Returns
        -------
        labels : (H, W) int32 ndarray
            Labels 1..k, each one 4-connected region.
        threshold : float
            The level cut at (for ``regions``: the level of the last merge made).
        note : str
            ``""``, or why the labels do not have the ``regions`` asked for.
        """
        from skimage.measure import label

        from wnetcli.ucm import ucm2_to_labels

        if self.regions is None:
            threshold = DEFAULT_LEVEL if self.level is None else float(self.level)
            # ucm2_to_labels' regions are 4-connected already (the merges follow 4-adjacent
            # borders); the relabelling guarantees it.
            return label(ucm2_to_labels(ucm2, threshold), background=0, connectivity=1).astype(np.int32), threshold, ""
        labels = cut_into_regions(superpixels, merges, self.regions)
        made = int(superpixels.max()) - int(labels.max())
        threshold = float(levels[made - 1]) if made > 0 else 0.0
        note = "" if int(labels.max()) == self.regions else (
            f"{self.regions} regions asked for; the hierarchy has {int(labels.max())} at most"
        )
        return labels, threshold, note
