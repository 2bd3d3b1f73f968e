"""The BSDS500 benchmark (``wnet evaluate``), written from the published description.

- :mod:`.dataset`: BSDS layouts and annotation (.mat) loading;
- :mod:`.inputs`: what a method predicts (ucm2, list of segmentations, soft boundary map) and
  reading precomputed results; :mod:`.baselines`: scikit-image hierarchies;
- :mod:`.boundary`: thinning, matching, precision/recall/F at ODS and OIS, AP;
- :mod:`.regions`: segmentation covering, probabilistic Rand index, variation of information;
- :mod:`.api`: :func:`evaluate` over a split, in parallel processes; :mod:`.report`: metrics.json,
  CSVs and the precision-recall plot;
- :mod:`.counts`: every image's counts at every threshold (``counts.npz``); :mod:`.compare`: a
  paired bootstrap over images, to tell a real difference between two runs from chance.

No torch: this package needs numpy, scipy, scikit-image, Pillow and matplotlib only.
"""

from __future__ import annotations

from wnetcli.evaluation.api import EvaluationOptions, EvaluationResult, ImageResult, evaluate, thresholds_for
from wnetcli.evaluation.baselines import BASELINES, Baseline
from wnetcli.evaluation.compare import Comparison, MeasureComparison, compare_runs
from wnetcli.evaluation.counts import RunCounts
from wnetcli.evaluation.dataset import SPLITS, BsdsImage, find_split, load_ground_truth, pair_folder
from wnetcli.evaluation.inputs import Prediction, ResultsDir, SegmenterMethod, read_prediction
from wnetcli.evaluation.report import metrics_dict, write_report

__all__ = [
    "BASELINES",
    "SPLITS",
    "Baseline",
    "BsdsImage",
    "Comparison",
    "EvaluationOptions",
    "EvaluationResult",
    "ImageResult",
    "MeasureComparison",
    "Prediction",
    "ResultsDir",
    "RunCounts",
    "SegmenterMethod",
    "compare_runs",
    "evaluate",
    "find_split",
    "load_ground_truth",
    "metrics_dict",
    "pair_folder",
    "read_prediction",
    "thresholds_for",
    "write_report",
]
