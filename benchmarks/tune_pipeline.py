"""Score post-processing recipes on BSDS500 with the real benchmark; prints one JSON object.

Each variant is a name and a recipe (:mod:`wnetcli.segmentation.recipe`)::

    .venv/bin/python benchmarks/tune_pipeline.py --split train --limit 40 --model m.onnx \\
        --variant default:default --variant network:network \\
        --variant edges_0.3:base=network,cues.network_edges.boundary=0.3,network.mirror=false

``NAME:SPEC``: the spec is a named recipe (``default``, ``fast``, ``network``), a recipe file
(``.toml``/``.json``), or inline recipe-file keys, comma-separated, dotted by section
(``grid.downsample=2``, ``cues.colour_histograms.sigmas=[4,8]``, ``base=fast``), read by
:func:`wnetcli.segmentation.recipe.recipe_from_dict`; values are parsed as JSON where they can
be (``true``, ``0.5``, ``[1,2]``), else kept as text. An empty spec is ``default``.

The network's outputs (soft maps, and boundaries when the model has them) are computed once per
model and setting of ``network.mirror``, at each image's size, and cached (``--cache``), so that
each variant costs only its post-processing and the benchmark; the network runs only if some
variant reads it (``--model``, default the shipped model). ``--no-boundary`` runs the region
benchmark only (covering, PRI, VI), several times faster and enough to compare hierarchies
while tuning. Tune on ``train`` (its annotations are never used for anything else) and report
on ``val``.

Every variant after the first is also compared with the first by a paired bootstrap over the
images (``wnet compare``: 2,000 draws, 95% interval): its ``against_first`` entry gives, per
measure, the difference and the interval, so that a gain within chance is not taken for one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wnetcli.errors import InputError  # noqa: E402
from wnetcli.evaluation import EvaluationOptions, RunCounts, compare_runs, evaluate, find_split  # noqa: E402
from wnetcli.evaluation.dataset import BsdsImage  # noqa: E402
from wnetcli.evaluation.inputs import Prediction  # noqa: E402
from wnetcli.images import read_rgb  # noqa: E402
from wnetcli.segmentation.cues import NetworkBoundaries, NetworkMaps  # noqa: E402
from wnetcli.segmentation.postprocess import postprocess  # noqa: E402
from wnetcli.segmentation.recipe import (  # noqa: E402
    RECIPES,
    NetworkRun,
    Recipe,
    Use,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
)


def parse_variant(text: str) -> tuple[str, str, Recipe]:
    """``"NAME:SPEC"`` -> (name, spec, recipe); see the module's docstring for the spec.

    Raises
    ------
    InputError
        For a spec that names no recipe, or keys or values a recipe rejects.
    """
    name, _, spec = text.partition(":")
    spec = spec.strip() or "default"
    if "=" not in spec:
        return name, spec, load_recipe(spec)  # a named recipe or a file
    return name, spec, recipe_from_dict(inline_keys(spec), name=name)


def inline_keys(spec: str) -> dict:
    """``"a.b=1,c=x"`` -> ``{"a": {"b": 1}, "c": "x"}`` (values JSON where they parse)."""
    values: dict = {}
    for item in filter(None, (part.strip() for part in _split_items(spec))):
        key, equals, raw = item.partition("=")
        if not equals:
            raise InputError(f"{item!r} is not KEY=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *sections, last = key.strip().split(".")
        table = values
        for section in sections:
            table = table.setdefault(section, {})
            if not isinstance(table, dict):
                raise InputError(f"{key}: {section!r} is a value, not a section")
        table[last] = value
    return values


def _split_items(body: str) -> list[str]:
    """Split on commas outside brackets (so ``sigmas=[1,2]`` stays whole)."""
    items, depth, current = [], 0, ""
    for char in body:
        depth += char in "[("
        depth -= char in "])"
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return items


def cache_network_maps(
    model: Path, images: list[BsdsImage], cache: Path, threads: int | None, sizes: tuple[int, ...] = (),
    mirror: bool = False,
) -> Path:
    """Write the model's outputs for every image to ``cache/<sha>[-sizes-...][-mirror]/``:
    ``<id>.npy`` the (K, H, W) soft maps, ``<id>.boundaries.npy`` the (H, W) boundary map when
    the model has one, float16, at the image's size (as the post-processing sees them).

    ``sizes``: the network runs with each of these ``max_size`` values (0: 2048, as ``wnet
    segment`` runs it) and the outputs, each resized to the image's size, are averaged; empty is
    ``(0,)``. ``mirror``: also on the mirrored image (``network.mirror`` of a recipe).
    """
    from wnetcli.segmentation import Segmenter, SegmentOptions
    from wnetcli.segmentation.grids import resize_maps
    from wnetcli.segmentation.runtime import OnnxModel

    sizes = tuple(sizes) or (0,)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()[:16]
    folder = cache / (digest if sizes == (0,) else f"{digest}-sizes-{'-'.join(map(str, sizes))}")
    folder = folder.with_name(folder.name + "-mirror") if mirror else folder
    folder.mkdir(parents=True, exist_ok=True)
    has_boundaries = "boundaries" in OnnxModel(model, device="cpu", threads=1).outputs
    # A recipe reading every output the model has, so that one prediction gives them all.
    reader = Recipe(
        cues=(*RECIPES["default"].cues, *([Use(NetworkBoundaries(), boundary=1.0)] if has_boundaries else [])),
        network=NetworkRun(mirror=mirror),
    )

    def done(image: BsdsImage) -> bool:
        return (folder / f"{image.id}.npy").exists() and (
            not has_boundaries or (folder / f"{image.id}.boundaries.npy").exists()
        )

    missing = [image for image in images if not done(image)]
    if missing:
        segmenters = [
            Segmenter(model, SegmentOptions(
                recipe=reader, soft_maps=True, device="cpu", threads=threads, max_size=size or 2048
            ))
            for size in sizes
        ]
        for n, image in enumerate(missing):
            rgb = read_rgb(image.image)
            shape = rgb.shape[:2]
            maps = [segmenter.predict([rgb])[0][0] for segmenter in segmenters]
            probs = sum(resize_maps(m.soft_maps, shape) for m in maps) / len(maps)
            np.save(folder / f"{image.id}.npy", probs.astype(np.float16))
            if has_boundaries:
                edges = sum(resize_maps(m.boundaries[None], shape)[0] for m in maps) / len(maps)
                np.save(folder / f"{image.id}.boundaries.npy", edges.astype(np.float16))
            print(f"\rnetwork maps {n + 1}/{len(missing)}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    return folder


@dataclass
class CachedPipeline:
    """A recipe's post-processing on cached network maps, as an evaluation method (picklable)."""

    maps_dir: Path | None
    recipe: Recipe
    name: str = "pipeline"

    def __call__(self, image: BsdsImage) -> Prediction:
        rgb = read_rgb(image.image)
        needs = self.recipe.network_outputs()
        network = None
        if needs:
            probs = boundaries = None
            if "probs" in needs:
                probs = np.load(self.maps_dir / f"{image.id}.npy").astype(np.float32)
                probs /= probs.sum(axis=0, keepdims=True)  # float16 storage: back to a softmax
            if "boundaries" in needs:
                boundaries = np.load(self.maps_dir / f"{image.id}.boundaries.npy").astype(np.float32)
            network = NetworkMaps(probs, boundaries)
        result = postprocess(rgb, network, self.recipe)
        return Prediction("ucm2", result.ucm2.astype(np.float64))

    def describe(self) -> dict:
        return {"recipe": recipe_to_dict(self.recipe)}


def summary(result) -> dict:
    out = {"images": len(result.images), "seconds": round(result.seconds, 1)}
    if result.regions is not None:
        r = result.regions
        out.update(
            sc_ods=round(r.covering_ods, 4), sc_ods_threshold=round(r.covering_ods_threshold, 3),
            sc_ois=round(r.covering_ois, 4), sc_best=round(r.covering_best, 4),
            pri_ods=round(r.pri_ods, 4), pri_ois=round(r.pri_ois, 4), vi_ods=round(r.vi_ods, 4),
            vi_ois=round(r.vi_ois, 4),
        )
    if result.boundary is not None:
        b = result.boundary
        out.update(f_ods=round(b.ods_f, 4), f_ois=round(b.ois_f, 4), ap=round(b.ap, 4))
    method_cpu = sum(image.timings["method"] for image in result.images) / max(1, len(result.images))
    out["postprocess_cpu_seconds_per_image"] = round(method_cpu, 3)
    return out


def against(first: RunCounts, counts: RunCounts) -> dict:
    """Per measure ``[difference, low, high]`` (95% paired bootstrap) of ``counts`` minus ``first``."""
    comparison = compare_runs(first, counts)
    return {m.name: [round(v, 4) for v in (m.difference, m.low, m.high)] for m in comparison.measures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bsds", type=Path, default=ROOT.parent / "shared" / "data" / "bsds500")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=None, help="first N images of the split")
    parser.add_argument("--stride", type=int, default=1, help="every Nth image (a spread-out subset)")
    parser.add_argument(
        "--model", type=Path, default=None,
        help="exported W-Net (.onnx) for the variants that read the network (default: the shipped model)",
    )
    parser.add_argument(
        "--variant", action="append", default=[],
        help="NAME:SPEC, SPEC a named recipe, a recipe file or inline keys (repeatable; default default:default)",
    )
    parser.add_argument("--thresholds", type=int, default=99)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads while caching")
    parser.add_argument(
        "--sizes", default="", help="max_size values to run the network with, comma-separated, outputs "
        "averaged (0: 2048, as wnet segment)",
    )
    parser.add_argument("--no-boundary", action="store_true", help="region benchmark only")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/wnet-network-maps"))
    args = parser.parse_args()

    variants = []
    for text in args.variant or ["default:default"]:
        try:
            variants.append(parse_variant(text))
        except InputError as exc:
            parser.error(f"variant {text!r}: {exc}")
    images = find_split(args.bsds, args.split)[:: args.stride][: args.limit]
    model = args.model
    if model is None:
        model = next((recipe.network.shipped_model for *_, recipe in variants if recipe.reads_network), None)
    sizes = tuple(int(size) for size in args.sizes.split(",") if size)
    maps_dirs: dict[bool, Path] = {}  # by network.mirror: each computed once, shared by the variants
    options = EvaluationOptions(thresholds=args.thresholds, jobs=args.jobs, boundary=not args.no_boundary)
    report = {"split": args.split, "images": len(images), "model": str(model) if model else None, "variants": {}}
    first = None
    for name, spec, recipe in variants:
        maps_dir = None
        if recipe.reads_network:
            mirror = recipe.network.mirror
            if mirror not in maps_dirs:
                began = time.perf_counter()
                maps_dirs[mirror] = cache_network_maps(
                    model, images, args.cache / args.split, args.threads, sizes, mirror
                )
                print(f"network maps cached in {time.perf_counter() - began:.1f} s: {maps_dirs[mirror]}",
                      file=sys.stderr)
            maps_dir = maps_dirs[mirror]
            if "boundaries" in recipe.network_outputs() and not any(maps_dir.glob("*.boundaries.npy")):
                parser.error(f"variant {name}: the recipe reads the network's boundaries, which {model} lacks")
        result = evaluate(images, CachedPipeline(maps_dir, recipe, name=name), options)
        report["variants"][name] = {"spec": spec, "recipe": recipe_to_dict(recipe), **summary(result)}
        counts = RunCounts.from_result(result)
        if first is None:
            first = counts
        else:
            report["variants"][name]["against_first"] = against(first, counts)
        brief = {k: v for k, v in report["variants"][name].items() if k != "recipe"}
        print(name, json.dumps(brief), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
