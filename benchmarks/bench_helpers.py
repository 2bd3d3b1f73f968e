"""Hand-written helpers of the post-processing against their scikit-image / SciPy / NumPy
equivalents: same output? which is faster? Prints one JSON object.

For each helper: the library call that does the same job, the largest difference of their
outputs on realistic inputs (BSDS500 val images, 321 x 481, or random images of that size
when the data set is absent) and the time of each (median over ``--repeats`` interleaved calls
per input, in this one process, BLAS on one thread as ``wnet segment`` post-processes):

- ``cues.colour.rgb_to_lab`` against ``skimage.color.rgb2lab``;
- ``grids.block_mean`` against ``skimage.measure.block_reduce(..., np.mean)``, which pads with
  ``cval`` where the block grid overhangs the image (block_mean repeats the edge);
- ``grids.upsample_linear`` against ``scipy.ndimage.zoom(order=1)``: upsample_linear maps output
  pixel ``i`` to input coordinate ``(i + 0.5) / f - 0.5`` (pixel centres, the block grid of
  block_mean), which is ``zoom(grid_mode=True, mode="nearest")`` by the integer factor cropped
  to the image; zoom's default (``grid_mode=False``) aligns the corner pixels instead;
- the texton k-means (``cues.textons._kmeans_plus_plus``, then scipy's Lloyd iterations, then
  ``_nearest_centre``) against ``scipy.cluster.vq.kmeans2(minit="++")`` and ``vq``, given the
  same seeded generator: the centres, their inertia and how many pixels change texton (clusters
  matched one to one), and apart the seeding (scipy's private ``_kpp``) and the nearest-centre
  assignment of every pixel;
- ``cues.histograms.soft_bins``: no library equivalent, skipped.

``--pipeline-images N`` also runs the ``default`` and ``network`` recipes (the shipped model)
on N images with each helper swapped for its library equivalent (patched in this process, the
library untouched) and reports the largest change of the ucm2.

Usage::

    .venv/bin/python benchmarks/bench_helpers.py --images 4 --repeats 7
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wnetcli.images import read_rgb  # noqa: E402
from wnetcli.segmentation import crf as crf_module  # noqa: E402
from wnetcli.segmentation import grids  # noqa: E402
from wnetcli.segmentation.cues import colour, histograms, textons  # noqa: E402
from wnetcli.tuning import single_threaded_blas, tune_malloc  # noqa: E402

DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "bsds500" / "images" / "val"
SHAPE = (321, 481)
#: Lloyd iterations of the texton k-means (read before any patching sets it to 0).
LLOYD = textons._KMEANS_ITERATIONS


# --- the library equivalents, as drop-in replacements of the helpers -------------------------


def library_rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(rgb).astype(np.float32)


def library_block_mean(image: np.ndarray, factor: int, edge: bool = True) -> np.ndarray:
    """``block_reduce(..., np.mean)`` over the last two axes; ``edge``: the image edge-padded to
    a multiple of ``factor`` first (as block_mean), else block_reduce's own ``cval=0`` padding."""
    from skimage.measure import block_reduce

    if factor == 1:
        return image.astype(np.float32, copy=False)
    if edge:
        pad = [(0, 0)] * (image.ndim - 2) + [(0, -image.shape[-2] % factor), (0, -image.shape[-1] % factor)]
        image = np.pad(image, pad, mode="edge")
    blocks = (1,) * (image.ndim - 2) + (factor, factor)
    return block_reduce(image, blocks, np.mean).astype(np.float32, copy=False)


def library_upsample_linear(image: np.ndarray, shape: tuple[int, int], factor: int) -> np.ndarray:
    """``ndimage.zoom`` by ``factor`` on the pixel-centre grid, cropped to ``shape``."""
    from scipy import ndimage as ndi

    if factor == 1:
        return image
    zoomed = ndi.zoom(image, (1,) * (image.ndim - 2) + (factor, factor), order=1, mode="nearest", grid_mode=True)
    return zoomed[..., : shape[0], : shape[1]]


def corner_aligned_zoom(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``ndimage.zoom(order=1)`` straight to ``shape``, with its default corner alignment."""
    from scipy import ndimage as ndi

    factors = (1,) * (image.ndim - 2) + (shape[0] / image.shape[-2], shape[1] / image.shape[-1])
    return ndi.zoom(image, factors, order=1)


def library_kmeans(sample: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``kmeans2(minit="++")`` with the texton k-means' iterations: (k, D) centres."""
    from scipy.cluster.vq import kmeans2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "One of the clusters is empty": kept in place, as ours
        return kmeans2(sample, k, iter=LLOYD, minit="++", rng=rng, missing="warn")[0]


def library_nearest_centre(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    from scipy.cluster.vq import vq

    return vq(points, centres, check_finite=False)[0]


def library_seeds(sample: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """scipy's k-means++ seeding (private ``_kpp``, what ``kmeans2(minit="++")`` runs)."""
    from scipy.cluster.vq import _kpp

    return _kpp(sample, k, rng, np)  # its last argument is the array namespace


def own_kmeans(sample: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The texton k-means as :func:`textons.texton_map` runs it: (k, D) centres."""
    return textons._lloyd(sample, textons._kmeans_plus_plus(sample, k, rng))


# --- inputs -----------------------------------------------------------------------------------


def load_images(folder: Path, count: int) -> tuple[list[np.ndarray], str]:
    paths = sorted(folder.glob("*.jpg"))[:count] if folder.is_dir() else []
    if paths:
        # Portrait images turned a quarter: every input has the same (321, 481) shape.
        images = [read_rgb(path) for path in paths]
        images = [np.ascontiguousarray(np.rot90(rgb)) if rgb.shape[0] > rgb.shape[1] else rgb for rgb in images]
        return images, f"{len(paths)} BSDS500 val images from {folder} (portrait ones turned to landscape)"
    rng = np.random.default_rng(0)
    from scipy import ndimage as ndi

    # Smooth random images: regions and edges, not white noise (which no helper meets).
    images = [
        np.clip(ndi.gaussian_filter(rng.normal(128, 60, (*SHAPE, 3)), (3, 3, 0)) * 2 - 128, 0, 255).astype(np.uint8)
        for _ in range(count)
    ]
    return images, f"{count} random smooth {SHAPE[0]}x{SHAPE[1]} images ({folder} not found)"


def soft_maps(shape: tuple[int, int], k: int, seed: int) -> np.ndarray:
    """A smooth random soft segmentation (K, H, W) float32 (sums to 1 over K)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    logits = ndi.gaussian_filter(rng.normal(scale=40.0, size=(k, *shape)), (0, 8, 8)).astype(np.float32)
    probs = np.exp(logits - logits.max(axis=0))
    return probs / probs.sum(axis=0)


def texton_inputs(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The texton k-means' inputs as :func:`textons.texton_map` makes them: (n, D) float32
    normalised filter responses of every pixel and the (TEXTON_SAMPLE, D) float64 sample."""
    grey = np.asarray(lab[..., 0], dtype=np.float32) / np.float32(100.0)
    responses = textons._derivative_responses(grey, textons.TEXTON_SCALES).reshape(-1, grey.size)
    norm = np.sqrt(np.einsum("dn,dn->n", responses, responses))
    responses *= np.log1p(norm / np.float32(0.03)) / np.maximum(norm, np.float32(1e-12))
    rng = np.random.default_rng(0)
    sample = responses[:, rng.choice(responses.shape[1], size=textons.TEXTON_SAMPLE, replace=False)].T
    return responses.T, sample.astype(np.float64)


# --- measuring --------------------------------------------------------------------------------


def race(own: Callable, library: Callable, inputs: Sequence, repeats: int) -> tuple[float, float]:
    """Median milliseconds of ``own(*x)`` and ``library(*x)`` over ``repeats`` rounds of every
    input, the two interleaved (after one untimed call of each)."""
    own(*inputs[0])
    library(*inputs[0])
    times: dict[Callable, list[float]] = {own: [], library: []}
    for _ in range(repeats):
        for args in inputs:
            for fn in (own, library):
                began = time.perf_counter()
                fn(*args)
                times[fn].append(time.perf_counter() - began)
    return 1e3 * statistics.median(times[own]), 1e3 * statistics.median(times[library])


def entry(
    own: str, library: str, data: str, difference: float | None, own_ms: float, library_ms: float, **more
) -> dict:
    """One comparison; ``difference`` None where the outputs are not comparable element by
    element (``more`` then says how they differ, and ``identical``)."""
    compared = {} if difference is None else {"max_abs_difference": difference, "identical": difference == 0}
    return {
        "own": own,
        "library": library,
        "input": data,
        **compared,
        "own_ms": round(own_ms, 3),
        "library_ms": round(library_ms, 3),
        "library_time_over_own": round(library_ms / own_ms, 2),
        **more,
    }


def max_difference(pairs: Iterator[tuple[np.ndarray, np.ndarray]]) -> float:
    return max(float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max()) for a, b in pairs)


def bench_rgb_to_lab(images: list[np.ndarray], repeats: int) -> dict:
    per_channel = np.max(
        [np.abs(colour.rgb_to_lab(rgb) - library_rgb_to_lab(rgb).astype(np.float64)).max(axis=(0, 1))
         for rgb in images],
        axis=0,
    )
    from skimage.color import rgb2lab

    exact = max_difference((colour.rgb_to_lab(rgb), rgb2lab(rgb)) for rgb in images)
    own_ms, library_ms = race(colour.rgb_to_lab, library_rgb_to_lab, [(rgb,) for rgb in images], repeats)
    return entry(
        "wnetcli.segmentation.cues.colour.rgb_to_lab (float32)",
        "skimage.color.rgb2lab(rgb).astype(np.float32)",
        "(321, 481, 3) uint8 images; L in 0..100, a and b about -100..100",
        float(per_channel.max()), own_ms, library_ms,
        max_abs_difference_l_a_b=[round(float(v), 6) for v in per_channel],
        max_abs_difference_to_float64_rgb2lab=exact,
    )


def histogram_stacks(labs: list[np.ndarray]) -> list[np.ndarray]:
    """(12, 161, 241) float32: the L soft histograms on the 2-pixel grid, smoothed as the
    histogram gradient at sigma 4 smooths them (sigma 2 on that grid)."""
    from scipy import ndimage as ndi

    return [
        ndi.gaussian_filter(histograms.lab_histograms(lab, 12, grid=2)[0], (0, 2.0, 2.0), mode="nearest", truncate=2.5)
        for lab in labs
    ]


def bench_block_mean(cases: dict[str, tuple[list[np.ndarray], int]], repeats: int) -> dict:
    out = {}
    for name, (arrays, factor) in cases.items():
        edge = max_difference((grids.block_mean(a, factor), library_block_mean(a, factor)) for a in arrays)
        zero_pad = [(grids.block_mean(a, factor), library_block_mean(a, factor, edge=False)) for a in arrays]
        full_rows, full_cols = arrays[0].shape[-2] // factor, arrays[0].shape[-1] // factor
        interior = max_difference((a[..., :full_rows, :full_cols], b[..., :full_rows, :full_cols]) for a, b in zero_pad)
        overhang = max_difference(zero_pad)
        own_ms, library_ms = race(grids.block_mean, library_block_mean, [(a, factor) for a in arrays], repeats)
        _, zero_ms = race(
            grids.block_mean, lambda a, f: library_block_mean(a, f, edge=False), [(a, factor) for a in arrays], repeats
        )
        out[name] = entry(
            "wnetcli.segmentation.grids.block_mean",
            "skimage.measure.block_reduce(np.pad(image, mode='edge'), (1, f, f), np.mean)",
            f"{arrays[0].shape} {arrays[0].dtype}, factor {factor}",
            edge, own_ms, library_ms,
            without_edge_padding={
                "library": "skimage.measure.block_reduce(image, (1, f, f), np.mean) (cval=0 padding)",
                "max_abs_difference_whole_blocks": interior,
                "max_abs_difference_overhanging_blocks": overhang,
                "library_ms": round(zero_ms, 3),
                "library_time_over_own": round(zero_ms / own_ms, 2),
            },
        )
    return out


def bench_upsample_linear(cases: dict[str, tuple[list[np.ndarray], int]], repeats: int) -> dict:
    out = {}
    for name, (arrays, factor) in cases.items():
        difference = max_difference(
            (grids.upsample_linear(a, SHAPE, factor), library_upsample_linear(a, SHAPE, factor)) for a in arrays
        )
        corner = max_difference(
            (grids.upsample_linear(a, SHAPE, factor), corner_aligned_zoom(a, SHAPE)) for a in arrays
        )
        own_ms, library_ms = race(
            grids.upsample_linear, library_upsample_linear, [(a, SHAPE, factor) for a in arrays], repeats
        )
        out[name] = entry(
            "wnetcli.segmentation.grids.upsample_linear",
            "scipy.ndimage.zoom(image, (1, f, f), order=1, mode='nearest', grid_mode=True)[..., :H, :W]",
            f"{arrays[0].shape} {arrays[0].dtype} -> {SHAPE}, factor {factor}; values in [0, 1]",
            difference, own_ms, library_ms,
            corner_aligned_zoom={
                "library": "scipy.ndimage.zoom(image, (1, H / h, W / w), order=1) (grid_mode=False)",
                "max_abs_difference": corner,
            },
        )
    return out


def matched_disagreement(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Share of points whose label differs once the clusters of ``b`` are matched one to one
    to those of ``a`` (the matching that agrees on most points)."""
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (a, b), 1)
    rows, cols = linear_sum_assignment(-counts)
    return 1.0 - counts[rows, cols].sum() / len(a)


def inertia(points: np.ndarray, centres: np.ndarray) -> float:
    """Mean squared distance of ``points`` to their nearest centre."""
    labels = textons._nearest_centre(points, centres)
    return float(((points - centres[labels]) ** 2).sum(axis=1).mean())


def bench_kmeans(labs: list[np.ndarray], repeats: int) -> dict:
    k = 32
    inputs = [texton_inputs(lab) for lab in labs]
    out = {}

    # The whole k-means, each with a generator seeded alike: the centres, their quality and the
    # texton maps they give (should the draws differ, the centres would too).
    own_inertia, library_inertia, disagreement, centres_apart = [], [], [], []
    for points, sample in inputs:
        ours = own_kmeans(sample, k, np.random.default_rng(0))
        theirs = library_kmeans(sample, k, np.random.default_rng(0))
        centres_apart.append(float(np.abs(ours - theirs).max()))
        own_inertia.append(inertia(sample, ours))
        library_inertia.append(inertia(sample, theirs))
        disagreement.append(matched_disagreement(
            textons._nearest_centre(points, ours.astype(np.float32)),
            textons._nearest_centre(points, theirs.astype(np.float32)), k,
        ))
    own_ms, library_ms = race(
        lambda s: own_kmeans(s, k, np.random.default_rng(0)),
        lambda s: library_kmeans(s, k, np.random.default_rng(0)),
        [(sample,) for _, sample in inputs], repeats,
    )
    out["kmeans"] = entry(
        "textons._kmeans_plus_plus, then textons._lloyd (kmeans2 from that start)",
        "scipy.cluster.vq.kmeans2(sample, 32, iter=8, minit='++', rng=rng)",
        f"{inputs[0][1].shape} float64 sample of the texton filter responses, k = {k}",
        max(centres_apart), own_ms, library_ms,
        own_inertia_mean=round(float(np.mean(own_inertia)), 5),
        library_inertia_mean=round(float(np.mean(library_inertia)), 5),
        library_inertia_over_own=[round(b / a, 3) for a, b in zip(own_inertia, library_inertia, strict=True)],
        pixels_with_another_texton=[round(d, 4) for d in disagreement],
    )

    # Seeding alone: scipy's is private (kmeans2's minit="++").
    own_ms, library_ms = race(
        lambda s: textons._kmeans_plus_plus(s, k, np.random.default_rng(0)),
        lambda s: library_seeds(s, k, np.random.default_rng(0)),
        [(sample,) for _, sample in inputs], repeats,
    )
    difference = max_difference(
        (textons._kmeans_plus_plus(s, k, np.random.default_rng(0)), library_seeds(s, k, np.random.default_rng(0)))
        for _, s in inputs
    )
    out["kmeans_plus_plus"] = entry(
        "textons._kmeans_plus_plus", "scipy.cluster.vq._kpp(sample, k, rng, np) (private; kmeans2(minit='++'))",
        f"{inputs[0][1].shape} float64, k = {k}, generators seeded alike", difference, own_ms, library_ms,
    )

    # Every pixel's nearest centre, as texton_map assigns them (float32).
    centres = [own_kmeans(sample, k, np.random.default_rng(0)).astype(np.float32) for _, sample in inputs]
    assign_inputs = [(points, c) for (points, _), c in zip(inputs, centres, strict=True)]
    differing = [
        float(np.mean(textons._nearest_centre(p, c) != library_nearest_centre(p, c))) for p, c in assign_inputs
    ]
    own_ms, library_ms = race(textons._nearest_centre, library_nearest_centre, assign_inputs, repeats)
    out["nearest_centre"] = entry(
        "textons._nearest_centre", "scipy.cluster.vq.vq(points, centres)[0]",
        f"{assign_inputs[0][0].shape} float32 filter responses (a transposed view, as texton_map passes "
        f"them), {k} float32 centres",
        None, own_ms, library_ms,
        identical=not any(differing),
        share_of_pixels_with_another_centre=differing,
    )
    return out


# --- the pipeline with a helper swapped -------------------------------------------------------


@contextlib.contextmanager
def swapped(helper: str) -> Iterator[None]:
    """The library equivalent of ``helper`` patched in where the pipeline looks it up."""
    patches = {
        "rgb_to_lab": [(colour, "rgb_to_lab", library_rgb_to_lab)],
        "block_mean": [(grids, "block_mean", library_block_mean), (crf_module, "block_mean", library_block_mean)],
        "upsample_linear": [
            (grids, "upsample_linear", library_upsample_linear),
            (crf_module, "upsample_linear", library_upsample_linear),
        ],
        "kmeans": [
            (textons, "_kmeans_plus_plus", library_seeds),
            (textons, "_nearest_centre", library_nearest_centre),
        ],
    }[helper]
    with contextlib.ExitStack() as stack:
        for module, name, value in patches:
            stack.enter_context(mock.patch.object(module, name, value))
        yield


def pipeline_changes(images: list[np.ndarray], helpers: Sequence[str]) -> dict:
    """Per helper and recipe, the largest change of the ucm2 (and the share of its entries
    that change by more than 1e-6) when the helper is swapped."""
    from wnetcli.segmentation import RECIPES, Segmenter, SegmentOptions

    segmenters = {
        name: Segmenter(None, SegmentOptions(recipe=RECIPES[name], device="cpu", threads=1))
        for name in ("default", "network")
    }
    maps = {name: seg.network_maps(images)[0] for name, seg in segmenters.items()}
    base = {name: [seg.finish(rgb, m).ucm2 for rgb, m in zip(images, maps[name], strict=True)]
            for name, seg in segmenters.items()}
    out: dict = {}
    for helper in helpers:
        out[helper] = {}
        with swapped(helper):
            for name, seg in segmenters.items():
                ucms = [seg.finish(rgb, m).ucm2 for rgb, m in zip(images, maps[name], strict=True)]
                changes = [np.abs(a - b) for a, b in zip(base[name], ucms, strict=True)]
                out[helper][name] = {
                    "max_abs_difference": float(max(c.max() for c in changes)),
                    "share_over_1e-6": round(float(np.mean([np.mean(c > 1e-6) for c in changes])), 5),
                }
        print(f"pipeline with {helper} swapped: {json.dumps(out[helper])}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-dir", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--images", type=int, default=4, help="images (inputs of every comparison)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per input and helper")
    parser.add_argument(
        "--pipeline-images", type=int, default=2,
        help="images to run the default and network recipes on with each helper swapped (0: none)",
    )
    args = parser.parse_args()
    tune_malloc()

    images, source = load_images(args.images_dir, args.images)
    labs = [colour.rgb_to_lab(rgb) for rgb in images]
    stacks = histogram_stacks(labs)
    probs = [soft_maps(rgb.shape[:2], 20, seed) for seed, rgb in enumerate(images)]
    full_histograms = [histograms.lab_histograms(lab, 12, grid=2).reshape(36, *stack.shape[1:])
                       for lab, stack in zip(labs, stacks, strict=True)]
    gradients = [histograms.histogram_gradient(s, 2.0) for s in stacks]
    report: dict = {
        "machine": {
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_average_1_5_15min_at_start": os.getloadavg(),
            "versions": _versions(),
        },
        "inputs": source,
        "repeats": args.repeats,
        "statistic": "median milliseconds per call over every (repeat, input), own and library interleaved",
        "helpers": {},
    }
    helpers = report["helpers"]
    with single_threaded_blas():
        helpers["rgb_to_lab"] = bench_rgb_to_lab(images, args.repeats)
        print("rgb_to_lab done", file=sys.stderr, flush=True)
        helpers["block_mean"] = bench_block_mean({
            "soft maps, as the CRF (downsample 4)": (probs, 4),
            "soft maps on a recipe grid of 2": (probs, 2),
            "histograms, as the histogram gradient at sigma 8": (full_histograms, 2),
        }, args.repeats)
        print("block_mean done", file=sys.stderr, flush=True)
        helpers["upsample_linear"] = bench_upsample_linear({
            "CRF messages (K = 20), factor 4": ([grids.block_mean(p, 4) for p in probs], 4),
            "histogram gradient at sigma 4, factor 2": (gradients, 2),
        }, args.repeats)
        print("upsample_linear done", file=sys.stderr, flush=True)
        helpers["texton_kmeans"] = bench_kmeans(labs, args.repeats)
        print("texton k-means done", file=sys.stderr, flush=True)
        helpers["soft_bins"] = {"own": "wnetcli.segmentation.cues.histograms.soft_bins", "library": None,
                                "skipped": "no library equivalent"}
        if args.pipeline_images:
            report["pipeline_ucm2_change_with_the_library_helper"] = pipeline_changes(
                images[: args.pipeline_images],
                ("rgb_to_lab", "block_mean", "upsample_linear", "kmeans"),
            )
    report["machine"]["load_average_1_5_15min_at_end"] = os.getloadavg()
    report["summary"] = summary(helpers)
    print(json.dumps(report, indent=1))


def summary(helpers: dict) -> list[str]:
    """One line per comparison: the time ratio and whether the output is the same."""
    lines = []
    for helper, result in helpers.items():
        cases = {"": result} if "own" in result else {f"/{name}": case for name, case in result.items()}
        for name, case in cases.items():
            if "own_ms" not in case:
                lines.append(f"{helper}{name}: {case.get('skipped')}")
                continue
            same = "same output" if case["identical"] else f"max difference {case['max_abs_difference']:.3g}"
            lines.append(
                f"{helper}{name}: library {case['library_time_over_own']:.2f}x the own time "
                f"({case['library_ms']:.2f} / {case['own_ms']:.2f} ms), {same}"
            )
    return lines


def _versions() -> dict:
    import scipy
    import skimage

    return {"numpy": np.__version__, "scipy": scipy.__version__, "scikit-image": skimage.__version__,
            "python": platform.python_version()}


if __name__ == "__main__":
    main()
