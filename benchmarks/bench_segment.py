"""Speed of ``wnet segment``: images per second and where the time goes. Prints JSON.

Stages are timed one at a time on the same images (decode, inference, post-processing with
its CRF / boundaries / hierarchy parts, write), then the whole batch runner end to end with
and without overlap. The figures the issue asks for are the ratios
``postprocess / inference`` (target <= 1) and ``end_to_end / inference`` (target <= 1.3),
both taken within this one run. Where the recipe reads no network output (``default``,
``fast``; labels only) ``wnet segment`` does not run the network at all (``network_run``
false), so the end-to-end runs are then the post-processing alone; ``--recipe network`` (or
``--soft-maps``) makes them run it. The inference rows time the network all the same.

Usage::

    .venv/bin/python benchmarks/bench_segment.py --images 20            # CPU, BSDS val
    .venv/bin/python benchmarks/bench_segment.py --recipe network --images 20
    .venv/bin/python benchmarks/bench_segment.py --model wnet.onnx --device cuda --batch-sizes 1,8,16

Without ``--model`` it exports a randomly initialised quarter-width encoder
(``ModelConfig(base_width=16)``, K=20) with torch's TorchScript exporter: the timing of the
network does not depend on its weights, but the post-processing's may (an untrained network
gives other regions than a trained one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wnetcli.images import find_images, read_rgb  # noqa: E402
from wnetcli.model_info import ModelInfo  # noqa: E402
from wnetcli.tuning import single_threaded_blas, tune_malloc  # noqa: E402

DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "bsds500" / "images" / "val"


def export_quarter_width(path: Path, k: int) -> tuple[Path, str]:
    """Export a random quarter-width W-Net encoder to ``path`` with wnet metadata (needs torch + onnx).

    Uses the project's exporter (:func:`export.onnx_export.export_model`, with its BatchNorm
    folding) when it imports, else a plain TorchScript export; returns the path and which.
    """
    import torch

    from training.config import ModelConfig
    from training.model import WNet

    config = ModelConfig(k=k, base_width=16)
    torch.manual_seed(0)
    wnet = WNet(config).eval()
    info = ModelInfo(
        k=k, pad_multiple=config.pad_multiple, model_config=asdict(config), training_data="random init"
    )
    try:
        from export.onnx_export import ExportOptions, export_model
    except ImportError:
        pass
    else:
        export_model(wnet, path, info, ExportOptions())
        return path, "export.onnx_export.export_model"

    import onnx

    class Encoder(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, images):
            return self.net.encode_aligned(images)

    dynamic = {0: "N", 2: "H", 3: "W"}
    with torch.no_grad():
        torch.onnx.export(
            Encoder(wnet),
            (torch.rand(1, 3, 64, 64) * 255,),
            str(path),
            input_names=["image"],
            output_names=["probs"],
            dynamic_axes={"image": dynamic, "probs": dynamic},
            dynamo=False,
            opset_version=17,
        )
    model = onnx.load(str(path))
    for key, value in info.to_metadata().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path, "plain torch.onnx.export (TorchScript)"


def _per_image(seconds: list[float]) -> float:
    return statistics.median(seconds) if seconds else float("nan")


def _parse_config(text: str, default_threads: int | None) -> tuple[int, str, int | None, int | None]:
    """``"WORKERS:SPIN[:THREADS[:STREAMS]]"`` -> (workers, "spin" or "nospin", threads, streams)."""
    parts = text.split(":")
    if len(parts) not in (2, 3, 4) or parts[1] not in ("spin", "nospin"):
        raise SystemExit(f"--configs: expected WORKERS:spin|nospin[:THREADS[:STREAMS]], got {text!r}")
    threads = int(parts[2]) if len(parts) > 2 and parts[2] else default_threads
    return int(parts[0]), parts[1], threads, int(parts[3]) if len(parts) > 3 else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, help="exported .onnx (default: export a random quarter-width one)"
    )
    parser.add_argument("--images-dir", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--images", type=int, default=20, help="number of images")
    parser.add_argument("--k", type=int, default=20, help="K of the exported model when --model is not given")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-sizes", default="1,4", help="inference batch sizes to compare")
    parser.add_argument(
        "--configs",
        default="0:nospin,1:nospin,2:nospin,1:spin",
        help="end-to-end runs, comma-separated: WORKERS:SPIN[:THREADS[:STREAMS]], post-processing "
        "processes, onnxruntime thread spinning (spin/nospin), onnxruntime threads per call (default: "
        "--threads, else wnet segment's choice) and inference calls at once (default: wnet segment's "
        "choice); the inference-alone figures use --threads and one call at a time",
    )
    parser.add_argument(
        "--recipe", default=None, metavar="NAME|FILE",
        help="the post-processing recipe, as `wnet segment --recipe` (default: default)",
    )
    parser.add_argument("--fast", action="store_true", help="short for --recipe fast, as `wnet segment --fast`")
    parser.add_argument(
        "--save", default="ucm",
        help="outputs beside the label maps, comma-separated as `wnet segment --save` ('' : labels only, "
        "as `wnet segment` writes by default; the default ucm is what `wnet evaluate` reads)",
    )
    parser.add_argument(
        "--soft-maps",
        action="store_true",
        help="return the soft maps, as `wnet segment --save probs` does (the network then always runs)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="passes per configuration (the fastest counts)"
    )
    args = parser.parse_args()
    if args.fast and args.recipe not in (None, "fast"):
        parser.error("--fast is --recipe fast: give one of them")

    tune_malloc()
    from wnetcli.errors import InputError
    from wnetcli.segmentation import BatchOptions, Segmenter, SegmentOptions, segment_folder
    from wnetcli.segmentation.outputs import output_paths, write_outputs
    from wnetcli.segmentation.pipeline import folder_options
    from wnetcli.segmentation.recipe import load_recipe, recipe_to_dict

    try:
        recipe = load_recipe("fast" if args.fast else args.recipe or "default")
    except InputError as exc:
        parser.error(str(exc))

    found = find_images([args.images_dir])[: args.images]
    if not found:
        raise SystemExit(f"no images in {args.images_dir}")
    work = Path(tempfile.mkdtemp(prefix="wnet-bench-"))
    model_path, exporter = (
        (args.model, "given") if args.model else export_quarter_width(work / "q.onnx", args.k)
    )
    # As `wnet segment` runs: the recipe, and the soft maps returned only when asked for.
    run_options = {"recipe": recipe, "soft_maps": args.soft_maps}
    # Inference alone: the outputs a run that runs the network computes (the soft maps when the
    # recipe reads none).
    infer_options = {"recipe": recipe, "soft_maps": args.soft_maps or not recipe.reads_network}
    save = tuple(item for item in args.save.split(",") if item)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    decode_s, rgbs = [], []
    for source, _ in found:
        began = time.perf_counter()
        rgbs.append(read_rgb(source))
        decode_s.append(time.perf_counter() - began)

    # Inference alone, per batch size (same-size images share a batch, as in the runner).
    # The machine is shared: every configuration runs --repeats times, interleaved, and the
    # fastest pass counts (the one least disturbed by other processes).
    segmenters = {
        b: Segmenter(
            model_path,
            SegmentOptions(device=args.device, threads=args.threads, batch_size=b, **infer_options),
        )
        for b in batch_sizes
    }
    for seg in segmenters.values():
        seg.predict(rgbs)  # warm-up: allocations and kernel choice for every image size
    passes: dict[int, list[float]] = {b: [] for b in batch_sizes}
    maps = None
    for _ in range(args.repeats):
        for batch_size, seg in segmenters.items():
            began = time.perf_counter()
            out, _ = seg.predict(rgbs)
            passes[batch_size].append((time.perf_counter() - began) / len(rgbs))
            maps = maps or out
    inference = {
        str(b): {"seconds_per_image": min(v), "images_per_second": 1.0 / min(v), "all_passes": v}
        for b, v in passes.items()
    }
    # Inference alone as `wnet segment` runs it: `streams` calls of one image at once, each on
    # its share of the cores (folder_options), and no post-processing beside it.
    runner_options = folder_options(SegmentOptions(device=args.device, threads=args.threads, **infer_options))
    runner = Segmenter(model_path, runner_options)
    runner.predict(rgbs[:2])
    concurrent: list[float] = []
    with ThreadPoolExecutor(runner.streams) as pool:
        for _ in range(args.repeats):
            began = time.perf_counter()
            list(pool.map(lambda rgb: runner.predict([rgb]), rgbs))
            concurrent.append((time.perf_counter() - began) / len(rgbs))
    inference[f"1, {runner.streams} calls at once x {runner_options.threads} threads"] = {
        "seconds_per_image": min(concurrent), "images_per_second": 1.0 / min(concurrent), "all_passes": concurrent,
    }
    # The post-processing as `wnet segment` runs it (it is handed the maps only if it reads them).
    seg = Segmenter(model_path, SegmentOptions(device=args.device, threads=args.threads, **run_options))

    stages: dict[str, list[float]] = {}
    write_s = []
    for (_, relative), rgb, m in zip(found, rgbs, maps, strict=True):
        # One BLAS thread, as `wnet segment` post-processes (its workers, and workers=0 too):
        # OpenBLAS's idle threads would otherwise spin through the k-means (wnetcli.tuning).
        with single_threaded_blas():
            result = seg.finish(rgb, m if seg.runs_network else None)
        for stage, seconds in result.timings.items():
            if stage != "inference":
                stages.setdefault(stage, []).append(seconds)
        began = time.perf_counter()
        write_outputs(output_paths(work / "stages", relative, save), rgb, result)
        write_s.append(time.perf_counter() - began)
    post_total = [sum(parts) for parts in zip(*stages.values(), strict=True)]

    configs = [_parse_config(item, args.threads) for item in args.configs.split(",")]
    e2e_passes: dict[str, list[float]] = {
        f"workers={w},{spin}" + (f",threads={t}" if t != args.threads else "") + (f",streams={n}" if n else ""): []
        for w, spin, t, n in configs
    }
    # Untimed warm-up: starts the worker processes' fork server (it imports the post-processing
    # modules once per process, not per run).
    segment_folder(
        [source for source, _ in found[:2]],
        model_path,
        BatchOptions(out_dir=work / "warm-up", workers=2),
        SegmentOptions(device=args.device, threads=args.threads, **run_options),
    )
    # What a run costs before its images (the model, the worker processes), as the wall time of
    # a one-image run, the fastest of --repeats, with wnet segment's automatic settings.
    one_image = []
    for attempt in range(args.repeats):
        report = segment_folder(
            [found[0][0]], model_path, BatchOptions(out_dir=work / f"one-{attempt}", save=save),
            SegmentOptions(device=args.device, threads=args.threads, **run_options),
        )
        one_image.append(report.wall_seconds)
    for _ in range(args.repeats):
        for (workers, spin, threads, streams), seconds in zip(configs, e2e_passes.values(), strict=True):
            options = BatchOptions(out_dir=work / "e2e", save=save, overwrite=True, workers=workers)
            report = segment_folder(
                [source for source, _ in found],
                model_path,
                options,
                SegmentOptions(
                    device=args.device,
                    threads=threads,
                    streams=streams,
                    spinning=spin == "spin",
                    **run_options,
                ),
            )
            # wall time of the whole run, model loading (a fraction of a second) included
            seconds.append(report.wall_seconds / report.count("ok"))
    end_to_end = {
        name: {
            "seconds_per_image": min(v),
            "images_per_second": 1.0 / min(v),
            "all_passes": v,
        }
        for name, v in e2e_passes.items()
    }

    # The denominator of both ratios: the fastest way found to run the network alone.
    infer_1 = min(v["seconds_per_image"] for v in inference.values())
    best_e2e = min(v["seconds_per_image"] for v in end_to_end.values())
    print(
        json.dumps(
            {
                "machine": {
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "load_average_1_5_15min_at_end": os.getloadavg(),
                    "device": runner.device,
                    "threads": args.threads,
                },
                "model": {
                    "path": str(model_path),
                    "exporter": exporter,
                    "k": runner.info.k,
                    "config": runner.info.model_config,
                },
                "postprocess": {
                    "recipe": recipe_to_dict(recipe), "soft_maps": args.soft_maps, "save": list(save),
                    # False: the recipe reads no network output, so the end-to-end runs skip the
                    # network (Segmenter.runs_network); the inference rows time it all the same.
                    "network_run": seg.runs_network,
                },
                "images": {"count": len(rgbs), "sizes": sorted({f"{r.shape[1]}x{r.shape[0]}" for r in rgbs})},
                "median_seconds_per_image": {
                    "decode": _per_image(decode_s),
                    **{f"postprocess.{k}": _per_image(v) for k, v in stages.items()},
                    "postprocess": _per_image(post_total),
                    f"write({'+'.join(('labels', *save))})": _per_image(write_s),
                },
                "inference_by_batch_size": inference,
                "end_to_end": end_to_end,
                "one_image_run_seconds": {"fastest": min(one_image), "all_passes": one_image},
                "ratios": {
                    "postprocess_over_inference": float(np.mean(post_total)) / infer_1,
                    "end_to_end_over_inference": best_e2e / infer_1,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
