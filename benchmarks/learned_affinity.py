"""Experiment (issue 22): a learned region affinity, trained on the region pairs the teacher is sure of.

The teacher is the default recipe's hierarchy. On each training image (BSDS500 train, the
images *not* scored, and ``../shared/data/photos``, shrunk to at most 481 pixels; never val),
two adjacent superpixels of the default's hierarchy are a sure pair when the teacher keeps them
together at a low level (``--same-below``, same region) or apart at a high level
(``--apart-above``, different regions); the pairs between are left out. A small network maps
each pixel's features to a C-way soft assignment (its embedding); a region's embedding is the
mean over its pixels, and half the L1 distance of two regions' embeddings, in [0, 1], is
trained (class-balanced binary cross-entropy) to be 1 for pairs kept apart and 0 for pairs kept
together. The pixel features: CIELAB, the local energy of the texton filter bank (Gaussian
derivatives of L at three scales, averaged over a window), and the boundaries model's soft maps
and boundary map.

Then the embedding is one more region-likeness cue of the merge (the same half-L1 distance the
merge reads for the colour and texton histograms), and the recipe with it is scored on the
*other* BSDS500 train images against the default and against the ``boundaries`` recipe (paired
bootstrap, ``wnet compare``)::

    python benchmarks/learned_affinity.py pairs --out runs/affinity
    python benchmarks/learned_affinity.py fit --out runs/affinity
    python benchmarks/learned_affinity.py score --out runs/affinity --weights 0.5 1.0

``pairs`` and ``score`` need the ``boundaries`` model's maps (computed once, cached beside
the pairs); ``fit`` needs the ``train`` extra. Prints JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from tune_pipeline import CachedPipeline, cache_network_maps  # noqa: E402

from wnetcli.evaluation import EvaluationOptions, RunCounts, compare_runs, evaluate, find_split  # noqa: E402
from wnetcli.images import read_rgb  # noqa: E402
from wnetcli.segmentation.cues import Cue, ImageContext, NetworkMaps  # noqa: E402
from wnetcli.segmentation.cues.textons import _derivative_responses  # noqa: E402
from wnetcli.segmentation.grids import resize_rgb  # noqa: E402
from wnetcli.segmentation.hierarchy import _pixel_borders, build_hierarchy  # noqa: E402
from wnetcli.segmentation.levels import cut_into_regions  # noqa: E402
from wnetcli.segmentation.postprocess import boundary_maps, likeness_descriptors  # noqa: E402
from wnetcli.segmentation.recipe import RECIPES, Recipe, Use  # noqa: E402

MODEL = ROOT / "wnetcli" / "models" / "boundaries.onnx"
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
BSDS = ROOT.parent / "shared" / "data" / "bsds500"
#: Scales (pixels) of the filter bank and of the window its energy is averaged over.
FILTER_SCALES = (1.0, 2.0, 4.0)
ENERGY_SIGMA = 4.0
#: Pixels sampled per superpixel for the region means while fitting.
SAMPLES_PER_REGION = 32


def pixel_features(rgb: np.ndarray, maps: NetworkMaps) -> np.ndarray:
    """(D, H, W) float32 per-pixel features: Lab (scaled to about [-1, 1]), the filter bank's
    local energy, the soft maps (K) and the boundary map."""
    from scipy import ndimage as ndi

    from wnetcli.segmentation.cues.colour import rgb_to_lab

    lab = rgb_to_lab(rgb)
    colour = np.stack([lab[..., 0] / 50.0 - 1.0, lab[..., 1] / 60.0, lab[..., 2] / 60.0])
    responses = _derivative_responses(lab[..., 0] / np.float32(100.0), FILTER_SCALES)
    energy = np.stack([ndi.gaussian_filter(np.abs(r), ENERGY_SIGMA) for r in responses]) * 10.0
    return np.concatenate(
        [colour, energy, maps.soft_maps, maps.boundaries[None]], axis=0
    ).astype(np.float32)


def teacher_pairs(rgb: np.ndarray, same_below: float, apart_above: float):
    """The default hierarchy's superpixels (H, W) int32 labels 1..n and its sure pairs: (P, 2)
    0-based superpixel ids and (P,) labels, 1 = kept apart above ``apart_above``, 0 = together
    below ``same_below`` (levels on the level scale)."""
    recipe = RECIPES["default"]
    context = ImageContext(rgb, 1, None, recipe.crf)
    strength, flood = boundary_maps(recipe.cues, context)
    hierarchy = build_hierarchy(
        strength, recipe.superpixels, recipe.merge, likeness_descriptors(recipe.cues, context), None, flood
    )
    _, levels = recipe.levels.rescale(hierarchy.ucm2, hierarchy.levels)
    n = hierarchy.n_superpixels
    ids = hierarchy.superpixels.ravel() - 1

    def regions_below(level: float) -> np.ndarray:
        # The region of each superpixel after the merges below `level` (levels are non-decreasing).
        labels = cut_into_regions(hierarchy.superpixels, hierarchy.merges, n - int(np.searchsorted(levels, level)))
        region = np.empty(n, dtype=np.int64)
        region[ids] = labels.ravel()
        return region

    low, high = regions_below(same_below), regions_below(apart_above)
    lo, hi, *_ = _pixel_borders(hierarchy.superpixels, strength)
    pairs = np.stack([lo, hi], axis=1)
    together = low[lo] == low[hi]
    apart = high[lo] != high[hi]
    keep = together | apart
    return hierarchy.superpixels, pairs[keep], apart[keep].astype(np.uint8)


def training_images(args) -> list:
    """BSDS500 train's odd-numbered images (the scored ones are the even) and the photos."""
    bsds = [SimpleNamespace(id=f"bsds-{i.id}", image=i.image) for i in find_split(args.bsds, "train")[1::2]]
    photos = [SimpleNamespace(id=f"photo-{p.stem}", image=p) for p in sorted(PHOTOS.glob("*.jpg"))]
    return bsds + photos[: args.photos]


def read_small(path: Path, longest: int = 481) -> np.ndarray:
    rgb = read_rgb(path)
    scale = longest / max(rgb.shape[:2])
    if scale < 1:
        rgb = resize_rgb(rgb, (round(rgb.shape[0] * scale), round(rgb.shape[1] * scale)))
    return rgb


def command_pairs(args) -> None:
    """Sure pairs and sampled pixel features of every training image, one .npz each."""
    from wnetcli.segmentation import Segmenter, SegmentOptions
    from wnetcli.segmentation.grids import resize_maps

    out = args.out / "pairs"
    out.mkdir(parents=True, exist_ok=True)
    segmenter = Segmenter(MODEL, SegmentOptions(recipe=RECIPES["boundaries"], soft_maps=True, threads=1))
    rng = np.random.default_rng(0)
    images = training_images(args)
    began = time.perf_counter()
    for n, image in enumerate(images):
        target = out / f"{image.id}.npz"
        if target.exists():
            continue
        rgb = read_small(Path(image.image))
        maps = segmenter.predict([rgb])[0][0]
        shape = rgb.shape[:2]
        maps = NetworkMaps(resize_maps(maps.soft_maps, shape), resize_maps(maps.boundaries[None], shape)[0])
        superpixels, pairs, apart = teacher_pairs(rgb, args.same_below, args.apart_above)
        features = pixel_features(rgb, maps)
        features = features.reshape(features.shape[0], -1)
        # SAMPLES_PER_REGION pixels of each superpixel (with repeats for small ones).
        flat = superpixels.ravel() - 1
        order = np.argsort(flat, kind="stable")
        starts = np.searchsorted(flat[order], np.arange(superpixels.max() + 1))
        sizes = np.diff(starts)
        picks = starts[:-1, None] + (rng.random((sizes.size, SAMPLES_PER_REGION)) * sizes[:, None]).astype(np.int64)
        samples = features[:, order[picks]].transpose(1, 2, 0)  # (n, S, D)
        tmp = target.with_suffix(".tmp.npz")
        np.savez(tmp, samples=samples.astype(np.float16), pairs=pairs.astype(np.int32), apart=apart)
        tmp.replace(target)
        elapsed = time.perf_counter() - began
        print(f"\rpairs {n + 1}/{len(images)} ({elapsed:.0f} s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def command_fit(args) -> None:
    """Fit the embedding on the sure pairs; writes ``<out>/embedding.npz`` (the MLP's weights)."""
    import torch

    torch.manual_seed(0)
    files = sorted((args.out / "pairs").glob("*.npz"))
    data = [np.load(f) for f in files]
    samples = [torch.from_numpy(d["samples"].astype(np.float32)) for d in data]
    pairs = [torch.from_numpy(d["pairs"].astype(np.int64)) for d in data]
    apart = [torch.from_numpy(d["apart"].astype(np.float32)) for d in data]
    dim = samples[0].shape[-1]
    mean = torch.cat([s.reshape(-1, dim) for s in samples]).mean(0)
    std = torch.cat([s.reshape(-1, dim) for s in samples]).std(0) + 1e-3
    net = torch.nn.Sequential(
        torch.nn.Linear(dim, args.hidden), torch.nn.ReLU(), torch.nn.Linear(args.hidden, args.channels)
    )
    optimiser = torch.optim.Adam(net.parameters(), lr=args.lr)
    share = float(torch.cat(apart).mean())
    held = max(1, len(files) // 10)  # the last tenth of the images: a held-out check of the fit

    def loss_of(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = torch.softmax(net((samples[i] - mean) / std), dim=-1).mean(1)  # (n, C)
        distance = 0.5 * (embedding[pairs[i][:, 0]] - embedding[pairs[i][:, 1]]).abs().sum(-1)
        distance = distance.clamp(1e-4, 1 - 1e-4)
        y = apart[i]
        weights = torch.where(y > 0, 0.5 / share, 0.5 / (1 - share))
        loss = torch.nn.functional.binary_cross_entropy(distance, y, weight=weights)
        accuracy = ((distance > 0.5).float() == y).float().mean()
        return loss, accuracy

    began = time.perf_counter()
    history = []
    for epoch in range(args.epochs):
        order = torch.randperm(len(files) - held).tolist()
        for i in order:
            optimiser.zero_grad()
            loss_of(i)[0].backward()
            optimiser.step()
        with torch.no_grad():
            scores = [loss_of(i) for i in range(len(files) - held, len(files))]
        history.append({
            "epoch": epoch + 1, "held_out_loss": round(float(np.mean([s[0] for s in scores])), 4),
            "held_out_accuracy": round(float(np.mean([s[1] for s in scores])), 4),
        })
        print(json.dumps(history[-1]), file=sys.stderr, flush=True)
    weights = {name: p.detach().numpy() for name, p in net.state_dict().items()}
    np.savez(args.out / "embedding.npz", mean=mean.numpy(), std=std.numpy(), **{k.replace(".", "_"): v for k, v in
                                                                                    weights.items()})
    print(json.dumps({
        "images": len(files), "pairs": int(sum(len(p) for p in pairs)), "apart_share": round(share, 3),
        "seconds": round(time.perf_counter() - began, 1), "history": history,
    }, indent=1))


@dataclass(frozen=True)
class LearnedAffinity(Cue):
    """The embedding as a region-likeness cue (``weights``: the ``fit`` output's path)."""

    name = "learned_affinity"
    gives = frozenset({"likeness"})

    weights: str = ""

    @property
    def reads(self) -> frozenset[str]:
        from wnetcli.segmentation.cues.base import BOUNDARIES, IMAGE, SOFT_MAPS

        return frozenset({IMAGE, SOFT_MAPS, BOUNDARIES})

    def likeness(self, context: ImageContext, weight: float) -> list:
        features = pixel_features(context.rgb, context.network)
        return [("dense", weight, embed(features, _load_weights(self.weights)))]


@functools.lru_cache(maxsize=4)
def _load_weights(path: str) -> dict[str, np.ndarray]:
    """The ``fit`` output at ``path``, read once per process (a cue is called once per image)."""
    with np.load(path) as stored:
        return dict(stored)


def embed(features: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """(C, H, W) float32 soft assignments (summing to 1 over C) of (D, H, W) pixel features,
    by the MLP that ``fit`` writes (``mean``, ``std`` and the two layers' weights)."""
    d = features.shape[0]
    x = (features.reshape(d, -1).T - weights["mean"]) / weights["std"]
    hidden = np.maximum(x @ weights["0_weight"].T + weights["0_bias"], 0.0)
    logits = hidden @ weights["2_weight"].T + weights["2_bias"]
    logits -= logits.max(axis=1, keepdims=True)
    embedding = np.exp(logits)
    embedding /= embedding.sum(axis=1, keepdims=True)
    return embedding.T.reshape(-1, *features.shape[1:]).astype(np.float32)


def command_score(args) -> None:
    """Score the recipes with the learned affinity on BSDS500 train's even-numbered images."""
    images = find_split(args.bsds, "train")[::2][: args.limit]
    maps_dir = cache_network_maps(MODEL, images, args.out / "maps", threads=None)
    options = EvaluationOptions(thresholds=99, jobs=args.jobs)
    cue = LearnedAffinity(weights=str(args.out / "embedding.npz"))
    default, boundaries = RECIPES["default"], RECIPES["boundaries"]
    # name -> (recipe, the variant it is compared with, or None)
    variants: dict[str, tuple[Recipe, str | None]] = {"default": (default, None), "boundaries": (boundaries, None)}
    for weight in args.weights:
        variants[f"default+affinity{weight}"] = (
            Recipe(cues=(*default.cues, Use(cue, likeness=weight))), "default"
        )
        variants[f"boundaries+affinity{weight}"] = (
            Recipe(cues=(*boundaries.cues, Use(cue, likeness=weight)), network=boundaries.network), "boundaries"
        )
    counts, report = {}, {"images": len(images), "variants": {}}
    for name, (recipe, base) in variants.items():
        result = evaluate(images, CachedPipeline(maps_dir, recipe, name=name), options)
        counts[name] = RunCounts.from_result(result)
        entry = {"seconds": round(result.seconds, 1), "f_ods": round(result.boundary.ods_f, 4),
                 "sc_ods": round(result.regions.covering_ods, 4), "vi_ods": round(result.regions.vi_ods, 4)}
        if base is not None:
            comparison = compare_runs(counts[base], counts[name])
            entry[f"minus_{base}"] = {
                m.name: [round(v, 4) for v in (m.difference, m.low, m.high)] for m in comparison.measures
            }
        report["variants"][name] = entry
        print(name, json.dumps(entry), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("pairs", "fit", "score"))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "affinity")
    parser.add_argument("--bsds", type=Path, default=BSDS)
    parser.add_argument("--photos", type=int, default=191, help="how many of the photos to train on")
    parser.add_argument("--same-below", type=float, default=0.3)
    parser.add_argument("--apart-above", type=float, default=0.7)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    {"pairs": command_pairs, "fit": command_fit, "score": command_score}[args.command](args)


if __name__ == "__main__":
    main()
