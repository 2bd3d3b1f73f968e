"""The post-processing of one image: a recipe's stages, from the image (and the network's maps
when its cues read them) to a hierarchy and one cut of it.

1. Cues (:mod:`.cues`) on the recipe's grid, sharing one :class:`~.cues.ImageContext`.
2. Boundary map: the weighted mean of the cues' boundary maps (and, where some cue is kept out
   of the watershed, the map the watershed floods).
3. Superpixels: a watershed of it (:func:`.hierarchy.watershed_superpixels`), cut along the
   cues' partitions.
4. Merge: greedy merging by boundary strength and region likeness, recorded as a ucm2
   (:func:`.hierarchy.build_hierarchy`).
5. Level scale (:class:`.levels.LevelScale`), then the cut (:class:`.levels.Cut`).

Pure NumPy / SciPy / scikit-image: no torch, no onnxruntime.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from wnetcli.errors import InputError
from wnetcli.segmentation.cues import ImageContext, NetworkMaps
from wnetcli.segmentation.hierarchy import PixelDescriptors, build_hierarchy
from wnetcli.segmentation.levels import Cut
from wnetcli.segmentation.recipe import RECIPES, Recipe, Use

__all__ = ["PostprocessResult", "postprocess"]


@dataclass
class PostprocessResult:
    """What :func:`postprocess` returns for an (H, W) image.

    Attributes:
        labels: (H, W) int32, labels 1..n, each label one 4-connected region.
        ucm2: (2H+1, 2W+1) float32 in [0, 1], the hierarchy on the level scale.
        timings: seconds per stage: ``"crf"``, ``"boundaries"``, ``"hierarchy"``.
        threshold: the level that gave ``labels`` (for a number of regions: the last merge's).
        note: ``""``, or why ``labels`` does not have the number of regions asked for.
    """

    labels: np.ndarray
    ucm2: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    threshold: float = 0.0
    note: str = ""


def _check_inputs(rgb: np.ndarray, network: NetworkMaps | None, recipe: Recipe) -> tuple[np.ndarray, NetworkMaps]:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"rgb must be an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    if rgb.size == 0:
        raise InputError(f"the image is empty (shape {rgb.shape})")
    network = network or NetworkMaps()
    needs = recipe.network_outputs()
    if "probs" in needs:
        if network.soft_maps is None:
            raise InputError(f"recipe {recipe.name!r} reads the network's soft maps: pass them in network.soft_maps")
        network = NetworkMaps(_check_soft_maps(network.soft_maps, rgb.shape[:2]), network.boundaries)
    if "boundaries" in needs:
        if network.boundaries is None:
            raise InputError(f"recipe {recipe.name!r} reads the network's boundary map: pass it in network.boundaries")
        boundaries = np.asarray(network.boundaries, dtype=np.float32)
        if boundaries.shape != rgb.shape[:2] or not np.isfinite(boundaries).all():
            raise InputError(
                f"network.boundaries must be a finite (H, W) = {rgb.shape[:2]} map, got shape {boundaries.shape}"
            )
        network = NetworkMaps(network.soft_maps, boundaries)
    return rgb, network


def _check_soft_maps(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[1:] != shape or probs.shape[0] < 1:
        raise InputError(f"network.soft_maps must be (K, H, W) with (H, W) = {shape}, got {probs.shape}")
    # Two reductions, cheap beside the post-processing: a NaN anywhere spreads through the CRF
    # to most of the image, and unnormalised maps change the merge costs without a sign.
    total, lowest = float(probs.sum(dtype=np.float64)), float(probs.min())
    pixels = probs.shape[1] * probs.shape[2]
    if not np.isfinite(total) or lowest < -1e-6 or abs(total - pixels) > 1e-3 * pixels:
        raise InputError(
            "network.soft_maps must be finite, non-negative and sum to 1 over K at every pixel (a softmax); "
            f"got a sum of {total:.6g} over {pixels} pixels and a minimum of {lowest:.3g}"
        )
    return probs


def _weighted_mean(parts: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """(weight, (h, w) map) pairs -> their weighted mean, float32."""
    total = sum(weight for weight, _ in parts)
    combined = sum(weight * cue for weight, cue in parts) / total
    return combined.astype(np.float32, copy=False)


def boundary_maps(uses: tuple[Use, ...], context: ImageContext) -> tuple[np.ndarray, np.ndarray | None]:
    """The boundary map of the cues with a boundary weight, and the one the watershed floods.

    Returns
    -------
    strength : (h, w) float32 in [0, 1]
        The weighted mean of the cues' maps: the merge costs read it.
    flood : (h, w) float32 in [0, 1], or None
        The weighted mean of the maps of the cues that flood (:attr:`.recipe.Use.flood`), when
        some cue does not; None when the watershed floods ``strength`` itself.
    """
    parts = [(use, use.cue.boundary(context)) for use in uses if use.boundary > 0]
    strength = _weighted_mean([(use.boundary, cue_map) for use, cue_map in parts])
    if all(use.flood for use, _ in parts):
        return strength, None
    flooded = [(use.boundary, cue_map) for use, cue_map in parts if use.flood]
    if not flooded:
        raise InputError("no cue floods: at least one cue with a boundary weight must have flood = true")
    return strength, _weighted_mean(flooded)


def likeness_descriptors(uses: tuple[Use, ...], context: ImageContext) -> PixelDescriptors | None:
    """The region-likeness descriptors of the cues with a likeness weight (normalised to sum
    to 1, so that half the L1 distance of two regions' means lies in [0, 1]); None if none."""
    weighted = [use for use in uses if use.likeness > 0]
    if not weighted:
        return None
    total = sum(use.likeness for use in weighted)
    return PixelDescriptors([part for use in weighted for part in use.cue.likeness(context, use.likeness / total)])


def split_partition(uses: tuple[Use, ...], context: ImageContext) -> np.ndarray | None:
    """The joint partition of the cues that split the superpixels, or None."""
    partitions = [np.asarray(use.cue.partition(context), dtype=np.int64) for use in uses if use.split]
    if not partitions:
        return None
    joint = partitions[0]
    for other in partitions[1:]:
        joint = joint * (int(other.max()) + 1) + other
    return joint


def postprocess(
    rgb: np.ndarray,
    network: NetworkMaps | None = None,
    recipe: Recipe = RECIPES["default"],
    cut: Cut = Cut(),
) -> PostprocessResult:
    """A recipe's hierarchy of one image, and one cut of it.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 ndarray
        The image.
    network : NetworkMaps, optional
        The network's outputs at (H, W), needed when the recipe's cues read them
        (:meth:`.recipe.Recipe.network_outputs`).
    recipe : Recipe
    cut : Cut

    Returns
    -------
    PostprocessResult

    Raises
    ------
    InputError
        If the arrays have the wrong shapes or types, or the recipe reads network maps that
        were not given.

    Examples
    --------
    >>> rgb = np.zeros((32, 32, 3), np.uint8); rgb[:, 16:] = 200
    >>> result = postprocess(rgb, cut=Cut(regions=2))
    >>> int(result.labels.max()), result.ucm2.shape
    (2, (65, 65))
    """
    from wnetcli.segmentation.grids import enlarge_labels, enlarge_ucm2

    rgb, network = _check_inputs(rgb, network, recipe)
    factor = recipe.grid.downsample
    context = ImageContext(rgb, factor, network, recipe.crf)

    began = time.perf_counter()
    strength, flood = boundary_maps(recipe.cues, context)
    boundaries_seconds = time.perf_counter() - began
    crf_in_boundaries = context.seconds_in_crf

    began = time.perf_counter()
    descriptors = likeness_descriptors(recipe.cues, context)
    split_by = split_partition(recipe.cues, context)
    hierarchy = build_hierarchy(
        strength, recipe.superpixels.on_grid(factor), recipe.merge, descriptors, split_by, flood
    )
    ucm2, levels = recipe.levels.rescale(hierarchy.ucm2, hierarchy.levels)
    # On a coarse grid the cut is taken there and enlarged: the same regions as the cut of the
    # enlarged ucm2, for a fraction of the work.
    labels, threshold, note = cut.labels(ucm2, levels, hierarchy.superpixels, hierarchy.merges)
    if factor > 1:
        labels = enlarge_labels(labels, rgb.shape[:2])
        ucm2 = enlarge_ucm2(ucm2, rgb.shape[:2])
    hierarchy_seconds = time.perf_counter() - began

    # The CRF runs inside the first cue that reads smoothed maps: its time is its own stage.
    crf_total = context.seconds_in_crf
    timings = {
        "crf": crf_total,
        "boundaries": boundaries_seconds - crf_in_boundaries,
        "hierarchy": hierarchy_seconds - (crf_total - crf_in_boundaries),
    }
    return PostprocessResult(labels=labels, ucm2=ucm2, timings=timings, threshold=threshold, note=note)
