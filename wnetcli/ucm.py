"""Conversions between ultrametric contour maps, label maps and boundary maps (BSDS conventions).

A *ucm2* is the hierarchy of a segmentation drawn on the doubled grid of the BSDS benchmark
(Arbelaez et al. 2011): for an H x W image it has shape (2H+1, 2W+1); pixel (i, j) of the image
sits at (2i+1, 2j+1), the edge between two horizontally (vertically) adjacent pixels at the
even column (row) between them, and the even-even points are junctions. Boundary strengths are
in [0, 1]; cutting the hierarchy at threshold ``t`` keeps the edges whose strength is above
``t``. The evaluation (:mod:`wnetcli.evaluation`) and the hierarchy code both use these
functions, so that "the segmentation at level t" means the same thing everywhere.

References
----------
.. [1] P. Arbelaez, M. Maire, C. Fowlkes and J. Malik, "Contour Detection and Hierarchical Image
       Segmentation", IEEE TPAMI 33(5), 2011.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# scipy.ndimage is imported where it is used: it is slow to import (docs/experiments.md, start-up),
# and the main process of a folder run (decoding and the network) never needs it.

__all__ = [
    "check_ucm2",
    "edges_to_ucm2",
    "nested_levels",
    "labels_to_ucm2",
    "seg_to_boundary",
    "ucm2_to_boundary",
    "ucm2_to_labels",
]

# 8-connectivity, as MATLAB's bwlabel uses by default in the official benchmark.
_EIGHT = np.ones((3, 3), dtype=bool)


def check_ucm2(ucm2: np.ndarray) -> np.ndarray:
    """Return ``ucm2`` as a 2-D float array after checking that it lives on a doubled grid.

    Raises
    ------
    ValueError
        If ``ucm2`` is not 2-D with odd height and width of at least 3.
    """
    ucm2 = np.asarray(ucm2)
    if ucm2.ndim != 2 or ucm2.shape[0] % 2 == 0 or ucm2.shape[1] % 2 == 0 or min(ucm2.shape) < 3:
        raise ValueError(f"ucm2 must be a 2-D array of shape (2H+1, 2W+1), got shape {ucm2.shape}")
    if not np.issubdtype(ucm2.dtype, np.floating):
        ucm2 = ucm2.astype(np.float64)
    return ucm2


def _relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    """Map the labels present in ``labels`` (> 0) to 1..n, keeping their order."""
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    if present.sum() == labels.max(initial=0):
        return labels
    lookup = np.zeros(present.size, dtype=labels.dtype)
    lookup[present] = np.arange(1, int(present.sum()) + 1, dtype=labels.dtype)
    return lookup[labels]


def ucm2_to_labels(ucm2: np.ndarray, threshold: float) -> np.ndarray:
    """Cut a hierarchy at ``threshold``: the segmentation of the BSDS region benchmark.

    The regions are the 8-connected components of ``ucm2 <= threshold`` on the doubled grid,
    read back at the pixel positions ``[1::2, 1::2]``.

    Parameters
    ----------
    ucm2 : (2H+1, 2W+1) float ndarray
        Ultrametric contour map, boundary strengths in [0, 1].
    threshold : float
        Edges with strength ``<= threshold`` are removed (their two sides merge).

    Returns
    -------
    labels : (H, W) int32 ndarray
        Region labels 1..n, consecutive. A pixel whose own value is above ``threshold`` (never
        the case in a well-formed ucm2, whose pixel positions are 0) gets label 0.
    """
    from scipy import ndimage as ndi

    ucm2 = check_ucm2(ucm2)
    components, _ = ndi.label(ucm2 <= threshold, structure=_EIGHT)
    return _relabel_consecutive(components[1::2, 1::2].astype(np.int32, copy=False))


def nested_levels(ucm2: np.ndarray, thresholds: Sequence[float]) -> tuple[np.ndarray, list[np.ndarray | None]] | None:
    """All the cuts :func:`ucm2_to_labels` gives at ``thresholds``, as merges of the first one.

    ``ucm2 <= t`` only grows with ``t``, so its components only merge. When every pixel
    position of ``ucm2`` is at most the first threshold (true of any well-formed ucm2, whose
    pixels are 0), two 4-adjacent pixels are connected at level ``t`` exactly when the edge
    between them or one of the two junctions at its ends is ``<= t``, and two diagonal pixels
    when the junction between them is (every other 8-path on the doubled grid passes through
    such a cell next to a pixel). So one labelling at the first threshold and one small graph
    of links between its regions give every level.

    Parameters
    ----------
    ucm2 : (2H+1, 2W+1) float ndarray
    thresholds : increasing sequence of float

    Returns
    -------
    (base, groups) or None
        ``base``: (H, W) int64 labels 0..n-1 of the cut at ``thresholds[0]``; ``groups``: per
        threshold, the region (0..m-1) of each base region, ``None`` where the partition equals
        the previous threshold's. ``None`` when a pixel position exceeds ``thresholds[0]`` (use
        :func:`ucm2_to_labels` per threshold then).
    """
    from scipy import ndimage as ndi
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ucm2 = check_ucm2(ucm2)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.size == 0 or ucm2[1::2, 1::2].max() > thresholds[0]:
        return None
    components, _ = ndi.label(ucm2 <= thresholds[0], structure=_EIGHT)
    base = components[1::2, 1::2].astype(np.int64) - 1
    n = int(base.max()) + 1
    edge_h, edge_v, junction = ucm2[1::2, 2:-1:2], ucm2[2:-1:2, 1::2], ucm2[::2, ::2]
    # (region a, region b, level) of every link between neighbouring pixels.
    links = [
        (base[:, :-1], base[:, 1:], np.minimum(edge_h, np.minimum(junction[:-1, 1:-1], junction[1:, 1:-1]))),
        (base[:-1, :], base[1:, :], np.minimum(edge_v, np.minimum(junction[1:-1, :-1], junction[1:-1, 1:]))),
        (base[:-1, :-1], base[1:, 1:], junction[1:-1, 1:-1]),
        (base[:-1, 1:], base[1:, :-1], junction[1:-1, 1:-1]),
    ]
    lo, hi, level = (np.concatenate([part[k][part[0] != part[1]] for part in links]) for k in range(3))
    keys = np.minimum(lo, hi) * n + np.maximum(lo, hi)
    order = np.lexsort((level, keys))
    keys, level = keys[order], level[order]
    first = np.ones(keys.size, dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    keys, level = keys[first], level[first]  # each pair of regions at its lowest link
    order = np.argsort(level, kind="stable")
    keys, level = keys[order], level[order]
    active = np.searchsorted(level, thresholds, side="right")
    groups: list[np.ndarray | None] = []
    previous = -1
    for count in active:
        if count == previous:
            groups.append(None)
            continue
        graph = coo_matrix((np.ones(count), (keys[:count] // n, keys[:count] % n)), shape=(n, n))
        groups.append(connected_components(graph, directed=False)[1].astype(np.int64))
        previous = count
    return base, groups


def ucm2_to_boundary(ucm2: np.ndarray) -> np.ndarray:
    """Reduce a ucm2 to an image-sized soft boundary map, as the BSDS boundary benchmark does.

    Parameters
    ----------
    ucm2 : (2H+1, 2W+1) float ndarray
        Ultrametric contour map.

    Returns
    -------
    (H, W) float ndarray
        ``ucm2[2::2, 2::2]``: the junction below and to the right of each pixel, a view (no copy).
    """
    return check_ucm2(ucm2)[2::2, 2::2]


def seg_to_boundary(labels: np.ndarray) -> np.ndarray:
    """Image-sized boundary map of a segmentation (the BSDS ``seg2bdry`` 'imageSize' rule).

    On the doubled grid every edge between two 4-adjacent pixels with different labels is a
    boundary and every junction touching such an edge is one too; the image-sized map keeps the
    junctions ``[2::2, 2::2]``. So pixel (i, j) is marked when any of the four edges of the
    2 x 2 block with top-left corner (i, j) separates different labels. The junctions of the
    last row and column lie on the outer frame, where the official code copies the row and
    column before them.

    Parameters
    ----------
    labels : (H, W) int ndarray
        Region labels (any integers).

    Returns
    -------
    (H, W) bool ndarray
        True on boundary pixels.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D array, got shape {labels.shape}")
    height, width = labels.shape
    right = labels[:, 1:] != labels[:, :-1]  # (H, W-1): edge between (i, j) and (i, j+1)
    down = labels[1:, :] != labels[:-1, :]  # (H-1, W): edge between (i, j) and (i+1, j)
    bdry = np.zeros((height, width), dtype=bool)
    if height > 1 and width > 1:
        inner = right[:-1] | right[1:] | down[:, :-1] | down[:, 1:]  # (H-1, W-1) junctions
        bdry[:-1, :-1] = inner
        bdry[-1, :-1] = inner[-1]
        bdry[:-1, -1] = inner[:, -1]
        bdry[-1, -1] = inner[-1, -1]
    return bdry


def labels_to_ucm2(levels: Sequence[np.ndarray], heights: Sequence[float] | None = None) -> np.ndarray:
    """Draw a nested sequence of segmentations, finest first, as a ucm2.

    Each edge between two 4-adjacent pixels gets the height of the first level at which the two
    pixels share a label (1.0 if they never do); each junction the largest height of the edges
    around it. Cutting the result with :func:`ucm2_to_labels` at ``heights[k]`` gives back the
    partition of ``levels[k]`` when the levels are nested and their regions connected.

    Parameters
    ----------
    levels : sequence of (H, W) int ndarray
        Label maps from finest to coarsest; each should be a coarsening of the one before.
    heights : sequence of float, optional
        Increasing heights in [0, 1) of the levels. Default: ``k / len(levels)`` for level ``k``
        (the finest level sits at 0, so the cut at 0 gives it).

    Returns
    -------
    (2H+1, 2W+1) float32 ndarray
        The ultrametric contour map; the outer frame repeats the rows and columns inside it.
    """
    if len(levels) == 0:
        raise ValueError("levels must hold at least one segmentation")
    shape = np.shape(levels[0])
    if heights is None:
        heights = [k / len(levels) for k in range(len(levels))]
    if len(heights) != len(levels) or np.any(np.diff(heights) <= 0):
        raise ValueError("heights must be increasing, one per level")
    height, width = shape
    right = np.ones((height, width - 1), dtype=np.float32)
    down = np.ones((height - 1, width), dtype=np.float32)
    # Walk from coarsest to finest: the last write is the first level where the pixels merge.
    for labels, h in zip(reversed(levels), reversed(heights), strict=True):
        labels = np.asarray(labels)
        if labels.shape != shape:
            raise ValueError(f"all levels must have shape {shape}, got {labels.shape}")
        right[labels[:, 1:] == labels[:, :-1]] = h
        down[labels[1:, :] == labels[:-1, :]] = h
    return edges_to_ucm2(right, down)


def edges_to_ucm2(right: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Draw pixel-border values on the doubled grid.

    Parameters
    ----------
    right : (H, W-1) float ndarray
        Value of the border between pixels (i, j) and (i, j+1).
    down : (H-1, W) float ndarray
        Value of the border between pixels (i, j) and (i+1, j).

    Returns
    -------
    (2H+1, 2W+1) float32 ndarray
        Pixels at ``[1::2, 1::2]`` are 0, borders at (odd, even) / (even, odd), each junction the
        maximum of the borders around it. The outer frame repeats its inner neighbours, as the
        gPb-owt-ucm files do: a constant frame would either join every region touching the
        border (0) or mark the last row and column of ``ucm2[2::2, 2::2]`` as boundary at every
        threshold (1).
    """
    height, width = down.shape[0] + 1, right.shape[1] + 1
    ucm2 = np.zeros((2 * height + 1, 2 * width + 1), dtype=np.float32)
    ucm2[1:-1:2, 2:-1:2] = right
    ucm2[2:-1:2, 1:-1:2] = down
    np.maximum.reduce(
        [ucm2[1:-2:2, 2:-1:2], ucm2[3::2, 2:-1:2], ucm2[2:-1:2, 1:-2:2], ucm2[2:-1:2, 3::2]],
        out=ucm2[2:-1:2, 2:-1:2],
    )
    ucm2[0, :], ucm2[-1, :] = ucm2[1, :], ucm2[-2, :]
    ucm2[:, 0], ucm2[:, -1] = ucm2[:, 1], ucm2[:, -2]
    return ucm2
