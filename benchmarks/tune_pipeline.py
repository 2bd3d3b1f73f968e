"""Score post-processing variants on BSDS500 with the real benchmark; prints one JSON object.

The W-Net's soft segmentations are computed once per model and cached (``--cache``), so that
each variant of the post-processing costs only the post-processing and the benchmark. A variant
is a name and ``PostprocessOptions`` overrides::

    .venv/bin/python benchmarks/tune_pipeline.py --split train --limit 40 --model m.onnx \\
        --variant "default:" --variant "no_crf:crf=false" --variant "colour_only:wnet_weight=0,crf=false"

Values are parsed as JSON where they can be (``true``, ``0.5``, ``[1,2]``), else kept as text.
``--no-boundary`` runs the region benchmark only (covering, PRI, VI), which is several times
faster and enough to compare hierarchies while tuning. Tune on ``train`` (its annotations are
never used for anything else) and report on ``val``.

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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wnetcli.evaluation import EvaluationOptions, RunCounts, compare_runs, evaluate, find_split  # noqa: E402
from wnetcli.evaluation.dataset import BsdsImage  # noqa: E402
from wnetcli.evaluation.inputs import Prediction  # noqa: E402
from wnetcli.images import read_rgb  # noqa: E402
from wnetcli.segmentation.postprocess import PostprocessOptions, postprocess  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict]:
    """``"name:key=value,key=value"`` -> (name, overrides)."""
    name, _, body = text.partition(":")
    overrides = {}
    for item in filter(None, _split_items(body)):
        key, _, value = item.partition("=")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    return name, overrides


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


def cache_probs(
    model: Path, images: list[BsdsImage], cache: Path, threads: int | None, sizes: tuple[int, ...] = (),
    tta: bool = False,
) -> Path:
    """Write the model's (K, H, W) float16 probabilities of every image to ``cache/<sha>/<id>.npy``.

    ``sizes``: the network runs at each of these longer-side sizes (0: the model's own scale,
    as ``wnet segment`` runs it) and the probabilities, each enlarged to the image's size, are
    averaged; empty is ``(0,)``. ``tta``: the network also runs on the mirrored image
    (``SegmentOptions.tta``, as ``wnet segment --tta``).
    """
    from wnetcli.segmentation import Segmenter, SegmentOptions
    from wnetcli.segmentation.pipeline import resize_probs

    sizes = tuple(sizes) or (0,)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()[:16]
    folder = cache / (digest if sizes == (0,) else f"{digest}-sizes-{'-'.join(map(str, sizes))}")
    folder = folder.with_name(folder.name + "-tta") if tta else folder
    folder.mkdir(parents=True, exist_ok=True)
    missing = [image for image in images if not (folder / f"{image.id}.npy").exists()]
    if missing:
        segmenters = [
            Segmenter(model, SegmentOptions(device="cpu", threads=threads, max_size=size or 2048, tta=tta))
            for size in sizes
        ]
        for image in missing:
            rgb = read_rgb(image.image)
            # As the segmenter's post-processing sees them: at the image's size.
            probs = sum(resize_probs(segmenter.predict([rgb])[0][0], rgb.shape[:2]) for segmenter in segmenters)
            np.save(folder / f"{image.id}.npy", (probs / len(sizes)).astype(np.float16))
    return folder


@dataclass
class CachedPipeline:
    """The post-processing on cached soft segmentations, as an evaluation method (picklable)."""

    probs_dir: Path | None
    options: PostprocessOptions
    name: str = "pipeline"

    def __call__(self, image: BsdsImage) -> Prediction:
        rgb = read_rgb(image.image)
        probs = None
        if self.probs_dir is not None:
            probs = np.load(self.probs_dir / f"{image.id}.npy").astype(np.float32)
        result = postprocess(rgb, probs, self.options)
        return Prediction("ucm2", result.ucm2.astype(np.float64))


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
    parser.add_argument("--model", type=Path, default=None, help="exported W-Net (.onnx); none: colour only")
    parser.add_argument("--variant", action="append", default=[], help="name:key=value,... (repeatable)")
    parser.add_argument("--thresholds", type=int, default=99)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads while caching")
    parser.add_argument(
        "--sizes", default="", help="longer-side sizes to run the network at, comma-separated, probabilities "
        "averaged (0: the model's own scale, the default)",
    )
    parser.add_argument(
        "--tta", action="store_true", help="test-time augmentation: average in the mirrored image's soft maps"
    )
    parser.add_argument("--no-boundary", action="store_true", help="region benchmark only")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/wnet-probs"))
    args = parser.parse_args()

    images = find_split(args.bsds, args.split)[:: args.stride][: args.limit]
    probs_dir = None
    if args.model is not None:
        began = time.perf_counter()
        sizes = tuple(int(size) for size in args.sizes.split(",") if size)
        probs_dir = cache_probs(args.model, images, args.cache / args.split, args.threads, sizes, args.tta)
        print(f"probabilities cached in {time.perf_counter() - began:.1f} s: {probs_dir}", file=sys.stderr)
    options = EvaluationOptions(thresholds=args.thresholds, jobs=args.jobs, boundary=not args.no_boundary)
    report = {"split": args.split, "images": len(images), "model": str(args.model), "variants": {}}
    first = None
    for text in args.variant or ["default:"]:
        name, overrides = parse_variant(text)
        defaults = PostprocessOptions()
        for key, value in overrides.items():
            # A value that is not JSON stays a string: "crf=False" would be a truthy "False".
            if hasattr(defaults, key) and isinstance(value, str) and not isinstance(getattr(defaults, key), str):
                parser.error(f"variant {name}: {key}={value!r} is not JSON (write true/false, numbers, lists)")
        post = replace(defaults, **overrides)
        method = CachedPipeline(probs_dir, post, name=name)
        result = evaluate(images, method, options)
        report["variants"][name] = {"overrides": overrides, **summary(result)}
        counts = RunCounts.from_result(result)
        if first is None:
            first = counts
        else:
            report["variants"][name]["against_first"] = against(first, counts)
        print(name, json.dumps(report["variants"][name]), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
