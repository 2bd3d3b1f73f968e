"""Recipes: which cues build the hierarchy, with what weights, and how each stage is set.

The post-processing (:func:`wnetcli.segmentation.postprocess.postprocess`) is a straight list of
stages, each set by one field of a :class:`Recipe`::

    cues -> boundary map -> superpixels -> merge -> ucm2 -> level scale -> cut
    (cues)  (cues' weights) (superpixels)  (merge)          (levels)

``grid`` sets the resolution the cues and the hierarchy work at, ``crf`` how the network's soft
maps are smoothed for the cues that read them smoothed, and ``network`` how the network is run
(mirroring). Every parameter is declared once, with its default, by the object that uses it:
the cue classes of :mod:`.cues`, :class:`~.hierarchy.SuperpixelOptions`,
:class:`~.hierarchy.MergeOptions`, :class:`~.levels.LevelScale`, :class:`~.crf.CRFOptions`.

Named recipes (:data:`RECIPES`): ``default`` (image cues only), ``fast`` (the same on a grid
twice as coarse), ``network`` (the default plus the W-Net's edges, mirrored) and ``boundaries``
(the default plus the boundaries the shipped ``boundaries`` model learnt from it). A recipe file
(TOML) uses the same keys as the dataclasses, on top of a named recipe (``base``, default
``"default"``)::

    base = "default"

    [grid]
    downsample = 2

    [cues.network_edges]      # a cue's table: its weights, then its own parameters
    boundary = 0.2
    sigma = 1.0

    [network]
    mirror = true

A cue's table holds :class:`Use`'s fields (``boundary``, ``likeness``, ``split``, ``flood``) and
the cue's own; a cue named in the base recipe keeps what the file does not change, and a cue
whose weights are all 0 (and ``split`` false) is dropped. :func:`recipe_to_dict` gives the same
keys back (``metrics.json`` and ``runs.jsonl`` record it), and :func:`recipe_from_dict` reads them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from wnetcli.errors import InputError
from wnetcli.options import check_field_types, read_settings_file
from wnetcli.segmentation.crf import CRFOptions
from wnetcli.segmentation.cues import (
    BOUNDARIES,
    CUES,
    SMOOTHED_MAPS,
    SOFT_MAPS,
    ColourHistograms,
    Cue,
    LabGradient,
    NetworkBoundaries,
    NetworkEdges,
    Textons,
)
from wnetcli.segmentation.hierarchy import MergeOptions, SuperpixelOptions
from wnetcli.segmentation.levels import LevelScale

#: Where the shipped models live (``NAME.onnx``, with the model card ``README.md``).
MODELS_FOLDER = Path(__file__).resolve().parent.parent / "models"
#: The models that ship with wnet, by name: ``default`` (quarter width, soft maps) and
#: ``boundaries`` (half width, soft maps and a boundary map learnt from the default recipe).
SHIPPED_MODELS = ("default", "boundaries")

__all__ = [
    "MODELS_FOLDER", "RECIPES", "SHIPPED_MODELS", "Grid", "NetworkRun", "Recipe", "Use", "load_recipe",
    "recipe_from_dict", "recipe_to_dict",
]


@dataclass(frozen=True)
class Use:
    """A cue in a recipe, with the weights it gets there.

    Attributes:
        cue: the cue (:mod:`wnetcli.segmentation.cues`).
        boundary: its weight in the boundary map (a weighted mean of the cues' maps), >= 0.
        likeness: its weight in the region likeness (the weights are normalised to sum to 1),
            >= 0.
        split: the superpixels are also cut along the cue's partition.
        flood: the watershed floods its boundary map too; False: the map weighs in the merge
            costs only, so the superpixel borders stay where the other cues put them.
    """

    cue: Cue
    boundary: float = 0.0
    likeness: float = 0.0
    split: bool = False
    flood: bool = True

    def __post_init__(self) -> None:
        check_field_types(self)
        label = f"{self.cue.name}"
        for role, weight in (("boundary", self.boundary), ("likeness", self.likeness)):
            if weight < 0:
                raise InputError(f"cues.{label}.{role} must be >= 0, got {weight}")
            if weight > 0 and role not in self.cue.gives:
                raise InputError(f"cues.{label}.{role}: {type(self.cue).__name__} gives no {role} cue")
        if self.split and "partition" not in self.cue.gives:
            raise InputError(f"cues.{label}.split: {type(self.cue).__name__} gives no partition")

    @property
    def active(self) -> bool:
        """Whether the cue has any effect (a weight above 0, or a split)."""
        return self.boundary > 0 or self.likeness > 0 or self.split


@dataclass(frozen=True)
class Grid:
    """The resolution the cues and the hierarchy work at.

    Attributes:
        downsample: a grid this many times coarser than the image (block means), in 1..8; the
            superpixels are enlarged back (the same region graph), so the ucm2 and labels come
            out at the image's size with borders on a ``downsample``-pixel lattice. Every length
            (sigmas, windows) stays in the image's pixels: 2 computes the same cues at the same
            physical scales, about four times faster.
    """

    downsample: int = 1

    def __post_init__(self) -> None:
        check_field_types(self)
        if not 1 <= self.downsample <= 8:
            raise InputError(f"Grid.downsample must be between 1 and 8, got {self.downsample}")


@dataclass(frozen=True)
class NetworkRun:
    """Which network runs, and how, when a cue reads it.

    Attributes:
        model: the shipped model (``wnetcli/models/NAME.onnx``, one of :data:`SHIPPED_MODELS`)
            run when no model is given (``--model`` takes precedence): ``"default"`` (soft maps
            only) or ``"boundaries"`` (soft maps and learned boundaries).
        mirror: also run it on the left-right mirror of each image and average the two outputs
            (the mirror's mirrored back): test-time augmentation, twice the inference time.
    """

    model: str = "default"
    mirror: bool = False

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.model not in SHIPPED_MODELS:
            raise InputError(f"network.model must be one of {', '.join(SHIPPED_MODELS)}, got {self.model!r}")

    @property
    def shipped_model(self) -> Path:
        """The path of :attr:`model` in this installation."""
        return MODELS_FOLDER / f"{self.model}.onnx"


def _default_cues() -> tuple[Use, ...]:
    return (
        Use(LabGradient(), boundary=1.0),
        Use(ColourHistograms(), boundary=1.0, likeness=0.5),
        Use(Textons(), likeness=0.5),
    )


@dataclass(frozen=True)
class Recipe:
    """A whole post-processing: the cues and their weights, and the settings of each stage.

    Attributes:
        cues: the cues in use (:class:`Use`), in order (the order of the sums).
        grid: :class:`Grid`.
        superpixels: :class:`~wnetcli.segmentation.hierarchy.SuperpixelOptions` (lengths in
            the image's pixels).
        merge: :class:`~wnetcli.segmentation.hierarchy.MergeOptions`.
        levels: :class:`~wnetcli.segmentation.levels.LevelScale`.
        crf: :class:`~wnetcli.segmentation.crf.CRFOptions`, for the cues that read smoothed maps.
        network: :class:`NetworkRun`.
        name: what the recipe is called in reports (a named recipe's name, or a file's stem).
    """

    cues: tuple[Use, ...] = field(default_factory=_default_cues)
    grid: Grid = Grid()
    superpixels: SuperpixelOptions = SuperpixelOptions()
    merge: MergeOptions = MergeOptions()
    levels: LevelScale = LevelScale()
    crf: CRFOptions = CRFOptions()
    network: NetworkRun = NetworkRun()
    name: str = "default"

    def __post_init__(self) -> None:
        check_field_types(self)
        if not all(isinstance(use, Use) for use in self.cues):
            raise InputError("Recipe.cues must hold Use entries (a cue with its weights)")
        names = [use.cue.name for use in self.cues]
        if len(set(names)) != len(names):
            raise InputError(f"Recipe.cues names a cue twice: {names}")
        if not any(use.boundary > 0 for use in self.cues):
            raise InputError("Recipe.cues: no cue has a boundary weight above 0, so there is no boundary map")

    @property
    def reads(self) -> frozenset[str]:
        """What the active cues read, together: a subset of ``{"image", "soft_maps",
        "smoothed_maps", "boundaries"}``."""
        return frozenset().union(*(use.cue.reads for use in self.cues if use.active))

    @property
    def reads_network(self) -> bool:
        """Whether a cue reads an output of the network (so the network must run)."""
        return bool(self.reads & {SOFT_MAPS, SMOOTHED_MAPS, BOUNDARIES})

    def network_outputs(self) -> frozenset[str]:
        """The model outputs the cues read: ``"probs"`` (soft maps) and/or ``"boundaries"``."""
        reads = self.reads
        outputs = {"probs"} if reads & {SOFT_MAPS, SMOOTHED_MAPS} else set()
        return frozenset(outputs | ({"boundaries"} if BOUNDARIES in reads else set()))


def _named() -> dict[str, Recipe]:
    default = Recipe()
    fast_cues = tuple(
        replace(use, cue=replace(use.cue, sigmas=(8.0,))) if isinstance(use.cue, ColourHistograms)
        else replace(use, cue=replace(use.cue, scales=(2.0, 4.0))) if isinstance(use.cue, Textons)
        else use
        for use in default.cues
    )
    return {
        "default": default,
        # Cues and hierarchy on a grid twice as coarse, with the texton filters kept at 2 and 4
        # pixels of the image, a 14-pixel marker window and the histogram gradient at its coarse
        # scale only: about a third of the default's time (docs/experiments.md).
        "fast": Recipe(
            cues=fast_cues, grid=Grid(downsample=2), superpixels=SuperpixelOptions(window=14), name="fast"
        ),
        # The default with the network's edges in the boundary map, mirrored.
        "network": Recipe(
            cues=(*default.cues, Use(NetworkEdges(), boundary=0.2)), network=NetworkRun(mirror=True), name="network"
        ),
        # The default with the boundaries the shipped "boundaries" model learnt from it, at the
        # weight chosen on BSDS500 train (docs/experiments.md).
        "boundaries": Recipe(
            cues=(*default.cues, Use(NetworkBoundaries(), boundary=1.0)),
            network=NetworkRun(model="boundaries"),
            name="boundaries",
        ),
    }


#: The recipes that ship with wnet, by name.
RECIPES: dict[str, Recipe] = _named()

_STAGES = {"grid": Grid, "superpixels": SuperpixelOptions, "merge": MergeOptions, "levels": LevelScale,
           "crf": CRFOptions, "network": NetworkRun}
_USE_FIELDS = ("boundary", "likeness", "split", "flood")


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain data with the keys of a recipe file (tuples as lists)."""
    out: dict[str, Any] = {"name": recipe.name}
    for stage in _STAGES:
        out[stage] = _plain(dataclasses.asdict(getattr(recipe, stage)))
    out["cues"] = {
        use.cue.name: {**{key: getattr(use, key) for key in _USE_FIELDS}, **use.cue.parameters()}
        for use in recipe.cues
    }
    return out


def _plain(values: dict) -> dict:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


def _tuples(values: Mapping[str, Any]) -> dict[str, Any]:
    """Lists (as TOML and JSON give them) back to the tuples the dataclasses hold."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}


def recipe_from_dict(values: Mapping[str, Any], *, name: str | None = None) -> Recipe:
    """A recipe from plain data with the keys of a recipe file (see the module's docstring).

    Raises
    ------
    InputError
        For an unknown base, section, cue or key, or a value out of range, naming it.
    """
    values = dict(values)
    base_name = values.pop("base", "default")
    if base_name not in RECIPES:
        raise InputError(f"base must be one of {', '.join(RECIPES)}, got {base_name!r}")
    base = RECIPES[base_name]
    changes: dict[str, Any] = {"name": values.pop("name", name or base_name)}
    cues = values.pop("cues", {})
    for section, table in values.items():
        if section not in _STAGES:
            raise InputError(f"unknown recipe section {section!r}; the sections are cues, {', '.join(_STAGES)}")
        if not isinstance(table, Mapping):
            raise InputError(f"recipe section {section!r} must be a table of settings")
        stage = getattr(base, section)
        unknown = set(table) - {f.name for f in dataclasses.fields(stage)}
        if unknown:
            raise InputError(f"unknown key(s) in recipe section {section!r}: {', '.join(sorted(unknown))}")
        try:
            changes[section] = replace(stage, **_tuples(table))
        except TypeError as exc:
            raise InputError(f"recipe section {section!r}: {exc}") from exc
    if not isinstance(cues, Mapping):
        raise InputError("recipe section 'cues' must hold one table per cue")
    uses = {use.cue.name: use for use in base.cues}
    for cue_name, table in cues.items():
        if cue_name not in CUES:
            raise InputError(f"unknown cue {cue_name!r}; the cues are {', '.join(CUES)}")
        if not isinstance(table, Mapping):
            raise InputError(f"cues.{cue_name} must be a table of weights and settings")
        table = _tuples(table)
        weights = {key: table.pop(key) for key in _USE_FIELDS if key in table}
        known = uses.get(cue_name)
        cue_class = CUES[cue_name]
        unknown = set(table) - {f.name for f in dataclasses.fields(cue_class)}
        if unknown:
            raise InputError(f"unknown key(s) in cues.{cue_name}: {', '.join(sorted(unknown))}")
        try:
            cue = replace(known.cue, **table) if known else cue_class(**table)
            uses[cue_name] = replace(known, cue=cue, **weights) if known else Use(cue, **weights)
        except TypeError as exc:
            raise InputError(f"cues.{cue_name}: {exc}") from exc
    changes["cues"] = tuple(use for use in uses.values() if use.active)
    return replace(base, **changes)


def load_recipe(spec: str | Path | Recipe) -> Recipe:
    """A named recipe (:data:`RECIPES`), a recipe file (``.toml``, or ``.json`` with the same
    keys), or ``spec`` itself if it is a :class:`Recipe`.

    Raises
    ------
    InputError
        An unknown name, a file that cannot be read or parsed, or settings out of range (one
        line naming the file and the key).
    """
    if isinstance(spec, Recipe):
        return spec
    text = str(spec)
    if text in RECIPES:
        return RECIPES[text]
    path = Path(text)
    if not path.is_file():
        raise InputError(f"unknown recipe {text!r}: give one of {', '.join(RECIPES)} or a .toml file")
    values = read_settings_file(path, "recipe")
    try:
        return recipe_from_dict(values, name=path.stem)
    except InputError as exc:
        raise InputError(f"recipe {path}: {exc}") from exc

