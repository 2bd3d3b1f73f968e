"""The type checks of the options dataclasses (wnetcli.options): wrong types are InputErrors
naming the field, before they reach the post-processing as bare TypeErrors or silent no-ops."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from wnetcli.errors import InputError
from wnetcli.evaluation import EvaluationOptions
from wnetcli.segmentation import BatchOptions, SegmentOptions
from wnetcli.segmentation.postprocess import PostprocessOptions


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PostprocessOptions(regions=2.5), "PostprocessOptions.regions must be int | None, got 2.5"),
        (lambda: PostprocessOptions(regions=True), "PostprocessOptions.regions must be int | None, got True"),
        (lambda: PostprocessOptions(level="0.5"), "PostprocessOptions.level must be float | None, got '0.5'"),
        (lambda: PostprocessOptions(hierarchy_downsample=2.5), "hierarchy_downsample must be int, got 2.5"),
        (lambda: PostprocessOptions(wnet_weight=math.nan), "wnet_weight must be float, got nan"),
        (lambda: PostprocessOptions(colour_sigmas=(1.0, "x")), "colour_sigmas must be tuple[float, ...]"),
        (lambda: PostprocessOptions(crf="yes"), "PostprocessOptions.crf must be bool, got 'yes'"),
        (lambda: PostprocessOptions(superpixel_quantisation=70000), "quantisation must be between 2 and 65536"),
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
    options = PostprocessOptions(wnet_weight=1, colour_sigmas=[1, 2.0], regions=None, level=0.4)
    assert options.colour_sigmas == [1, 2.0]
    assert BatchOptions(out_dir="out", shard=(0, 2)).shard == (0, 2)
    assert SegmentOptions(postprocess=PostprocessOptions(), threads=None).postprocess is not None
