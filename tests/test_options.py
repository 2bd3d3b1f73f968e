"""The type checks of the options dataclasses (wnetcli.options): wrong types are InputErrors
naming the field, before they reach the post-processing as bare TypeErrors or silent no-ops."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from wnetcli.errors import InputError
from wnetcli.evaluation import EvaluationOptions
from wnetcli.segmentation import BatchOptions, Cut, SegmentOptions
from wnetcli.segmentation.cues import LabGradient, NetworkEdges
from wnetcli.segmentation.hierarchy import SuperpixelOptions
from wnetcli.segmentation.recipe import Grid, Use


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Cut(regions=2.5), "Cut.regions must be int | None, got 2.5"),
        (lambda: Cut(regions=True), "Cut.regions must be int | None, got True"),
        (lambda: Cut(level="0.5"), "Cut.level must be float | None, got '0.5'"),
        (lambda: Grid(downsample=2.5), "Grid.downsample must be int, got 2.5"),
        (lambda: Use(NetworkEdges(), boundary=math.nan), "Use.boundary must be float, got nan"),
        (lambda: LabGradient(sigmas=(1.0, "x")), "LabGradient.sigmas must be tuple[float, ...]"),
        (lambda: NetworkEdges(smoothed="yes"), "NetworkEdges.smoothed must be bool, got 'yes'"),
        (lambda: SuperpixelOptions(quantisation=70000), "quantisation must be between 2 and 65536"),
        (lambda: SegmentOptions(batch_size="2"), "SegmentOptions.batch_size must be int, got '2'"),
        (lambda: BatchOptions(out_dir=Path("o"), shard="0/2"), "shard must be tuple[int, int] | None, got '0/2'"),
        (lambda: EvaluationOptions(max_dist=-1.0), "max_dist must be a positive fraction"),
        (lambda: EvaluationOptions(jobs=1.5), "EvaluationOptions.jobs must be int, got 1.5"),
    ],
)
def test_wrong_types_are_input_errors_naming_the_field(make, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("|", r"\|").replace(".", r"\.")):
        make()


def test_what_the_annotations_allow_passes():
    # An int where a float is asked, a list (from JSON settings) where a tuple is, a str path.
    assert Use(NetworkEdges(), boundary=1).boundary == 1 and Cut(regions=None, level=0.4).level == 0.4
    assert LabGradient(sigmas=[1, 2.0]).sigmas == [1, 2.0]
    assert BatchOptions(out_dir="out", shard=(0, 2)).shard == (0, 2)
    assert SegmentOptions(threads=None).recipe is not None
