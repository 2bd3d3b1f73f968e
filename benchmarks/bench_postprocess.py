"""Speed of the post-processing (CRF, boundaries, hierarchy); prints one JSON object.

:func:`wnetcli.segmentation.postprocess.postprocess` on BSDS500 val images (481 x 321) with a
synthetic soft segmentation (K classes, smooth random logits: no trained model is needed):
the defaults (CRF on), without the CRF, with the W-Net in the merge (``--wnet-share 0.2``),
and the colour-only hierarchy (``probs=None``). Reports seconds per image per stage (median
over images), and the process CPU time. (Quality is tuned by ``tune_pipeline.py``.)

Usage::

    .venv/bin/python benchmarks/bench_postprocess.py --images 10
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


def speed(images: list[Path], options: PostprocessOptions, k: int) -> dict:
    variants = {
        "crf": (options, True),
        "no_crf": (replace(options, crf=False), True),
        "wnet_share_0.2": (replace(options, likeness_colour_share=0.8), True),
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
    report["k"] = args.k
    report["images"] = len(images)
    report["seconds_per_image_median"] = speed(images, options, args.k)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
