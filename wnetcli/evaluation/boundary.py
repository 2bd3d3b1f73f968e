"""The BSDS boundary benchmark: thinning, matching to human boundaries, P/R/F at ODS and OIS, AP.

Matching
--------
For each threshold and each human annotation, a machine boundary pixel may be paired with a human
boundary pixel at Euclidean distance at most ``max_dist = 0.0075 * sqrt(H**2 + W**2)`` pixels,
each pixel at most once. We compute an *exact maximum-cardinality* matching of that bipartite graph
that keeps the nearest pairs: a greedy nearest-first matching, grown to a maximum one with
augmenting paths found as a maximum flow (Dinic, :func:`scipy.sparse.csgraph.maximum_flow`; not
``maximum_bipartite_matching``, whose Hopcroft-Karp takes seconds on some of these graphs,
scipy issue 26147). The official benchmark solves a min-cost assignment with random outlier
edges, which lands slightly below the maximum; on its 5-image self-test our data set R, P, F and
AP are within 8e-4 of its printed results, per image within 1.5e-3 (the official runs on the same
maps differ among themselves by up to 4e-4).

The candidate graph is built from pixel coordinates: a precomputed disc of offsets is laid on
every machine pixel and looked up in an image of human pixel indices (one per annotator, stacked,
so the work of finding neighbours is shared across annotators).

References
----------
.. [1] D. Martin, C. Fowlkes and J. Malik, "Learning to Detect Natural Image Boundaries Using Local
       Brightness, Color, and Texture Cues", IEEE TPAMI 26(5), 2004.
.. [2] P. Arbelaez, M. Maire, C. Fowlkes and J. Malik, "Contour Detection and Hierarchical Image
       Segmentation", IEEE TPAMI 33(5), 2011.
.. [3] Z. Guo and R. W. Hall, "Parallel thinning with two-subiteration algorithms", Comm. ACM 32(3),
       1989.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_flow

__all__ = [
    "MAX_DIST",
    "BoundaryGroundTruth",
    "BoundaryScores",
    "CandidatePairs",
    "Matching",
    "boundary_counts",
    "boundary_scores",
    "match_radius",
    "prf",
    "thin",
]

#: Matching tolerance as a fraction of the image diagonal (the benchmark's ``maxDist``).
MAX_DIST = 0.0075

# Neighbour offsets (dy, dx) and their bit in the 8-neighbourhood code: E=1, NE=2, N=4, NW=8,
# W=16, SW=32, S=64, SE=128 (x1..x8 of Guo & Hall, counter-clockwise from east).
_NEIGHBOURS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _thinning_luts() -> tuple[np.ndarray, np.ndarray]:
    """Deletion tables of the two Guo-Hall sub-iterations, indexed by the 8-neighbourhood code.

    A pixel is deleted when (G1) its crossing number is 1, (G2) 2 <= min(n1, n2) <= 3, and (G3)
    in the first sub-iteration ``(x2 | x3 | ~x8) & x1`` is false, in the second
    ``(x6 | x7 | ~x4) & x5`` is false. These are the tables ``skimage.morphology.thin`` and
    MATLAB's ``bwmorph(..., 'thin', Inf)`` use (checked in the tests).
    """
    codes = np.arange(256)
    x = [None] + [((codes >> k) & 1).astype(bool) for k in range(8)]  # x[1]..x[8]
    x.append(x[1])  # x9 = x1
    crossing = sum((~x[2 * i - 1]) & (x[2 * i] | x[2 * i + 1]) for i in range(1, 5))
    n1 = sum(x[2 * k - 1] | x[2 * k] for k in range(1, 5))
    n2 = sum(x[2 * k] | x[2 * k + 1] for k in range(1, 5))
    smallest = np.minimum(n1, n2)
    g12 = (crossing == 1) & (smallest >= 2) & (smallest <= 3)
    first = g12 & ~((x[2] | x[3] | ~x[8]) & x[1])
    second = g12 & ~((x[6] | x[7] | ~x[4]) & x[5])
    return first, second


_LUTS = _thinning_luts()

# Above this fraction of foreground pixels, thin() hands over to skimage's whole-image passes.
_DENSE_FRACTION = 0.15


def thin(bmap: np.ndarray) -> np.ndarray:
    """Thin a binary map to one-pixel-wide curves (Guo-Hall, iterated to convergence).

    Gives the same result as ``skimage.morphology.thin(bmap)`` but works on the list of foreground
    pixels instead of the whole image, and after the first pass only on the pixels next to a
    deletion: several times faster for sparse boundary maps (dense maps go to skimage).

    Parameters
    ----------
    bmap : (H, W) bool ndarray
        Binary boundary map.

    Returns
    -------
    (H, W) bool ndarray
        The thinned map (a new array).
    """
    bmap = np.asarray(bmap, dtype=bool)
    if np.count_nonzero(bmap) > _DENSE_FRACTION * bmap.size:
        # Whole-image passes win on dense maps (docs/experiments.md, evaluation speed).
        from skimage.morphology import thin as dense_thin

        return dense_thin(bmap)
    padded = np.zeros((bmap.shape[0] + 2, bmap.shape[1] + 2), dtype=np.uint8)
    padded[1:-1, 1:-1] = bmap
    ys, xs = np.nonzero(padded)
    # index[y, x]: number of the foreground pixel at (y, x), -1 elsewhere (to find neighbours).
    index = np.full(padded.shape, -1, dtype=np.int64)
    index[ys, xs] = np.arange(ys.size)
    weights = np.array([1 << k for k in range(8)], dtype=np.uint16)
    rows = ys[:, None] + np.array([dy for dy, _ in _NEIGHBOURS])
    cols = xs[:, None] + np.array([dx for _, dx in _NEIGHBOURS])
    neighbours = index[rows, cols]  # (n, 8)
    alive = np.ones(ys.size, dtype=bool)
    # A pixel's decision in a sub-iteration can only change if its neighbourhood changed since that
    # sub-iteration last looked at it, so each sub-iteration re-examines only those pixels.
    dirty = [np.ones(ys.size, dtype=bool), np.ones(ys.size, dtype=bool)]
    deleted_in_iteration = True
    while deleted_in_iteration:
        deleted_in_iteration = False
        for k, lut in enumerate(_LUTS):
            idx = np.flatnonzero(dirty[k] & alive)
            dirty[k][:] = False
            if idx.size == 0:
                continue
            # Decisions are taken on the map as it was at the start of the sub-iteration
            # (parallel thinning), then applied together.
            code = (padded[rows[idx], cols[idx]] * weights).sum(axis=1, dtype=np.uint16)
            delete = idx[lut[code]]
            if delete.size:
                padded[ys[delete], xs[delete]] = 0
                alive[delete] = False
                touched = neighbours[delete].ravel()
                touched = touched[touched >= 0]
                dirty[0][touched] = True
                dirty[1][touched] = True
                deleted_in_iteration = True
    return padded[1:-1, 1:-1].astype(bool)


def match_radius(shape: tuple[int, int], max_dist: float = MAX_DIST) -> float:
    """Matching tolerance in pixels for an image of ``shape`` (H, W): ``max_dist * sqrt(H**2 + W**2)``."""
    return float(max_dist * np.hypot(*shape))


def _augment(edge_m: np.ndarray, edge_g: np.ndarray, mate_m: np.ndarray, mate_g: np.ndarray) -> None:
    """Grow the matching ``mate_m``/``mate_g`` in place to a maximum one of the given edges.

    The augmenting paths are found as a maximum flow (Dinic) in the residual network of the
    current matching: source -> free machine pixels, unmatched edges machine -> human, matched
    edges human -> machine, free human pixels -> sink, all of capacity 1. Vertices matched before
    stay matched (augmenting paths only re-pair them).
    """
    if edge_m.size == 0:
        return
    # Only the pixels with an edge take part: number them compactly (no sort).
    nodes_m, local_m = _compact(edge_m, mate_m.size)
    nodes_g, local_g = _compact(edge_g, mate_g.size)
    free_m = np.flatnonzero(mate_m[nodes_m] < 0)
    free_g = np.flatnonzero(mate_g[nodes_g] < 0)
    if free_m.size == 0 or free_g.size == 0:  # no augmenting path can start or end
        return
    n_m, n_g = nodes_m.size, nodes_g.size
    source, sink = n_m + n_g, n_m + n_g + 1
    matched = mate_m[edge_m] == edge_g
    tails = np.concatenate([np.full(free_m.size, source), np.where(matched, n_m + local_g, local_m), n_m + free_g])
    heads = np.concatenate([free_m, np.where(matched, local_m, n_m + local_g), np.full(free_g.size, sink)])
    network = csr_matrix((np.ones(tails.size, dtype=np.int32), (tails, heads)), shape=(n_m + n_g + 2, n_m + n_g + 2))
    result = maximum_flow(network, source, sink, method="dinic")
    if result.flow_value == 0:
        return
    flow = result.flow.tocoo()
    # A unit of flow on a machine -> human edge is a pair of the new matching; the pairs it
    # replaces are overwritten, since every vertex on an augmenting path gets its new mate here.
    new = (flow.data > 0) & (flow.row < n_m) & (flow.col >= n_m) & (flow.col < n_m + n_g)
    pair_m, pair_g = nodes_m[flow.row[new]], nodes_g[flow.col[new] - n_m]
    mate_m[pair_m] = pair_g
    mate_g[pair_g] = pair_m


def _compact(ids: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``ids`` (all in ``range(size)``) in order, and each id's rank among them."""
    present = np.zeros(size, dtype=bool)
    present[ids] = True
    nodes = np.flatnonzero(present)
    rank = np.cumsum(present) - 1
    return nodes, rank[ids]


def _greedy_nearest(edge_m: np.ndarray, edge_g: np.ndarray, dist2: np.ndarray, mate_m, mate_g) -> None:
    """Pair pixels nearest first, in place: a maximal (not maximum) matching.

    In rounds, every free machine pixel proposes its nearest free human pixel and every human pixel
    accepts its nearest proposer (ties: the order of the pairs, which :meth:`BoundaryGroundTruth.match`
    makes offset order, then raster order of the machine pixel).
    """
    em, eg = edge_m, edge_g
    if np.any(np.diff(dist2) < 0):
        order = np.argsort(dist2, kind="stable")
        em, eg = edge_m[order], edge_g[order]
    while True:
        free = (mate_m[em] < 0) & (mate_g[eg] < 0)
        if not free.any():
            return
        em, eg = em[free], eg[free]
        _, first_m = np.unique(em, return_index=True)  # nearest edge of each machine pixel
        first_m.sort()  # back in distance order
        prop_m, prop_g = em[first_m], eg[first_m]
        _, first_g = np.unique(prop_g, return_index=True)  # nearest proposal to each human pixel
        mate_m[prop_m[first_g]] = prop_g[first_g]
        mate_g[prop_g[first_g]] = prop_m[first_g]


def _matching(
    edge_m: np.ndarray,
    edge_g: np.ndarray,
    dist2: np.ndarray,
    n_m: int,
    n_g: int,
    start: np.ndarray | None = None,
    bound: int | np.ndarray | None = None,
    groups: int | None = None,
) -> np.ndarray:
    """Maximum-cardinality matching that keeps the nearest pairs.

    Pixels are first paired nearest first (:func:`_greedy_nearest`), then the matching is grown to
    a maximum one by augmenting paths (:func:`_augment`), which never unmatch a pixel. The result
    has the exact maximum cardinality, and, like the official minimum-cost assignment, it uses the
    machine pixels that lie closest to the human boundary. That matters for precision: a machine
    pixel counts as matched when *any* annotator's matching uses it, and an arbitrary maximum
    matching spreads over more machine pixels (on the official self-test plain maximum
    matching put ODS precision about three times further from the printed runs than this one:
    docs/benchmark.md).

    Parameters
    ----------
    edge_m, edge_g : (E,) int ndarray
        Candidate pairs (machine index, human index).
    dist2 : (E,) int ndarray
        Squared pixel distance of each pair.
    n_m, n_g : int
        Numbers of machine and human pixels.
    start : (n_m,) int ndarray, optional
        A matching to start from (human pixel per machine pixel, -1 if none; its pairs must be
        candidate pairs), which the nearest-first pairing then extends.
    bound : int or (n_m // groups,) int ndarray, optional
        An upper bound of the maximum matching's size (per group): when the nearest-first
        pairing reaches it, the augmenting step is skipped (for that group).
    groups : int, optional
        The graph is a disjoint union of subgraphs whose machine pixels are the consecutive
        blocks of ``groups`` ids (one block per annotator); ``bound`` is per block then.

    Returns
    -------
    (n_m,) int64 ndarray
        The human pixel matched to each machine pixel, -1 if none.
    """
    mate_m = np.full(n_m, -1, dtype=np.int64)
    mate_g = np.full(n_g, -1, dtype=np.int64)
    if start is not None:
        paired = np.flatnonzero(start >= 0)
        mate_m[paired] = start[paired]
        mate_g[start[paired]] = paired
    if edge_m.size == 0:
        return mate_m
    _greedy_nearest(edge_m, edge_g, dist2, mate_m, mate_g)
    block = groups or n_m
    if bound is None:
        short = np.ones(n_m // block, dtype=bool)
    else:
        short = np.count_nonzero((mate_m >= 0).reshape(-1, block), axis=1) < np.asarray(bound)
    if not short.any():
        return mate_m
    if short.size == 1:
        _augment(edge_m, edge_g, mate_m, mate_g)
        return mate_m
    # One maximum flow per group: scipy's Dinic was slower on the union than on its parts.
    owner = edge_m // block
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(short.size + 1))
    for j in np.flatnonzero(short):
        part = order[bounds[j] : bounds[j + 1]]
        _augment(edge_m[part], edge_g[part], mate_m, mate_g)
    return mate_m


def _disc_offsets(radius: float) -> np.ndarray:
    """(K, 2) int offsets (dy, dx) with ``dy**2 + dx**2 <= radius**2``."""
    r = int(np.floor(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy**2 + dx**2 <= radius**2
    return np.stack([dy[keep], dx[keep]], axis=1)


class Matching:
    """The maximum matchings of one machine map against each annotation, to start the next map's.

    Between two thresholds of the same image the machine map mostly loses pixels. Let M be a
    maximum matching for the previous map; the pairs of M whose machine pixel is still there
    form a matching of the new graph, and the new graph's maximum is at most
    ``|M| + (new machine pixels with a candidate)``, since removing pixels never raises the
    maximum and each added pixel raises it by at most one. :func:`_matching` starts from those
    pairs, pairs nearest first, and skips the augmenting step when that bound is reached
    (which is then a proof of maximality). The result is a maximum matching either way; only
    the choice among maximum matchings, and so ``cnt_p``, can differ slightly from a cold start
    (a small fraction of the machine pixels: docs/benchmark.md).

    Attributes
    ----------
    positions : (n,) int64 ndarray or None
        Flat pixel indices of the last map's machine pixels, sorted.
    mates : (J * n,) int64 ndarray or None
        The matched human pixel of annotator j's copy of machine pixel m at ``j * n + m``
        (human pixels numbered across annotators, -1 if none).
    sizes : (J,) int ndarray or None
        The size of each annotator's (maximum) matching.
    count : int
        n.
    """

    def __init__(self) -> None:
        self.positions: np.ndarray | None = None
        self.mates: np.ndarray | None = None
        self.sizes: np.ndarray | None = None
        self.count = 0
        self.previous_mates: np.ndarray | None = None
        self.previous_sizes: np.ndarray | None = None
        self.previous_count = 0

    def carry_over(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Map the new map's machine pixels onto the last map's.

        Returns ``(kept, new)``: for each new machine pixel its index in the last map (-1 if
        it was not there) and whether it is new; ``None`` when there is no last matching.
        The last matchings move to ``previous_mates`` / ``previous_sizes`` / ``previous_count``.
        """
        if self.positions is None or self.mates is None:
            return None
        self.previous_mates, self.previous_sizes, self.previous_count = self.mates, self.sizes, self.count
        old = self.positions
        at = np.minimum(np.searchsorted(old, positions), old.size - 1)
        present = old[at] == positions
        return np.where(present, at, -1), ~present


class BoundaryGroundTruth:
    """The human boundary maps of one image, indexed for fast matching.

    Parameters
    ----------
    boundaries : sequence of (H, W) bool ndarray
        One boundary map per annotator (the ``Boundaries`` field of the BSDS .mat file).
    max_dist : float
        Tolerance as a fraction of the image diagonal.
    """

    def __init__(self, boundaries: Sequence[np.ndarray], max_dist: float = MAX_DIST) -> None:
        if len(boundaries) == 0:
            raise ValueError("boundaries must hold at least one annotation")
        self.shape = tuple(np.shape(boundaries[0]))
        self.radius = match_radius(self.shape, max_dist)
        offsets = _disc_offsets(self.radius)
        # Nearest offsets first, so that candidate pairs come out sorted by distance.
        order = np.argsort((offsets**2).sum(axis=1), kind="stable")
        self.offsets = offsets[order]
        self.dist2 = (self.offsets**2).sum(axis=1)
        self.pad = int(np.ceil(self.radius))
        height, width = self.shape
        padded_shape = (len(boundaries), height + 2 * self.pad, width + 2 * self.pad)
        # index[j, y, x]: number of annotator j's boundary pixel at (y, x) (padded), -1 if none.
        self.index = np.full(padded_shape, -1, dtype=np.int32)
        self.sizes = np.zeros(len(boundaries), dtype=np.int64)
        inner = (slice(self.pad, self.pad + height), slice(self.pad, self.pad + width))
        for j, bmap in enumerate(boundaries):
            bmap = np.asarray(bmap, dtype=bool)
            if bmap.shape != self.shape:
                raise ValueError(f"annotation {j} has shape {bmap.shape}, expected {self.shape}")
            ys, xs = np.nonzero(bmap)
            self.index[j][inner][ys, xs] = np.arange(ys.size, dtype=np.int32)
            self.sizes[j] = ys.size
        self.any = (self.index >= 0).any(axis=0)
        # Flat views for the candidate search: one 1-D gather instead of 2-D fancy indexing.
        self._stride = padded_shape[2]
        self._flat_offsets = (self.offsets[:, 0] * self._stride + self.offsets[:, 1]).astype(np.int64)
        self._any_flat = self.any.ravel()
        self._index_flat = self.index.reshape(len(boundaries), -1)
        # Machine pixels farther than the radius from every human pixel cannot be matched: they
        # are dropped before looking at their neighbourhoods.
        self.near = np.zeros(self.any.shape, dtype=bool)
        for dy, dx in self.offsets:
            self.near[max(dy, 0) : self.near.shape[0] + min(dy, 0), max(dx, 0) : self.near.shape[1] + min(dx, 0)] |= (
                self.any[max(-dy, 0) : self.any.shape[0] + min(-dy, 0), max(-dx, 0) : self.any.shape[1] + min(-dx, 0)]
            )

    @property
    def annotators(self) -> int:
        """Number of human annotations."""
        return len(self.sizes)

    def pairs(self, bmap: np.ndarray) -> CandidatePairs:
        """The candidate pairs of every pixel of ``bmap`` (see :class:`CandidatePairs`)."""
        return CandidatePairs(self, bmap)

    def match(
        self, bmap: np.ndarray, previous: Matching | None = None, pairs: CandidatePairs | None = None
    ) -> tuple[int, int, int, int]:
        """Match a thinned machine boundary map against every annotation.

        Parameters
        ----------
        bmap : (H, W) bool ndarray
            Thinned machine boundaries.
        previous : Matching, optional
            The matchings of a previous map of the same image (the previous threshold), filled
            in by this call with the new ones. Its pairs whose machine pixel is still there
            start the new matchings (see :class:`Matching`); the result is again maximum.
        pairs : CandidatePairs, optional
            Candidate pairs of a set of pixels that contains ``bmap``'s (built once for all the
            maps of an image); by default those of ``bmap`` itself.

        Returns
        -------
        cnt_r, sum_r, cnt_p, sum_p : int
            Matched human pixels and human pixels, summed over annotators; machine pixels matched
            to at least one annotator, and machine pixels.
        """
        ys, xs = np.nonzero(bmap)
        sum_r = int(self.sizes.sum())
        state = previous if previous is not None else Matching()
        positions = (ys * bmap.shape[1] + xs).astype(np.int64)  # raster order: sorted
        start = state.carry_over(positions)
        state.positions, state.mates, state.sizes = positions, None, None
        if ys.size == 0:
            return 0, sum_r, 0, 0
        pairs = pairs if pairs is not None else self.pairs(bmap)
        edges = pairs.select(positions)
        if edges is None:
            return 0, sum_r, 0, int(ys.size)
        # All annotators in one graph: annotator j's copy of machine pixel m is node j*n + m, its
        # human pixel g node first_human[j] + g. The graphs are disjoint, so one matching of
        # the union is one matching per annotator, at the price of one call instead of J.
        n, annotators = ys.size, self.annotators
        first_human = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        edge_m = np.concatenate([m + j * n for j, (m, _, _) in enumerate(edges)])
        edge_g = np.concatenate([g + first_human[j] for j, (_, g, _) in enumerate(edges)])
        dist2 = np.concatenate([d for _, _, d in edges])
        bound = None
        start_mates = None
        if start is not None:
            kept, new = start
            copies = np.arange(annotators)[:, None] * state.previous_count + kept[None, :]
            start_mates = np.where(kept[None, :] >= 0, state.previous_mates[np.maximum(copies, 0)], -1).ravel()
            has_pair = np.zeros(annotators * n, dtype=bool)
            has_pair[edge_m] = True
            bound = state.previous_sizes + np.count_nonzero(has_pair.reshape(annotators, n) & new[None, :], axis=1)
        mate = _matching(edge_m, edge_g, dist2, annotators * n, int(sum_r), start=start_mates, bound=bound, groups=n)
        per_annotator = (mate >= 0).reshape(annotators, n)
        state.mates, state.sizes, state.count = mate, per_annotator.sum(axis=1), n
        return int(per_annotator.sum()), sum_r, int(per_annotator.any(axis=0).sum()), int(n)


class CandidatePairs:
    """The (machine pixel, human pixel) pairs within the matching radius, per annotator.

    Built once for a set of machine pixels (the union of all the maps of an image), then
    :meth:`select` picks the pairs of one map by a lookup, instead of searching the
    neighbourhoods again at every threshold. Pairs are in offset order (nearest first), then
    raster order of the machine pixel, so that a selection has the order a search over that
    map alone would give (the nearest-first pairing breaks ties by it).

    Parameters
    ----------
    gt : BoundaryGroundTruth
    bmap : (H, W) bool ndarray
        The machine pixels to cover.
    """

    def __init__(self, gt: BoundaryGroundTruth, bmap: np.ndarray) -> None:
        ys, xs = np.nonzero(bmap)
        self.width = bmap.shape[1]
        candidates = np.flatnonzero(gt.near[ys + gt.pad, xs + gt.pad])
        #: flat positions of the machine pixels that have at least one pair, sorted
        self.positions = (ys[candidates] * self.width + xs[candidates]).astype(np.int64)
        self.per_annotator: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        if candidates.size == 0:
            return
        # Every (offset, pixel) that lands on some human boundary pixel: the union of the pairs
        # of all annotators, found with one gather, offset-major so sorted by distance.
        centres = (ys[candidates] + gt.pad).astype(np.int64) * gt._stride + (xs[candidates] + gt.pad)
        around = (gt._flat_offsets[:, None] + centres[None, :]).ravel()
        hit = np.flatnonzero(gt._any_flat[around])
        pixel = hit % candidates.size
        human = gt._index_flat[:, around[hit]]  # (J, E)
        dist2 = gt.dist2[hit // candidates.size]
        for j in range(gt.annotators):
            keep = human[j] >= 0
            self.per_annotator.append((pixel[keep], human[j][keep].astype(np.int64), dist2[keep]))

    def select(self, positions: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
        """The pairs of the machine pixels at ``positions`` (sorted flat indices, all covered).

        Returns per annotator ``(edge_m, edge_g, dist2)`` with ``edge_m`` indexing
        ``positions``; ``None`` when none of them has a pair.
        """
        if self.positions.size == 0:
            return None
        at = np.minimum(np.searchsorted(positions, self.positions), positions.size - 1)
        present = positions[at] == self.positions
        if not present.any():
            return None
        local = np.where(present, at, -1)
        out = []
        for pixel, human, dist2 in self.per_annotator:
            index = local[pixel]
            keep = index >= 0
            out.append((index[keep], human[keep], dist2[keep]))
        return out


def boundary_counts(bmaps: Iterable[np.ndarray | None], gt: BoundaryGroundTruth) -> np.ndarray:
    """Counts of every threshold of one image.

    Parameters
    ----------
    bmaps : iterable of (H, W) bool ndarray or None
        The thinned machine boundary map of each threshold; ``None`` means "the same map as the
        previous threshold" and reuses its counts without matching again.
    gt : BoundaryGroundTruth
        The image's human boundaries.

    Returns
    -------
    (T, 4) int64 ndarray
        Columns ``cnt_r, sum_r, cnt_p, sum_p`` per threshold.
    """
    bmaps = list(bmaps)
    if bmaps and bmaps[0] is None:
        raise ValueError("the first boundary map cannot be None")
    present = [bmap for bmap in bmaps if bmap is not None]
    # The pairs are searched once, for every pixel of any map; each map's matchings start from
    # the previous map's (see Matching).
    pairs = gt.pairs(np.logical_or.reduce(present)) if present else None
    state = Matching()
    rows: list[tuple[int, int, int, int]] = []
    for bmap in bmaps:
        rows.append(rows[-1] if bmap is None else gt.match(bmap, state, pairs))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def prf(cnt_r, sum_r, cnt_p, sum_p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recall, precision and F from counts (arrays broadcast); 0 where a ratio is undefined."""
    cnt_r, sum_r, cnt_p, sum_p = (np.asarray(a, dtype=np.float64) for a in (cnt_r, sum_r, cnt_p, sum_p))
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(sum_r > 0, cnt_r / sum_r, 0.0)
        precision = np.where(sum_p > 0, cnt_p / sum_p, 0.0)
        f = np.where(recall + precision > 0, 2 * precision * recall / (precision + recall), 0.0)
    return recall, precision, f


@dataclass(frozen=True)
class BoundaryScores:
    """Boundary benchmark results over a data set.

    Attributes
    ----------
    ods_threshold, ods_recall, ods_precision, ods_f : float
        Optimal data set scale, interpolated between thresholds.
    ois_recall, ois_precision, ois_f : float
        Optimal image scale.
    ap : float
        Average precision (area under the interpolated precision-recall curve).
    per_threshold : (T, 4) ndarray
        ``threshold, R, P, F`` of the data set at each threshold (``eval_bdry_thr.txt``).
    per_image : (N, 4) ndarray
        ``threshold, R, P, F`` at each image's best threshold (``eval_bdry_img.txt``, without ids).
    """

    ods_threshold: float
    ods_recall: float
    ods_precision: float
    ods_f: float
    ois_recall: float
    ois_precision: float
    ois_f: float
    ap: float
    per_threshold: np.ndarray
    per_image: np.ndarray


def _interpolated_best(thresholds: np.ndarray, recall: np.ndarray, precision: np.ndarray):
    """Best F over the thresholds and 100 linear steps between each neighbouring pair.

    Returns ``(threshold, recall, precision, f)`` of the best point (the first one on ties).
    """
    steps = np.linspace(0.0, 1.0, 101)
    if thresholds.size == 1:
        t, r, p = thresholds, recall, precision
    else:
        # Point k of segment i is (1 - a) * value[i] + a * value[i+1]: consecutive segments share
        # their end points, which keeps the first-on-ties order of the thresholds.
        a = steps[None, :]
        t = ((1 - a) * thresholds[:-1, None] + a * thresholds[1:, None]).ravel()
        r = ((1 - a) * recall[:-1, None] + a * recall[1:, None]).ravel()
        p = ((1 - a) * precision[:-1, None] + a * precision[1:, None]).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(r + p > 0, 2 * p * r / (p + r), 0.0)
    best = int(np.argmax(f))
    return float(t[best]), float(r[best]), float(p[best]), float(f[best])


def _average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision-recall curve sampled at recall 0, 0.01, ..., 1.

    Precision is interpolated linearly over the distinct recall values (the first point of each
    recall value kept) and taken as 0 outside the measured recall range.
    """
    _, first = np.unique(recall, return_index=True)
    r, p = recall[first], precision[first]
    grid = np.linspace(0.0, 1.0, 101)
    if r.size < 2:
        return 0.0
    sampled = np.interp(grid, r, p, left=0.0, right=0.0)
    return float(sampled.sum() * 0.01)


def boundary_scores(thresholds: Sequence[float], counts: np.ndarray) -> BoundaryScores:
    """ODS, OIS and AP from the counts of every image.

    Parameters
    ----------
    thresholds : sequence of float, length T
        The thresholds (or level numbers, for lists of segmentations).
    counts : (N, T, 4) int ndarray
        :func:`boundary_counts` of each of N images.

    Returns
    -------
    BoundaryScores
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    counts = np.asarray(counts)
    if counts.ndim != 3 or counts.shape[1:] != (thresholds.size, 4):
        raise ValueError(f"counts must have shape (N, {thresholds.size}, 4), got {counts.shape}")
    total = counts.sum(axis=0)  # (T, 4)
    recall, precision, f = prf(*total.T)
    per_threshold = np.stack([thresholds, recall, precision, f], axis=1)
    ods_t, ods_r, ods_p, ods_f = _interpolated_best(thresholds, recall, precision)

    img_r, img_p, img_f = prf(*np.moveaxis(counts, 2, 0))  # (N, T) each
    best = np.argmax(img_f, axis=1)  # first threshold on ties
    rows = np.arange(counts.shape[0])
    per_image = np.stack([thresholds[best], img_r[rows, best], img_p[rows, best], img_f[rows, best]], axis=1)
    ois_r, ois_p, ois_f = prf(*counts[rows, best].sum(axis=0))
    return BoundaryScores(
        ods_threshold=ods_t,
        ods_recall=ods_r,
        ods_precision=ods_p,
        ods_f=ods_f,
        ois_recall=float(ois_r),
        ois_precision=float(ois_p),
        ois_f=float(ois_f),
        ap=_average_precision(recall, precision),
        per_threshold=per_threshold,
        per_image=per_image,
    )
