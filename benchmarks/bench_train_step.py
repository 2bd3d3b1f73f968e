"""Benchmark of one W-Net training step (Algorithm 1: N-cut encoder update + reconstruction update).

Times the trainer's own step (:func:`training.trainer.algorithm1_step`, with the optimizers of
:func:`training.trainer.make_optimizers`) on random images, for

- the ``small`` preset (quarter width, 128 x 128, batch 4), and
- the paper's network (full width, K=20, 224 x 224) at a reduced batch (``--paper-batch``, 2 by
  default: batch 10 on a 2-core CPU takes minutes per step),

each with and without :func:`wnetcli.tuning.tune_malloc`. Every variant runs in a fresh
subprocess, because ``mallopt`` changes the whole process for good. Times are medians over
``--repeats`` steps after one warm-up step; ``peak_rss_mb`` is the process's maximum resident
set size at the end (CPU) or ``torch.cuda.max_memory_allocated`` (CUDA). Data loading is not
included. Ratios (``speedup_from_tune_malloc``) compare variants of this one run.

With ``--compare-optimizers DATA`` it instead trains the ``small`` preset for ``--steps`` steps
with each optimizer (its preset learning rate for Adam, the paper's 0.003 with momentum 0.9 for
SGD) on the images in DATA, through :func:`training.trainer.train`, and reports the mean of each
loss over the last quarter of the steps: which optimizer learns faster in a short CPU run.

With ``--config FILE`` it times only that training config (over the ``small`` preset, at its
own batch size), with the allocator tuned: ``benchmarks/gpu_session.sh`` fits a run's schedule
to the session's time with it.

With ``--boundary`` every timed step also makes the boundary update (a boundary head,
``boundary_weight`` 1, random soft targets; the teacher's targets are not computed), and
``--boundary-only`` times that update alone (``ncut_weight = recon_weight = 0``: boundary-only
fine-tuning). Both report ``step_s`` like the others, so the cost of the third update is the
difference to a run without the flag.

Usage::

    .venv/bin/python benchmarks/bench_train_step.py                  # CPU, 2 threads
    .venv/bin/python benchmarks/bench_train_step.py --device cuda    # bf16 autocast, channels_last
    .venv/bin/python benchmarks/bench_train_step.py --compare-optimizers ../shared/data/photos --steps 80
    .venv/bin/python benchmarks/bench_train_step.py --small-only --boundary        # with the boundary update
    python3 benchmarks/bench_train_step.py --device cuda --config wnetcli/models/gpu-train.toml
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing


def run_variant(
    preset: str, batch: int | None, device: str, threads: int, repeats: int, config_file: str | None = None,
    boundary: str = "",
) -> dict:
    """Time training steps of ``preset`` (and ``config_file`` over it) at ``batch`` (None: the
    config's) in this process (call in a fresh subprocess). ``boundary``: ``""`` (Algorithm 1
    only), ``"with"`` (plus the boundary update) or ``"only"`` (the boundary update alone)."""
    import torch

    from training.config import resolve_train_config
    from training.distributed import DistributedContext
    from training.model import WNet, count_parameters
    from training.trainer import Algorithm1, algorithm1_step, make_boundary_optimizer, make_optimizers
    from wnetcli.tuning import tune_malloc

    tuned = tune_malloc()  # returns False under WNET_NO_MALLOC_TUNING=1
    torch.set_num_threads(threads)
    overrides = {"batch_size": batch}
    if boundary:
        overrides.update(boundaries_from="default", boundary_weight=1.0)
    if boundary == "only":
        overrides.update(ncut_weight=0.0, recon_weight=0.0)
    config = resolve_train_config(preset, config_file, overrides)
    torch.manual_seed(0)
    cuda = device == "cuda"
    memory_format = torch.channels_last if cuda and config.channels_last else torch.contiguous_format
    model = WNet(config.model).to(device, memory_format=memory_format)
    encoder_optimizer, full_optimizer = make_optimizers(model, config)
    step_module = Algorithm1(model, config, amp=cuda and config.amp)
    context = DistributedContext(world_size=1, rank=0, local_rank=0, device=torch.device(device))
    shape = (config.batch_size, 3, config.size, config.size)
    images = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 255
    images = images.to(device).contiguous(memory_format=memory_format)
    boundary_optimizer = boundary_batch = None
    if boundary:
        boundary_optimizer = make_boundary_optimizer(model, config)
        generator = torch.Generator().manual_seed(1)
        # Sparse soft targets, as a teacher's: about 5% of the pixels on a border.
        targets = torch.rand(shape[0], 1, *shape[2:], generator=generator)
        targets = torch.where(targets > 0.95, targets, torch.zeros(()))
        boundary_batch = (images, targets.to(device).contiguous(memory_format=memory_format))
    times = []
    for step in range(repeats + 1):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        algorithm1_step(step_module, encoder_optimizer, full_optimizer, images, config, step, context,
                        boundary_optimizer=boundary_optimizer, boundary_batch=boundary_batch)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "preset": preset,
        "config_file": config_file,
        "boundary_update": boundary or "no",
        "base_width": config.model.base_width,
        "k": config.model.k,
        "size": config.size,
        "batch": config.batch_size,
        "parameters": count_parameters(model),
        "device": device,
        "threads": threads,
        "tune_malloc": tuned,
        "amp_bf16": cuda and config.amp,
        "first_step_s": times[0],
        "step_s": statistics.median(times[1:]),
        "images_per_s": config.batch_size / statistics.median(times[1:]),
        "peak_rss_mb" if not cuda else "peak_cuda_mb": peak,
        # Other processes on the machine slow multi-threaded CPU steps a lot: record how busy it was.
        "load_average_1min": os.getloadavg()[0],
    }


def compare_optimizers(data: str, steps: int, device: str, threads: int) -> dict:
    """Short ``small``-preset runs with Adam and with SGD on ``data``; mean losses over the last quarter."""
    import tempfile

    from training.config import PRESETS, TrainConfig
    from training.trainer import train

    runs = {}
    for optimizer, lr in (("adam", PRESETS["small"].lr), ("sgd", 0.003)):
        config = TrainConfig.from_dict(
            {"optimizer": optimizer, "lr": lr, "iterations": steps, "log_every": 1, "sample_every": 0,
             "checkpoint_every": 0},
            base=PRESETS["small"],
        )
        records = []
        with tempfile.TemporaryDirectory() as run_dir:
            started = time.perf_counter()
            train(config, data, run_dir, device=device, threads=threads, on_metrics=records.append)
            seconds = time.perf_counter() - started
        tail = records[-max(1, steps // 4):]
        runs[optimizer] = {
            "lr": lr,
            "first_ncut": records[0]["ncut"],
            "first_recon": records[0]["recon"],
            "tail_mean_ncut": statistics.fmean(r["ncut"] for r in tail),
            "tail_mean_recon": statistics.fmean(r["recon"] for r in tail),
            "seconds": seconds,
        }
    return {"benchmark": "optimizers", "data": data, "steps": steps, "device": device, "threads": threads,
            "load_average_1min": os.getloadavg()[0], "runs": runs}


def _spawn(preset: str, batch: int | None, args, tuned: bool, config_file: str | None = None) -> dict:
    env = {**os.environ}
    env.pop("WNET_NO_MALLOC_TUNING", None)
    if not tuned:
        env["WNET_NO_MALLOC_TUNING"] = "1"
    command = [sys.executable, __file__, "--worker", preset, "--device", args.device,
               "--threads", str(args.threads), "--repeats", str(args.repeats)]
    command += [] if batch is None else ["--worker-batch", str(batch)]
    command += [] if config_file is None else ["--config", config_file]
    command += ["--boundary-only"] if args.boundary_only else ["--boundary"] if args.boundary else []
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker {preset} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paper-batch", type=int, default=2, help="batch of the paper configuration (paper: 10)")
    parser.add_argument("--small-only", action="store_true", help="skip the full-width configuration")
    parser.add_argument("--compare-optimizers", metavar="DATA", help="short Adam vs SGD runs on DATA instead")
    parser.add_argument("--steps", type=int, default=80, help="steps of each --compare-optimizers run")
    parser.add_argument(
        "--config", metavar="FILE",
        help="time only this training config (TOML/JSON over the small preset, its own batch), malloc tuned",
    )
    parser.add_argument("--boundary", action="store_true", help="each step also makes the boundary update")
    parser.add_argument("--boundary-only", action="store_true", help="time the boundary update alone")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        boundary = "only" if args.boundary_only else "with" if args.boundary else ""
        print(json.dumps(run_variant(args.worker, args.worker_batch, args.device, args.threads, args.repeats,
                                     args.config, boundary)))
        return
    if args.config:
        print(json.dumps({"benchmark": "train_step", "results": [_spawn("small", None, args, True, args.config)]},
                         indent=2))
        return
    if args.compare_optimizers:
        print(json.dumps(compare_optimizers(args.compare_optimizers, args.steps, args.device, args.threads), indent=2))
        return
    plans = [("small", 4)] + ([] if args.small_only else [("paper", args.paper_batch)])
    results = []
    for preset, batch in plans:
        untuned = _spawn(preset, batch, args, tuned=False)
        tuned = _spawn(preset, batch, args, tuned=True)
        results += [untuned, tuned]
        tuned["speedup_from_tune_malloc"] = untuned["step_s"] / tuned["step_s"]
    print(json.dumps({"benchmark": "train_step", "results": results}, indent=2))


if __name__ == "__main__":
    main()
