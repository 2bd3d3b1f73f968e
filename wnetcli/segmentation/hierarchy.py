"""A region hierarchy from a boundary map, recorded as a ucm2 (BSDS conventions).

1. :func:`watershed_superpixels`: a watershed of the boundary map from its local minima,
   split into 4-connected superpixels.
2. :func:`merge_regions`: greedy merging on the region adjacency graph. At each step the
   adjacent pair with the weakest boundary (the mean boundary strength along their shared
   border) merges. A binary heap over the graph's edges, union by neighbour-dictionaries and
   per-border lists of the superpixel borders do the bookkeeping, so a merge costs
   O(degree log E) instead of the per-step graph rebuild of
   ``skimage.graph.merge_hierarchical``.
3. :func:`wnetcli.ucm.edges_to_ucm2`: every border between two 4-adjacent pixels gets the level at which
   its two sides merged; the levels are made monotone (running maximum), so the map is an
   ultrametric and its cuts at growing thresholds are nested partitions.

References
----------
.. [1] P. Arbelaez, M. Maire, C. Fowlkes and J. Malik, "Contour Detection and Hierarchical Image
       Segmentation", IEEE TPAMI 33(5), 2011.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, replace
from itertools import count

import numpy as np

from wnetcli.errors import InputError
from wnetcli.options import check_field_types
from wnetcli.ucm import edges_to_ucm2

# scipy.ndimage is imported where it is used: it is slow to import (docs/experiments.md, start-up),
# and the main process of a folder run (decoding and the network) never needs it.

__all__ = [
    "Hierarchy",
    "MergeOptions",
    "PixelDescriptors",
    "SuperpixelOptions",
    "build_hierarchy",
    "merge_regions",
    "watershed_superpixels",
]


@dataclass
class Hierarchy:
    """The result of :func:`build_hierarchy`.

    Attributes:
        ucm2: (2H+1, 2W+1) float32 ultrametric contour map, values in [0, 1].
        superpixels: (H, W) int32 finest regions, labels 1..n, each 4-connected.
        levels: (n-1,) float32 non-decreasing merge levels, one per merge (the ucm values).
        merges: (n-1, 2) int64, the 0-based ids (superpixel label - 1) of the two regions each
            merge joined, in merge order (:func:`wnetcli.segmentation.levels.cut_into_regions`).
    """

    ucm2: np.ndarray
    superpixels: np.ndarray
    levels: np.ndarray
    merges: np.ndarray

    @property
    def n_superpixels(self) -> int:
        """Number of regions at the finest level."""
        return int(self.levels.size + 1)


@dataclass
class PixelDescriptors:
    """Per-pixel descriptors of the region-likeness merge term, the sparse ones kept sparse.

    Each part is ``(kind, weight, data)``; a region's descriptor sum is the concatenation of
    its parts' sums over its pixels, each times its weight:

    - ``("dense", w, values)``: (C, H, W) float values (a soft segmentation, say);
    - ``("soft_bins", w, (lower, upper_weight, n_bins))``: triangular soft histogram bins in
      the form of :func:`wnetcli.segmentation.cues.histograms.soft_bin_positions`;
    - ``("labels", w, (labels, n_labels))``: (H, W) ints in [0, n_labels), one-hot.

    Summing the sparse forms with ``bincount`` costs a few passes over the pixels, where the
    dense one-hot or soft-bin arrays would cost one per bin.
    """

    parts: list[tuple[str, float, object]]

    KINDS = ("dense", "soft_bins", "labels")

    def __post_init__(self) -> None:
        for kind, _, _ in self.parts:
            if kind not in self.KINDS:
                raise ValueError(f"descriptor part kind must be one of {', '.join(self.KINDS)}, got {kind!r}")

    def region_sums(self, superpixels: np.ndarray) -> np.ndarray:
        """(n, D) float64: the weighted descriptor sums over each superpixel (labels 1..n)."""
        n = int(superpixels.max())
        regions = superpixels.ravel().astype(np.int64) - 1
        columns = []
        for kind, weight, data in self.parts:
            if kind == "dense":
                columns.append(weight * _dense_region_sums(regions, n, np.asarray(data, dtype=np.float32)))
            elif kind == "soft_bins":
                lower, upper_weight, n_bins = data
                index = regions * n_bins + np.asarray(lower).ravel()
                upper = np.asarray(upper_weight, dtype=np.float64).ravel()
                sums = np.bincount(index, weights=1.0 - upper, minlength=n * n_bins)
                sums += np.bincount(index + 1, weights=upper, minlength=n * n_bins)
                columns.append(weight * sums.reshape(n, n_bins))
            else:
                labels, n_labels = data
                sums = np.bincount(regions * n_labels + np.asarray(labels).ravel(), minlength=n * n_labels)
                columns.append(weight * sums.reshape(n, n_labels).astype(np.float64))
        return np.concatenate(columns, axis=1)


def _dense_region_sums(regions: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    """(n, C) sums of (C, H, W) ``values`` over the 0-based ``regions`` (flat, one per pixel)."""
    from scipy import sparse

    # (n, pixels) indicator times (pixels, C) values: every sum in one pass.
    indicator = sparse.csr_matrix(
        (np.ones(regions.size, dtype=np.float32), (regions, np.arange(regions.size))), shape=(n, regions.size)
    )
    return np.asarray(indicator @ values.reshape(-1, regions.size).T, dtype=np.float64)


@dataclass(frozen=True)
class SuperpixelOptions:
    """How :func:`watershed_superpixels` over-segments a boundary map.

    Fewer superpixels make the merging faster (it is a Python loop over merges); the borders
    stay on the boundary map's ridges either way. Lengths are in pixels of the map
    (:meth:`on_grid` turns the image's into a coarser grid's).

    Attributes:
        quantisation: the map is rounded to this many grey levels, which merges the shallow
            minima that float noise leaves in flat areas.
        sigma: Gaussian smoothing (pixels) of the map the watershed floods (only; the merge
            criterion reads the unsmoothed map); 0: none.
        window: a marker is a pixel equal to the minimum of the ``window x window`` square
            around it (connected such pixels form one marker); 3 gives every local minimum,
            larger windows fewer superpixels.
    """

    quantisation: int = 256
    sigma: float = 1.0
    window: int = 11

    def __post_init__(self) -> None:
        check_field_types(self)
        if not 2 <= self.quantisation <= 65536:  # the levels are stored as uint16
            raise InputError(f"SuperpixelOptions.quantisation must be between 2 and 65536, got {self.quantisation}")
        if self.sigma < 0:
            raise InputError(f"SuperpixelOptions.sigma must be >= 0, got {self.sigma}")
        if self.window < 1:
            raise InputError(f"SuperpixelOptions.window must be at least 1, got {self.window}")

    def on_grid(self, downsample: int) -> SuperpixelOptions:
        """These options, lengths in the image's pixels, for a grid ``downsample`` times coarser."""
        if downsample == 1:
            return self
        return replace(self, sigma=self.sigma / downsample, window=max(1, round(self.window / downsample)))


@dataclass(frozen=True)
class MergeOptions:
    """How :func:`merge_regions` chooses the next two regions to merge.

    Attributes:
        likeness: share of region likeness in the merge cost, in [0, 1] (the rest is the mean
            boundary strength along the border); 0: boundary strength alone.
        size_prior: regions smaller than about this fraction of the image merge earlier, even
            behind a contrasted border (texture, noise); 0: no size term.
    """

    likeness: float = 0.45
    size_prior: float = 0.01

    def __post_init__(self) -> None:
        check_field_types(self)
        if not 0.0 <= self.likeness <= 1.0:
            raise InputError(f"MergeOptions.likeness must be in [0, 1], got {self.likeness}")
        if self.size_prior < 0:
            raise InputError(f"MergeOptions.size_prior must be >= 0, got {self.size_prior}")


def watershed_superpixels(strength: np.ndarray, options: SuperpixelOptions = SuperpixelOptions()) -> np.ndarray:
    """Over-segment a boundary map: watershed basins grown from its (windowed) local minima.

    Parameters
    ----------
    strength : (H, W) float ndarray in [0, 1]
        Boundary map.
    options : SuperpixelOptions, optional

    Returns
    -------
    (H, W) int32 ndarray
        Labels 1..n; each label is one 4-connected region and every pixel has one (no
        watershed lines).
    """
    from scipy import ndimage as ndi
    from skimage.measure import label
    from skimage.segmentation import watershed

    if options.sigma > 0:
        strength = ndi.gaussian_filter(strength, options.sigma, mode="nearest")
    levels = np.round(np.clip(strength, 0.0, 1.0) * (options.quantisation - 1)).astype(np.uint16)
    markers, _ = ndi.label(levels == ndi.minimum_filter(levels, options.window, mode="nearest"))
    basins = watershed(levels, markers, connectivity=1)
    # Basins grown from 8-connected markers can be only 8-connected; the ucm needs 4-connected
    # regions (merges follow 4-adjacent borders).
    return label(basins, connectivity=1).astype(np.int32)


def _pixel_borders(superpixels: np.ndarray, strength: np.ndarray):
    """Superpixel borders: one entry per pair of 4-adjacent pixels with different labels.

    Returns the graph edges ``(lo, hi)`` (0-based superpixel ids, lo < hi), their summed and
    counted pixel-border strengths, and for the right / down pixel pairs the edge id of each
    pair (-1 inside a superpixel).
    """
    n = int(superpixels.max())
    ids = superpixels.astype(np.int64) - 1
    pairs = [
        (ids[:, :-1], ids[:, 1:], 0.5 * (strength[:, :-1] + strength[:, 1:])),  # right neighbours
        (ids[:-1, :], ids[1:, :], 0.5 * (strength[:-1, :] + strength[1:, :])),  # down neighbours
    ]
    cross = [a != b for a, b, _ in pairs]
    keys = np.concatenate(
        [(np.minimum(a, b) * n + np.maximum(a, b))[c] for (a, b, _), c in zip(pairs, cross, strict=True)]
    )
    border_strength = np.concatenate([s[c] for (_, _, s), c in zip(pairs, cross, strict=True)])
    edges, inverse = np.unique(keys, return_inverse=True)
    sums = np.bincount(inverse, weights=border_strength, minlength=edges.size)
    counts = np.bincount(inverse, minlength=edges.size)
    edge_ids = []
    start = 0
    for c in cross:
        ids_map = np.full(c.shape, -1, dtype=np.int64)
        stop = start + int(c.sum())
        ids_map[c] = inverse[start:stop]
        edge_ids.append(ids_map)
        start = stop
    return edges // n, edges % n, sums, counts, edge_ids[0], edge_ids[1]


def merge_regions(
    lo: np.ndarray,
    hi: np.ndarray,
    sums: np.ndarray,
    counts: np.ndarray,
    areas: np.ndarray,
    size_scale: float = 0.0,
    descriptors: np.ndarray | None = None,
    descriptor_weight: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy merging of a region adjacency graph by mean border strength and region likeness.

    The cost of merging regions A and B is ``(1 - w) * border + w * unlike``, where ``border``
    is the mean strength along their border, ``unlike`` half the L1 distance between the mean
    descriptors of A and B (the total-variation distance when descriptors are probability
    vectors) and ``w = descriptor_weight``; times ``1 - exp(-min(|A|, |B|) / size_scale)`` when
    ``size_scale > 0``: a region much smaller than ``size_scale`` pixels (texture, noise)
    merges early even behind a contrasted border.

    Parameters
    ----------
    lo, hi : (E,) int ndarray
        The graph's edges between regions ``0..n-1``.
    sums, counts : (E,) ndarray
        Summed strength and number of pixel borders along each edge (``counts > 0``).
    areas : (n,) ndarray
        Region sizes in pixels.
    size_scale : float
        Size (pixels) below which the size term lowers the cost; 0: no size term.
    descriptors : (n, D) float ndarray, optional
        Per-region sums over its pixels of a per-pixel descriptor whose half-L1 distances lie
        in [0, 1] (soft-segmentation probabilities, say); a region's mean is its sum over its
        area. Needed when ``descriptor_weight > 0``.
    descriptor_weight : float
        ``w`` above, in [0, 1].

    Returns
    -------
    edge_levels : (E,) float32 ndarray
        For each edge the level at which its two regions end up in one region.
    merge_levels : (n - c,) float32 ndarray
        The non-decreasing level of each merge in order (c = number of connected components
        of the graph, 1 for an image).
    merges : (n - c, 2) int64 ndarray
        The two regions (ids ``0..n-1``) each merge joined, in order; a merged region goes on
        under the id of one of its two parts.
    """
    areas = [float(a) for a in areas]
    by_size = size_scale > 0
    likeness = descriptor_weight > 0
    if likeness:
        if descriptors is None or len(descriptors) != len(areas):
            raise ValueError("descriptor_weight > 0 needs one descriptor sum per region")
        # Row r holds region r's descriptor sum and mean; a merge updates the surviving row.
        totals = np.array(descriptors, dtype=np.float64)
        means = totals / np.maximum(np.asarray(areas), 1.0)[:, None]
    border_share = 1.0 - descriptor_weight

    def size_factor(area: float) -> float:
        return 1.0 - math.exp(-area / size_scale) if by_size else 1.0

    # The size term of a pair is size_factor(min(|A|, |B|)), which is min(factor[A], factor[B])
    # since the factor grows with the area: one factor per region, updated when it grows.
    factors = [size_factor(area) for area in areas]

    def unlike(first, second) -> list[float]:
        # Half the L1 distances between the mean descriptors of regions first[i] and second[i]
        # (either may be one region), in one go.
        if not likeness:
            return [0.0] * max(np.size(first), np.size(second))
        return (0.5 * np.abs(means[first] - means[second]).sum(axis=-1)).reshape(-1).tolist()

    def cost(record: list, factor: float, distance: float) -> float:
        # The cost of the docstring, in one expression per case (it runs once per heap push).
        if likeness:
            return (border_share * (record[0] / record[1]) + descriptor_weight * distance) * factor
        return record[0] / record[1] * factor

    edge_levels = np.ones(lo.size, dtype=np.float32)
    # neighbours[r][s] = [sum, count, edge ids, stamp]: one record shared by both directions.
    neighbours: list[dict[int, list] | None] = [{} for _ in range(len(areas))]
    stamps = count()
    heap = []
    distances = unlike(lo, hi)
    for e, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
        record = [float(sums[e]), int(counts[e]), [e], next(stamps)]
        neighbours[a][b] = neighbours[b][a] = record
        heap.append((cost(record, min(factors[a], factors[b]), distances[e]), record[3], a, b))
    heapq.heapify(heap)
    merge_levels = []
    merged_pairs = []
    level = 0.0
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        value, stamp, a, b = pop(heap)
        na, nb = neighbours[a], neighbours[b]
        if na is None or nb is None or b not in na or na[b][3] != stamp:
            continue  # stale: a side was merged away or the border changed since the push
        level = max(level, value)  # running max keeps the ucm ultrametric
        merge_levels.append(level)
        merged_pairs.append((a, b))
        edge_levels[na.pop(b)[2]] = level
        del nb[a]
        # Fold the smaller neighbourhood into the larger one.
        if len(na) < len(nb):
            a, b, na, nb = b, a, nb, na
        grown_from = areas[a]
        areas[a] += areas[b]
        factors[a] = size_factor(areas[a])
        if likeness:
            totals[a] += totals[b]
            means[a] = totals[a] / areas[a]
        changed = []
        for c, record in nb.items():
            nc = neighbours[c]
            del nc[b]
            mine = na.get(c)
            if mine is None:
                # Same border, new endpoint: re-pushed, since the old entry names b.
                na[c] = nc[a] = record
            else:
                mine[0] += record[0]
                mine[1] += record[1]
                # Extend the longer id list by the shorter one: O(E log E) copies in all.
                longer, shorter = (
                    (mine[2], record[2]) if len(mine[2]) >= len(record[2]) else (record[2], mine[2])
                )
                longer.extend(shorter)
                mine[2] = longer
            changed.append(c)
        neighbours[b] = None
        if likeness:
            changed = list(na)  # the merged region's mean descriptor moved: every cost around it
        elif by_size:
            # The size term changed for the neighbours that were larger than the old region.
            changed.extend(c for c in na if areas[c] > grown_from)
        changed = list(set(changed))
        distances = unlike(a, changed) if changed else []
        factor_a = factors[a]
        for c, distance in zip(changed, distances, strict=True):
            record = na[c]
            record[3] = stamp = next(stamps)
            factor_c = factors[c]
            push(heap, (cost(record, factor_a if factor_a < factor_c else factor_c, distance), stamp, a, c))
    merges = np.asarray(merged_pairs, dtype=np.int64).reshape(-1, 2)
    return edge_levels, np.asarray(merge_levels, dtype=np.float32), merges


def build_hierarchy(
    strength: np.ndarray,
    superpixels: SuperpixelOptions = SuperpixelOptions(),
    merge: MergeOptions = MergeOptions(),
    descriptors: np.ndarray | PixelDescriptors | None = None,
    split_by: np.ndarray | None = None,
    flood: np.ndarray | None = None,
) -> Hierarchy:
    """Superpixels, greedy merging and the ucm2 of a boundary map.

    Parameters
    ----------
    strength : (H, W) float ndarray in [0, 1]
        Boundary map (the weighted mean of a recipe's cue maps,
        :func:`wnetcli.segmentation.postprocess.boundary_maps`).
    superpixels : SuperpixelOptions
        How the superpixels are made (lengths in pixels of ``strength``).
    merge : MergeOptions
        How the regions merge.
    descriptors : (D, H, W) float ndarray or PixelDescriptors, optional
        Per-pixel descriptors (the soft segmentation, say) for the region-likeness term of the
        merge cost (:func:`merge_regions`); without them the likeness term is off.
    split_by : (H, W) int ndarray, optional
        A second partition (the W-Net's argmax, say): the superpixels are also cut wherever
        it changes, so its borders become candidate region borders for the merging to keep
        or remove.
    flood : (H, W) float ndarray in [0, 1], optional
        The map the watershed floods into superpixels, if not ``strength`` itself; the merge
        costs always read ``strength``. So a cue can weigh in the merging without moving the
        superpixel borders.

    Returns
    -------
    Hierarchy
        Its ucm values are mean boundary strengths, so they lie in [0, 1] and mean the same
        contrast in every image.
    """
    strength = np.asarray(strength, dtype=np.float32)
    if strength.ndim != 2:
        raise ValueError(f"strength must be a 2-D (H, W) map, got shape {strength.shape}")
    # Values outside [0, 1] would give ucm levels outside it.
    strength = np.clip(strength, 0.0, 1.0)
    if flood is None:
        flood = strength
    else:
        flood = np.clip(np.asarray(flood, dtype=np.float32), 0.0, 1.0)
        if flood.shape != strength.shape:
            raise ValueError(f"flood must have the shape of strength {strength.shape}, got {flood.shape}")
    regions = watershed_superpixels(flood, superpixels)
    if split_by is not None:
        from skimage.measure import label

        split_by = np.asarray(split_by, dtype=np.int64)
        joint = regions.astype(np.int64) * (int(split_by.max()) + 1) + split_by
        regions = label(joint, connectivity=1, background=-1).astype(np.int32)
    n = int(regions.max())
    lo, hi, sums, counts, right_ids, down_ids = _pixel_borders(regions, strength)
    areas = np.bincount(regions.ravel(), minlength=n + 1)[1:]
    size_scale = merge.size_prior * strength.size
    region_sums = None
    weight = merge.likeness if descriptors is not None else 0.0
    if weight > 0:
        if not isinstance(descriptors, PixelDescriptors):
            descriptors = PixelDescriptors([("dense", 1.0, descriptors)])
        region_sums = descriptors.region_sums(regions)
    edge_levels, merge_levels, merges = merge_regions(lo, hi, sums, counts, areas, size_scale, region_sums, weight)
    # Pixel borders inside a superpixel (id -1) vanish at level 0.
    lookup = np.append(edge_levels, np.float32(0.0))
    ucm2 = edges_to_ucm2(lookup[right_ids], lookup[down_ids])
    return Hierarchy(ucm2=ucm2, superpixels=regions, levels=merge_levels, merges=merges)
