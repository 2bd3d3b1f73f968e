"""Segmentation with a recipe of cues and an exported W-Net encoder: the library under ``wnet segment``.

- :class:`Segmenter` / :class:`SegmentOptions` / :class:`SegmentationResult`: RGB array in,
  labels + ucm2 (+ the network's soft maps) out (:mod:`.pipeline`); the network runs if and
  only if the recipe's cues read it.
- :class:`Recipe` / :func:`load_recipe` / :data:`RECIPES`: which cues with which weights, and
  each stage's settings (:mod:`.recipe`); the cues themselves are in :mod:`.cues`.
- :class:`Cut`: which partition of the hierarchy is output (:mod:`.levels`).
- :func:`segment_folder` / :class:`BatchOptions`: resumable, sharded runs over files
  (:mod:`.batch`); output names in :mod:`.outputs`.
- :mod:`.postprocess` runs a recipe's stages on one image; :mod:`.hierarchy` builds the
  hierarchy; :mod:`.grids` resamples between resolutions; :mod:`.runtime` runs the model.
"""

from __future__ import annotations

from wnetcli.segmentation.batch import BatchOptions, BatchReport, ImageRecord, plan_batch, segment_folder
from wnetcli.segmentation.levels import Cut
from wnetcli.segmentation.pipeline import DEFAULT_MODEL, SegmentationResult, Segmenter, SegmentOptions
from wnetcli.segmentation.recipe import RECIPES, Recipe, load_recipe

__all__ = [
    "DEFAULT_MODEL",
    "RECIPES",
    "BatchOptions",
    "BatchReport",
    "Cut",
    "ImageRecord",
    "Recipe",
    "SegmentOptions",
    "SegmentationResult",
    "Segmenter",
    "load_recipe",
    "plan_batch",
    "segment_folder",
]
