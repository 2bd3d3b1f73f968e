"""Benchmark `wnet evaluate`: seconds per image for each stage on a BSDS500 split; prints JSON.

The method's predictions are computed first and cached as .npy files (not timed), so the timed
run measures the evaluation alone, as `wnet evaluate --results` runs it:

    .venv/bin/python benchmarks/bench_evaluate.py --split val --method felzenszwalb --jobs 2
    .venv/bin/python benchmarks/bench_evaluate.py --split val --method sobel --jobs 2   # soft maps

``--method`` is a ucm2 hierarchy (boundary and region benchmarks; a threshold that gives the
same map as the previous one is not matched again): a scikit-image baseline, or a wnet recipe
(``default``, ``fast``, ``network`` or a recipe file: the pipeline of ``wnet evaluate
--recipe``, with the shipped model where the recipe reads the network). Or ``sobel``: the
grey-level gradient magnitude on non-maximum-suppressed (Canny) edge pixels as a soft boundary
map, a worst case for the boundary benchmark (nearly every one of the thresholds gives a
different map)::

    .venv/bin/python benchmarks/bench_evaluate.py --split val --method default --jobs 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wnetcli.atomic import atomic_path  # noqa: E402
from wnetcli.evaluation import (  # noqa: E402
    BASELINES,
    Baseline,
    EvaluationOptions,
    ResultsDir,
    SegmenterMethod,
    evaluate,
    find_split,
)
from wnetcli.evaluation.dataset import BsdsImage  # noqa: E402


@cache
def _pipeline(recipe: str) -> SegmenterMethod:
    """wnet's pipeline with ``recipe`` as a method, built once per process (the model loads once)."""
    from wnetcli.segmentation import SegmentOptions, load_recipe

    return SegmenterMethod(None, SegmentOptions(recipe=load_recipe(recipe), device="cpu"), name=recipe)


def _predict(method: str, image: BsdsImage, cache: Path) -> None:
    """Write the prediction of ``method`` for ``image`` to ``cache/<id>.npy`` unless it exists."""
    target = cache / f"{image.id}.npy"
    if target.exists():
        return
    if method == "sobel":
        from skimage.color import rgb2gray
        from skimage.feature import canny
        from skimage.filters import sobel

        from wnetcli.images import read_rgb

        grey = rgb2gray(read_rgb(image.image))
        # Gradient magnitude on the non-maximum-suppressed edge pixels: thin like the soft maps
        # that contour detectors publish (a raw gradient would be blobs, not boundaries).
        grad = sobel(grey) * canny(grey, sigma=1.0, low_threshold=0.0, high_threshold=0.0)
        data = grad / max(float(grad.max()), 1e-12)
    elif method in BASELINES:
        data = Baseline(method)(image).data
    else:
        data = _pipeline(method)(image).data
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        np.save(handle, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bsds", type=Path, default=ROOT.parent / "shared" / "data" / "bsds500")
    parser.add_argument("--split", default="val")
    parser.add_argument(
        "--method", default="felzenszwalb", help="a scikit-image baseline, sobel, or a wnet recipe (name or file)"
    )
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--thresholds", type=int, default=99)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/wnet-bench-evaluate"))
    args = parser.parse_args()

    images = find_split(args.bsds, args.split)[: args.limit]
    if args.method not in (*BASELINES, "sobel"):
        from wnetcli.errors import InputError
        from wnetcli.segmentation import load_recipe

        try:
            load_recipe(args.method)
        except InputError as exc:
            parser.error(f"--method: a baseline ({', '.join(BASELINES)}), sobel, or a recipe: {exc}")
    cache = args.cache / f"{args.split}-{args.method.replace('/', '_')}"
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        list(pool.map(_predict, [args.method] * len(images), images, [cache] * len(images)))
    predict_seconds = time.perf_counter() - start

    options = EvaluationOptions(thresholds=args.thresholds, jobs=args.jobs)
    result = evaluate(images, ResultsDir(cache, name=args.method), options)
    n = len(result.images)
    stages = ("ground_truth", "method", "thin", "match", "regions")
    per_image = {s: sum(img.timings[s] for img in result.images) / n for s in stages}
    report = {
        "split": args.split,
        "method": args.method,
        "kind": result.kind,
        "images": n,
        "jobs": args.jobs,
        "thresholds": args.thresholds,
        "distinct_boundary_maps_per_image": float(np.mean([img.distinct for img in result.images])),
        "evaluation_seconds": round(result.seconds, 2),
        "seconds_per_image_wall": round(result.seconds / n, 4),
        "cpu_seconds_per_image": round(sum(per_image.values()), 4),
        "projected_wall_seconds_200_images_2_busy_cores": round(sum(per_image.values()) * 200 / 2, 1),
        "stage_cpu_seconds_per_image": {s: round(v, 4) for s, v in per_image.items()},
        "extrapolated_seconds_for_200_images": round(result.seconds * 200 / n, 1),
        "prediction_seconds_not_timed_above": round(predict_seconds, 1),
        "boundary_ods_f": round(result.boundary.ods_f, 4),
        "covering_ods": None if result.regions is None else round(result.regions.covering_ods, 4),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
