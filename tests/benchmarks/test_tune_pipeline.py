"""benchmarks/tune_pipeline.py: a variant's spec (a named recipe, a recipe file or inline keys)
becomes the recipe it names."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from tune_pipeline import inline_keys, parse_variant  # noqa: E402

from wnetcli.errors import InputError  # noqa: E402
from wnetcli.segmentation.recipe import RECIPES  # noqa: E402


def test_an_empty_spec_is_the_default_recipe():
    assert parse_variant("base:") == ("base", "default", RECIPES["default"])


def test_a_named_recipe():
    name, spec, recipe = parse_variant("net:network")
    assert (name, spec, recipe) == ("net", "network", RECIPES["network"])


def test_inline_keys_on_a_base():
    name, _, recipe = parse_variant(
        "edges:base=network,cues.network_edges.boundary=0.3,network.mirror=false,grid.downsample=2,"
        "cues.colour_histograms.sigmas=[4,8]"
    )
    uses = {use.cue.name: use for use in recipe.cues}
    assert recipe.name == "edges"
    assert uses["network_edges"].boundary == 0.3
    assert not recipe.network.mirror and recipe.grid.downsample == 2
    assert tuple(uses["colour_histograms"].cue.sigmas) == (4, 8)


def test_inline_keys_nest_by_dots_and_parse_json():
    assert inline_keys("a.b=1,a.c=[1,2],d=text") == {"a": {"b": 1, "c": [1, 2]}, "d": "text"}


def test_a_recipe_file(tmp_path):
    path = tmp_path / "coarse.toml"
    path.write_text("[grid]\ndownsample = 3\n")
    _, spec, recipe = parse_variant(f"coarse:{path}")
    assert spec == str(path) and recipe.grid.downsample == 3


@pytest.mark.parametrize(
    "text",
    ["x:cues.nope.boundary=1", "x:network.mirror=True", "x:no-such-recipe", "x:grid.downsample"],
)
def test_a_bad_spec_is_an_input_error(text):
    with pytest.raises(InputError):
        parse_variant(text)
