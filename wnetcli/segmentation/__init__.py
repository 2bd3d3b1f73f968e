"""Segmentation with an exported W-Net encoder: the library under ``wnet segment`` (no torch).

- :class:`Segmenter` / :class:`SegmentOptions` / :class:`SegmentationResult`: RGB array in,
  labels + ucm2 + probabilities out (:mod:`.pipeline`).
- :func:`segment_folder` / :class:`BatchOptions`: resumable, sharded batch runs over files
  (:mod:`.batch`); output names in :mod:`.outputs`.
- :mod:`.runtime`: the onnxruntime session and device choice; :mod:`.postprocess`: CRF,
  boundary strength, hierarchy and level selection (the paper's Algorithm 2).
"""

from __future__ import annotations

from wnetcli.segmentation.batch import BatchOptions, BatchReport, ImageRecord, plan_batch, segment_folder
from wnetcli.segmentation.pipeline import DEFAULT_MODEL, SegmentationResult, Segmenter, SegmentOptions

__all__ = [
    "DEFAULT_MODEL",
    "BatchOptions",
    "BatchReport",
    "ImageRecord",
    "SegmentOptions",
    "SegmentationResult",
    "Segmenter",
    "plan_batch",
    "segment_folder",
]
