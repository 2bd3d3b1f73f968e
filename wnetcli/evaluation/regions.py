"""The BSDS region benchmark: segmentation covering, probabilistic Rand index, variation of information.

All three come from the contingency table ``n[i, j]`` (pixels with machine label i and human
label j) between a machine segmentation and each human annotation, computed with one
``np.bincount`` on combined labels per annotation.

References
----------
.. [1] P. Arbelaez, M. Maire, C. Fowlkes and J. Malik, "Contour Detection and Hierarchical Image
       Segmentation", IEEE TPAMI 33(5), 2011 (covering, Section 3.2).
.. [2] R. Unnikrishnan, C. Pantofaru and M. Hebert, "Toward Objective Evaluation of Image
       Segmentation Algorithms", IEEE TPAMI 29(6), 2007 (probabilistic Rand index).
.. [3] M. Meila, "Comparing clusterings: an axiomatic view", ICML 2005 (variation of information).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BaseTables",
    "RegionCounts",
    "RegionGroundTruth",
    "RegionScores",
    "nested_region_counts",
    "region_counts",
    "region_scores",
]


def _entropy_bits(counts: np.ndarray, total: float) -> float:
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def _compact_labels(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..n-1 in order, so that contingency tables stay small (int64).

    Non-negative labels are renumbered with a lookup table (linear time: this runs once per level);
    others go through a sort.
    """
    labels = np.asarray(labels)
    if labels.size == 0 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int64)
    present = np.bincount(labels) > 0
    lookup = np.cumsum(present) - 1
    return lookup[labels].astype(np.int64, copy=False)


class RegionGroundTruth:
    """The human segmentations of one image, prepared for contingency tables.

    Parameters
    ----------
    segmentations : sequence of (H, W) int ndarray
        One label map per annotator (the ``Segmentation`` field of the BSDS .mat file).
    """

    def __init__(self, segmentations: Sequence[np.ndarray]) -> None:
        if len(segmentations) == 0:
            raise ValueError("segmentations must hold at least one annotation")
        self.shape = tuple(np.shape(segmentations[0]))
        self.labels: list[np.ndarray] = []
        self.sizes: list[np.ndarray] = []  # pixels per human region, per annotation
        for j, seg in enumerate(segmentations):
            seg = np.asarray(seg)
            if seg.shape != self.shape:
                raise ValueError(f"annotation {j} has shape {seg.shape}, expected {self.shape}")
            compact = _compact_labels(seg.ravel())
            self.labels.append(compact)
            self.sizes.append(np.bincount(compact))
        self.pixels = int(np.prod(self.shape))
        self.entropies = [_entropy_bits(b, self.pixels) for b in self.sizes]

    @property
    def annotators(self) -> int:
        """Number of human annotations."""
        return len(self.labels)

    @property
    def regions(self) -> int:
        """Number of human regions, summed over annotations."""
        return int(sum(b.size for b in self.sizes))

    def measure(self, labels: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Covering overlaps, PRI and VI of one machine segmentation.

        Parameters
        ----------
        labels : (H, W) int ndarray
            Machine labels (non-negative integers; 0 is a region like any other).

        Returns
        -------
        overlaps : (R,) float ndarray
            For every human region (annotations concatenated), its best intersection over union
            with a machine region.
        pri : float
            Rand index averaged over the annotations.
        vi : float
            Variation of information in bits, averaged over the annotations.
        """
        labels = np.asarray(labels)
        if labels.shape != self.shape:
            raise ValueError(f"segmentation has shape {labels.shape}, expected {self.shape}")
        machine = _compact_labels(labels.ravel())
        n_machine = int(machine.max()) + 1
        tables = [
            np.bincount(machine * b.size + human, minlength=n_machine * b.size).reshape(n_machine, b.size)
            for human, b in zip(self.labels, self.sizes, strict=True)
        ]
        return self._scores(tables)

    def base_tables(self, base: np.ndarray) -> BaseTables:
        """Contingency tables of a fine segmentation, to score its coarsenings with :meth:`measure_grouped`.

        Parameters
        ----------
        base : (H, W) int ndarray
            Labels 0..n-1 of the finest level.
        """
        base = np.asarray(base).ravel().astype(np.int64, copy=False)
        if base.size != self.pixels:
            raise ValueError(f"segmentation has {base.size} pixels, expected {self.pixels}")
        n = int(base.max()) + 1
        entries = []
        for human, b in zip(self.labels, self.sizes, strict=True):
            table = np.bincount(base * b.size + human, minlength=n * b.size)
            cells = np.flatnonzero(table)
            entries.append((cells // b.size, cells % b.size, table[cells].astype(np.float64)))
        return BaseTables(regions=n, entries=entries)

    def measure_grouped(self, base: BaseTables, group: np.ndarray) -> tuple[np.ndarray, float, float]:
        """:meth:`measure` of the segmentation that merges the base regions into ``group``.

        Parameters
        ----------
        base : BaseTables
            From :meth:`base_tables`.
        group : (n,) int ndarray
            For each base region, its region (0..m-1) at this level.
        """
        group = np.asarray(group, dtype=np.int64)
        m = int(group.max()) + 1
        tables = [
            np.bincount(group[rows] * b.size + cols, weights=counts, minlength=m * b.size).reshape(m, b.size)
            for (rows, cols, counts), b in zip(base.entries, self.sizes, strict=True)
        ]
        return self._scores(tables)

    def _scores(self, tables: list[np.ndarray]) -> tuple[np.ndarray, float, float]:
        """Overlaps, PRI and VI from the (machine x human) contingency table of each annotation."""
        n = float(self.pixels)
        # Every table has the same row sums: the machine region sizes.
        a = tables[0].sum(axis=1).astype(np.float64)
        a = a[a > 0] if np.any(a == 0) else a
        h_machine = _entropy_bits(a, n)
        pairs = n * (n - 1) / 2
        overlaps, ri, vi = [], 0.0, 0.0
        for table, b, h_human in zip(tables, self.sizes, self.entropies, strict=True):
            table = table.astype(np.float64)
            table = table[table.sum(axis=1) > 0]  # machine labels that do not occur
            rows = table.sum(axis=1)
            union = rows[:, None] + b[None, :] - table
            overlaps.append((table / union).max(axis=0))
            ri += 1.0 - (0.5 * (rows**2).sum() + 0.5 * (b.astype(np.float64) ** 2).sum() - (table**2).sum()) / pairs
            nz = table > 0
            cells = table[nz]
            mutual = float((cells / n * np.log2(cells * n / (rows[:, None] * b[None, :])[nz])).sum())
            vi += h_machine + h_human - 2.0 * mutual
        return np.concatenate(overlaps), ri / self.annotators, vi / self.annotators


@dataclass
class BaseTables:
    """Sparse contingency tables of a fine segmentation against each annotation.

    Attributes
    ----------
    regions : int
        Number of base regions.
    entries : list of (rows, cols, counts)
        Per annotation, the non-zero cells: base region, human region, pixel count.
    """

    regions: int
    entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class RegionCounts:
    """Region measures of every level of one image.

    Attributes
    ----------
    cover_num : (T,) float ndarray
        Sum over human regions of ``|R'| * best overlap`` at each level.
    cover_den : float
        Number of annotations times pixels (the covering's denominator).
    best_num : float
        Covering numerator with each human region's best overlap over all levels.
    pri, vi : (T,) float ndarray
        Probabilistic Rand index and variation of information at each level.
    """

    cover_num: np.ndarray
    cover_den: float
    best_num: float
    pri: np.ndarray
    vi: np.ndarray


def region_counts(levels: Iterable[np.ndarray | None], gt: RegionGroundTruth) -> RegionCounts:
    """Covering, PRI and VI of every level of one image.

    Parameters
    ----------
    levels : iterable of (H, W) int ndarray or None
        The machine segmentation at each level; ``None`` reuses the previous level's results.
    gt : RegionGroundTruth

    Returns
    -------
    RegionCounts
    """
    return _accumulate((None if labels is None else gt.measure(labels) for labels in levels), gt)


def nested_region_counts(
    base: np.ndarray, groups: Iterable[np.ndarray | None], gt: RegionGroundTruth
) -> RegionCounts:
    """:func:`region_counts` of levels that each merge the regions of one base segmentation.

    The contingency tables of ``base`` are computed once; each level's tables are sums of
    their rows (no pass over the pixels), which is what makes scoring 99 levels of a
    hierarchy cheap.

    Parameters
    ----------
    base : (H, W) int ndarray
        Labels 0..n-1 of the finest segmentation.
    groups : iterable of (n,) int ndarray or None
        Per level, the region (0..m-1) of each base region; ``None``: same as the previous level.
    gt : RegionGroundTruth
    """
    tables = gt.base_tables(base)
    return _accumulate((None if g is None else gt.measure_grouped(tables, g) for g in groups), gt)


def _accumulate(measures: Iterable[tuple[np.ndarray, float, float] | None], gt: RegionGroundTruth) -> RegionCounts:
    weights = np.concatenate(gt.sizes).astype(np.float64)
    cover, pri, vi = [], [], []
    best = np.zeros_like(weights)
    for measured in measures:
        if measured is None:
            if not cover:
                raise ValueError("the first level cannot be None")
            cover.append(cover[-1])
            pri.append(pri[-1])
            vi.append(vi[-1])
            continue
        overlaps, level_pri, level_vi = measured
        np.maximum(best, overlaps, out=best)
        cover.append(float((weights * overlaps).sum()))
        pri.append(level_pri)
        vi.append(level_vi)
    return RegionCounts(
        cover_num=np.asarray(cover),
        cover_den=float(gt.annotators * gt.pixels),
        best_num=float((weights * best).sum()),
        pri=np.asarray(pri),
        vi=np.asarray(vi),
    )


@dataclass(frozen=True)
class RegionScores:
    """Region benchmark results over a data set.

    Attributes
    ----------
    covering_ods_threshold, covering_ods, covering_ois, covering_best : float
    pri_ods_threshold, pri_ods, pri_ois : float
    vi_ods_threshold, vi_ods, vi_ois : float
    per_threshold : (T, 4) ndarray
        ``threshold, covering, PRI, VI`` of the data set per threshold.
    per_image : (N, 7) ndarray
        Per image: ``covering threshold, covering, best covering, PRI threshold, PRI, VI threshold,
        VI``, each at the image's best level.
    """

    covering_ods_threshold: float
    covering_ods: float
    covering_ois: float
    covering_best: float
    pri_ods_threshold: float
    pri_ods: float
    pri_ois: float
    vi_ods_threshold: float
    vi_ods: float
    vi_ois: float
    per_threshold: np.ndarray
    per_image: np.ndarray


def region_scores(thresholds: Sequence[float], counts: Sequence[RegionCounts]) -> RegionScores:
    """Covering ODS/OIS/Best, PRI ODS/OIS and VI ODS/OIS over a data set.

    ODS takes the level that is best for the whole data set, OIS each image's best level; the
    first one on ties in both cases (as the official per-image files show).

    Parameters
    ----------
    thresholds : sequence of float, length T
    counts : sequence of RegionCounts, one per image, each with T levels

    Returns
    -------
    RegionScores
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if not counts:
        raise ValueError("counts must hold at least one image")
    num = np.stack([c.cover_num for c in counts])  # (N, T)
    if num.shape[1] != thresholds.size:
        raise ValueError(f"counts have {num.shape[1]} levels, expected {thresholds.size}")
    den = np.array([c.cover_den for c in counts])
    pri = np.stack([c.pri for c in counts])
    vi = np.stack([c.vi for c in counts])
    rows = np.arange(num.shape[0])

    cover_t = num.sum(axis=0) / den.sum()
    pri_t, vi_t = pri.mean(axis=0), vi.mean(axis=0)
    ods_cover, ods_pri, ods_vi = int(np.argmax(cover_t)), int(np.argmax(pri_t)), int(np.argmin(vi_t))
    img_cover = np.argmax(num / den[:, None], axis=1)
    img_pri = np.argmax(pri, axis=1)
    img_vi = np.argmin(vi, axis=1)
    best = np.array([c.best_num for c in counts])
    per_image = np.stack(
        [
            thresholds[img_cover],
            num[rows, img_cover] / den,
            best / den,
            thresholds[img_pri],
            pri[rows, img_pri],
            thresholds[img_vi],
            vi[rows, img_vi],
        ],
        axis=1,
    )
    return RegionScores(
        covering_ods_threshold=float(thresholds[ods_cover]),
        covering_ods=float(cover_t[ods_cover]),
        covering_ois=float(num[rows, img_cover].sum() / den.sum()),
        covering_best=float(best.sum() / den.sum()),
        pri_ods_threshold=float(thresholds[ods_pri]),
        pri_ods=float(pri_t[ods_pri]),
        pri_ois=float(pri[rows, img_pri].mean()),
        vi_ods_threshold=float(thresholds[ods_vi]),
        vi_ods=float(vi_t[ods_vi]),
        vi_ois=float(vi[rows, img_vi].mean()),
        per_threshold=np.stack([thresholds, cover_t, pri_t, vi_t], axis=1),
        per_image=per_image,
    )
