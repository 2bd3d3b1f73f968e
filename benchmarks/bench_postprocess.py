"""Speed of the post-processing (CRF, boundaries, hierarchy) per recipe; prints one JSON object.

:func:`wnetcli.segmentation.postprocess.postprocess` on BSDS500 val images (481 x 321). The
recipes that read the network get a synthetic soft segmentation (K classes, smooth random
logits; the boundary map of a boundary-trained model is its class-change map), so no trained
model is needed. Reports seconds per image per stage (median over images) and the process CPU
time. (Quality is tuned by ``tune_pipeline.py``.)

The variants are ``NAME:SPEC`` as in ``tune_pipeline.py`` (a named recipe, a recipe file or
inline recipe-file keys); by default: the ``default``, ``fast`` and ``network`` recipes, the
network recipe without the CRF, and the network's soft maps in the region likeness (a fifth of
it)::

    .venv/bin/python benchmarks/bench_postprocess.py --images 10
    .venv/bin/python benchmarks/bench_postprocess.py --images 4 --variant w12:superpixels.window=12
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tune_pipeline import parse_variant  # noqa: E402

from wnetcli.errors import InputError  # noqa: E402
from wnetcli.images import read_rgb  # noqa: E402
from wnetcli.segmentation.cues import NetworkMaps  # noqa: E402
from wnetcli.segmentation.cues.network import probability_boundaries  # noqa: E402
from wnetcli.segmentation.postprocess import postprocess  # noqa: E402
from wnetcli.segmentation.recipe import Recipe  # noqa: E402
from wnetcli.tuning import tune_malloc  # noqa: E402
from wnetcli.ucm import ucm2_to_labels  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "bsds500"

VARIANTS = (
    "default:default",
    "fast:fast",
    "network:network",
    "network_no_crf:base=network,cues.network_edges.smoothed=false",
    # Likeness weights are normalised: 0.25 beside the default's 0.5 + 0.5 is a fifth.
    "network_likeness_0.2:cues.network_likeness.likeness=0.25",
)


def synthetic_probs(shape: tuple[int, int], k: int, seed: int) -> np.ndarray:
    """A smooth random soft segmentation (K, H, W) float32: blobs of about 40 pixels."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    coarse = rng.normal(scale=4.0, size=(k, shape[0] // 40 + 2, shape[1] // 40 + 2)).astype(np.float32)
    logits = ndi.zoom(coarse, (1, 40, 40), order=1)[:, : shape[0], : shape[1]]
    logits -= logits.max(axis=0)
    probs = np.exp(logits)
    return (probs / probs.sum(axis=0)).astype(np.float32)


def synthetic_maps(recipe: Recipe, shape: tuple[int, int], k: int, seed: int) -> NetworkMaps | None:
    """The network maps ``recipe`` reads, synthetic; None when it reads none."""
    needs = recipe.network_outputs()
    if not needs:
        return None
    probs = synthetic_probs(shape, k, seed)
    boundaries = probability_boundaries(probs) if "boundaries" in needs else None
    return NetworkMaps(probs if "probs" in needs else None, boundaries)


def speed(images: list[Path], recipe: Recipe, k: int) -> dict:
    stages: dict[str, list[float]] = {"crf": [], "boundaries": [], "hierarchy": [], "total": [], "total_cpu": []}
    superpixels = []
    for i, path in enumerate(images):
        rgb = read_rgb(path)
        maps = synthetic_maps(recipe, rgb.shape[:2], k, seed=i)
        began, began_cpu = time.perf_counter(), time.process_time()
        result = postprocess(rgb, maps, recipe)
        stages["total"].append(time.perf_counter() - began)
        # CPU time of this process: less disturbed than wall time when others share the cores.
        stages["total_cpu"].append(time.process_time() - began_cpu)
        for stage in ("crf", "boundaries", "hierarchy"):
            stages[stage].append(result.timings[stage])
        superpixels.append(int(ucm2_to_labels(result.ucm2, 0.0).max()))
    out = {stage: round(float(np.median(v)), 4) for stage, v in stages.items()}
    out["superpixels_median"] = float(np.median(superpixels))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10, help="number of BSDS500 val images")
    parser.add_argument("--k", type=int, default=16, help="classes of the synthetic soft segmentation")
    parser.add_argument(
        "--variant", action="append", default=None,
        help="NAME:SPEC (a named recipe, a recipe file or inline keys; repeatable; default: "
        + ", ".join(VARIANTS) + ")",
    )
    args = parser.parse_args()
    tune_malloc()
    images = sorted((DATA / "images" / "val").glob("*.jpg"))[: args.images]
    if not images:
        sys.exit(f"no BSDS500 val images under {DATA}")
    variants = []
    for text in args.variant or VARIANTS:
        try:
            variants.append(parse_variant(text))
        except InputError as exc:
            parser.error(f"variant {text!r}: {exc}")
    report = {
        "machine": platform.processor() or platform.machine(),
        "k": args.k,
        "images": len(images),
        "specs": {name: spec for name, spec, _ in variants},
        "seconds_per_image_median": {},
    }
    for name, _, recipe in variants:
        report["seconds_per_image_median"][name] = speed(images, recipe, args.k)
        print(name, json.dumps(report["seconds_per_image_median"][name]), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
