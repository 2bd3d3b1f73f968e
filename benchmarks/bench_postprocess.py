"""Speed of the post-processing (CRF, boundaries, hierarchy) and tuning of its default level.

Prints one JSON object. Two modes:

- default (speed): :func:`wnetcli.segmentation.postprocess.postprocess` on BSDS500 val images
  (481 x 321) with a synthetic soft segmentation (K classes, smooth random logits: no trained
  model is needed), with and without the CRF, and the colour-only hierarchy (``probs=None``).
  Reports seconds per image per stage (median over images), and the process CPU time.
- ``--tune``: the colour-only hierarchy (no W-Net cue) on the first ``--images`` val images,
  cut at a grid of levels; reports the segmentation covering (BSDS definition: ODS = best
  level for the summed counts, OIS = best level per image) per level and the best level, which
  is what :data:`~wnetcli.segmentation.postprocess.DEFAULT_LEVEL` was set from.

Usage::

    .venv/bin/python benchmarks/bench_postprocess.py --images 10
    .venv/bin/python benchmarks/bench_postprocess.py --tune --images 20
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wnetcli.images import read_rgb  # noqa: E402
from wnetcli.segmentation.postprocess import PostprocessOptions, postprocess  # noqa: E402
from wnetcli.tuning import tune_malloc  # noqa: E402
from wnetcli.ucm import ucm2_to_labels  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "bsds500"


def synthetic_probs(shape: tuple[int, int], k: int, seed: int) -> np.ndarray:
    """A smooth random soft segmentation (K, H, W) float32: blobs of about 40 pixels."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    coarse = rng.normal(scale=4.0, size=(k, shape[0] // 40 + 2, shape[1] // 40 + 2)).astype(np.float32)
    logits = ndi.zoom(coarse, (1, 40, 40), order=1)[:, : shape[0], : shape[1]]
    logits -= logits.max(axis=0)
    probs = np.exp(logits)
    return (probs / probs.sum(axis=0)).astype(np.float32)


def covering_counts(labels: np.ndarray, annotations: list[np.ndarray]) -> tuple[float, float]:
    """(numerator, denominator) of the segmentation covering of the annotations by ``labels``.

    For each annotated region its best intersection-over-union with a region of ``labels``,
    weighted by its size; the denominator is (number of annotations) x (pixels).
    """
    numerator = 0.0
    machine = labels.ravel().astype(np.int64)
    n_machine = int(machine.max()) + 1
    for gt in annotations:
        truth = gt.ravel().astype(np.int64)
        n_truth = int(truth.max()) + 1
        table = np.bincount(machine * n_truth + truth, minlength=n_machine * n_truth).reshape(
            n_machine, n_truth
        )
        rows, cols = table.sum(axis=1), table.sum(axis=0)
        union = rows[:, None] + cols[None, :] - table
        iou = np.where(union > 0, table / np.maximum(union, 1), 0.0)
        numerator += float((cols * iou.max(axis=0)).sum())
    return numerator, float(len(annotations) * labels.size)


def load_annotations(image: Path) -> list[np.ndarray]:
    from scipy.io import loadmat

    mat = loadmat(DATA / "groundTruth" / "val" / f"{image.stem}.mat")["groundTruth"]
    return [mat[0, i]["Segmentation"][0, 0] for i in range(mat.shape[1])]


def tune(images: list[Path], options: PostprocessOptions, levels: np.ndarray) -> dict:
    numerators = np.zeros((len(images), levels.size))
    denominators = np.zeros(len(images))
    regions = np.zeros((len(images), levels.size))
    seconds = []
    for i, path in enumerate(images):
        rgb = read_rgb(path)
        annotations = load_annotations(path)
        began = time.perf_counter()
        result = postprocess(rgb, None, options)
        seconds.append(time.perf_counter() - began)
        for j, level in enumerate(levels):
            labels = ucm2_to_labels(result.ucm2, float(level))
            numerators[i, j], denominators[i] = covering_counts(labels, annotations)
            regions[i, j] = labels.max()
    ods = numerators.sum(axis=0) / denominators.sum()
    best = int(np.argmax(ods))
    per_image = numerators / denominators[:, None]
    ois = float(numerators.max(axis=1).sum() / denominators.sum())
    return {
        "images": len(images),
        "levels": [round(float(v), 3) for v in levels],
        "covering_ods_per_level": [round(float(v), 4) for v in ods],
        "median_regions_per_level": [float(v) for v in np.median(regions, axis=0)],
        "best_level": round(float(levels[best]), 3),
        "covering_ods": round(float(ods[best]), 4),
        "covering_ois": round(ois, 4),
        "per_image_best_level_median": round(float(np.median(levels[per_image.argmax(axis=1)])), 3),
        "postprocess_seconds_median": round(float(np.median(seconds)), 4),
    }


def speed(images: list[Path], options: PostprocessOptions, k: int) -> dict:
    variants = {
        "crf": (options, True),
        "no_crf": (replace(options, crf=False), True),
        "colour_only": (options, False),
    }
    out = {}
    for name, (variant, with_probs) in variants.items():
        stages: dict[str, list[float]] = {
            "crf": [],
            "boundaries": [],
            "hierarchy": [],
            "total": [],
            "total_cpu": [],
        }
        superpixels = []
        for i, path in enumerate(images):
            rgb = read_rgb(path)
            probs = synthetic_probs(rgb.shape[:2], k, seed=i) if with_probs else None
            began, began_cpu = time.perf_counter(), time.process_time()
            result = postprocess(rgb, probs, variant)
            stages["total"].append(time.perf_counter() - began)
            # CPU time of this process: less disturbed than wall time when others share the cores.
            stages["total_cpu"].append(time.process_time() - began_cpu)
            for stage in ("crf", "boundaries", "hierarchy"):
                stages[stage].append(result.timings[stage])
            superpixels.append(int(ucm2_to_labels(result.ucm2, 0.0).max()))
        out[name] = {stage: round(float(np.median(v)), 4) for stage, v in stages.items()}
        out[name]["superpixels_median"] = float(np.median(superpixels))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10, help="number of BSDS500 val images")
    parser.add_argument("--k", type=int, default=16, help="classes of the synthetic soft segmentation")
    parser.add_argument("--tune", action="store_true", help="tune the default level (colour-only covering)")
    parser.add_argument("--colour-contrast", type=float, default=None, help="override colour_contrast")
    parser.add_argument("--window", type=int, default=None, help="override superpixel_window")
    parser.add_argument("--size-prior", type=float, default=None, help="override size_prior")
    args = parser.parse_args()
    tune_malloc()
    images = sorted((DATA / "images" / "val").glob("*.jpg"))[: args.images]
    if not images:
        sys.exit(f"no BSDS500 val images under {DATA}")
    options = PostprocessOptions()
    if args.colour_contrast is not None:
        options = replace(options, colour_contrast=args.colour_contrast)
    if args.size_prior is not None:
        options = replace(options, size_prior=args.size_prior)
    if args.window is not None:
        options = replace(options, superpixel_window=args.window)
    report = {
        "machine": platform.processor() or platform.machine(),
        "options": {
            "colour_contrast": options.colour_contrast,
            "superpixel_window": options.superpixel_window,
            "size_prior": options.size_prior,
        },
    }
    if args.tune:
        report["tune"] = tune(images, options, np.round(np.arange(0.05, 0.96, 0.05), 3))
    else:
        report["k"] = args.k
        report["images"] = len(images)
        report["seconds_per_image_median"] = speed(images, options, args.k)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
