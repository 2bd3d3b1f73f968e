"""Benchmark of the soft normalized-cut loss: ours against an unfold and a plain shift-loop version.

Each configuration runs in a fresh subprocess, so that its peak memory is its own: on CPU the
growth of the process's maximum resident set size (``ru_maxrss``) over the forward and backward
pass, after the inputs exist; on CUDA the growth of ``torch.cuda.max_memory_allocated``. Times are
medians over repeats after one warm-up. All methods compute the same loss; the report gives each
method's relative difference from ours, and time and memory ratios within this one run.

On CUDA it also times one training step of the paper's configuration (full-width W-Net, K=20,
batch 10, 224x224: an encoder update on the N-cut loss, then a W-Net update on the reconstruction
loss, as in the paper's Algorithm 1) and reports the loss's share of it.

Usage::

    .venv/bin/python benchmarks/bench_loss.py                 # CPU, 2 threads, the issue's figures
    .venv/bin/python benchmarks/bench_loss.py --device cuda   # adds the training-step share
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

METHODS = ("ours", "shift_loop", "unfold")


@dataclass(frozen=True)
class Case:
    """One measured configuration."""

    method: str
    batch: int = 4
    classes: int = 20
    size: int = 224
    radius: int = 5
    threads: int = 2
    device: str = "cpu"
    repeats: int = 5


# --------------------------------------------------------------------------------------------
# Baselines: the two ways public implementations compute this loss, with plain autograd.
# --------------------------------------------------------------------------------------------


def _disc(radius):
    """Every offset (dy, dx) of the disc, the centre included."""
    return [
        (dy, dx)
        for dy in range(-radius, radius + 1)
        for dx in range(-radius, radius + 1)
        if dy * dy + dx * dx < radius**2
    ]


def _ratio_loss(probs, affinity_probs, degree):
    from training.losses import EPSILON

    assoc_self = (probs * affinity_probs).sum(dim=(2, 3))
    assoc_volume = (probs * degree).sum(dim=(2, 3)) + EPSILON
    return (probs.shape[1] - (assoc_self / assoc_volume).sum(dim=1)).mean()


def shift_loop_loss(probs, images, radius=5, sigma_i=10.0, sigma_x=4.0):
    """Zero-pad once, then for every offset of the disc add weight * shifted probs (autograd keeps each)."""
    import torch.nn.functional as F

    features = images.mean(dim=1, keepdim=True)
    height, width = probs.shape[-2:]
    padded_p = F.pad(probs, (radius,) * 4)
    padded_f = F.pad(features, (radius,) * 4)
    inside = F.pad(features.new_ones(features.shape), (radius,) * 4)  # 0 outside the image
    affinity_probs = 0
    degree = 0
    for dy, dx in _disc(radius):
        window = (..., slice(radius + dy, radius + dy + height), slice(radius + dx, radius + dx + width))
        weight = (-((features - padded_f[window]) ** 2) / sigma_i**2 - (dy * dy + dx * dx) / sigma_x**2).exp()
        weight = weight * inside[window]
        affinity_probs = affinity_probs + weight * padded_p[window]
        degree = degree + weight
    return _ratio_loss(probs, affinity_probs, degree)


def unfold_loss(probs, images, radius=5, sigma_i=10.0, sigma_x=4.0):
    """``F.unfold`` every (2r+1)^2 neighbourhood of probs and intensity, mask to the disc, sum."""
    import torch
    import torch.nn.functional as F

    batch, classes, height, width = probs.shape
    side = 2 * radius + 1
    features = images.mean(dim=1, keepdim=True)
    neighbours_f = F.unfold(features, side, padding=radius).view(batch, side * side, height, width)
    inside = F.unfold(torch.ones_like(features), side, padding=radius).view(batch, side * side, height, width)
    offsets = torch.arange(side, dtype=probs.dtype, device=probs.device) - radius
    distance2 = (offsets[:, None] ** 2 + offsets[None, :] ** 2).reshape(1, -1, 1, 1)
    weight = torch.exp(-((features - neighbours_f) ** 2) / sigma_i**2 - distance2 / sigma_x**2)
    weight = weight * inside * (distance2 < radius**2)
    neighbours_p = F.unfold(probs, side, padding=radius).view(batch, classes, side * side, height, width)
    affinity_probs = (neighbours_p * weight[:, None]).sum(dim=2)
    return _ratio_loss(probs, affinity_probs, weight.sum(dim=1, keepdim=True))


# --------------------------------------------------------------------------------------------
# Worker: one configuration in this process.
# --------------------------------------------------------------------------------------------


def _loss_function(method):
    from training.losses import soft_ncut_loss

    return {"ours": soft_ncut_loss, "shift_loop": shift_loop_loss, "unfold": unfold_loss}[method]


def _inputs(case, torch):
    generator = torch.Generator().manual_seed(0)
    shape = (case.batch, case.classes, case.size, case.size)
    probs = torch.softmax(torch.randn(shape, generator=generator), dim=1)
    images = torch.rand(case.batch, 3, case.size, case.size, generator=generator) * 255
    return probs.to(case.device), images.to(case.device)


def _sync(torch, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_case(case: Case) -> dict:
    """Peak extra memory of the first forward+backward, then median forward and backward times."""
    import torch

    from wnetcli.tuning import tune_malloc

    tune_malloc()
    torch.set_num_threads(case.threads)
    loss_fn = _loss_function(case.method)
    probs, images = _inputs(case, torch)
    probs.requires_grad_(True)
    cuda = case.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.max_memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    loss = loss_fn(probs, images, radius=case.radius)
    loss.backward()
    _sync(torch, case.device)
    after = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    value = loss.item()
    forward, backward = [], []
    for _ in range(case.repeats):
        probs.grad = None
        _sync(torch, case.device)
        start = time.perf_counter()
        loss = loss_fn(probs, images, radius=case.radius)
        _sync(torch, case.device)
        middle = time.perf_counter()
        loss.backward()
        _sync(torch, case.device)
        forward.append(middle - start)
        backward.append(time.perf_counter() - middle)
    return {
        **asdict(case),
        "loss": value,
        "forward_s": statistics.median(forward),
        "backward_s": statistics.median(backward),
        "total_s": statistics.median(f + b for f, b in zip(forward, backward, strict=True)),
        "peak_extra_mb": (after - before) / 2**20,
    }


def run_training_step(device: str, repeats: int, threads: int) -> dict:
    """Median time of one paper-configuration training step, and of its N-cut loss alone."""
    import torch

    from wnetcli.tuning import tune_malloc

    tune_malloc()
    torch.set_num_threads(threads)

    from training.config import ModelConfig
    from training.losses import reconstruction_loss, soft_ncut_loss
    from training.model import WNet

    torch.manual_seed(0)
    model = WNet(ModelConfig(k=20)).to(device)
    encoder_opt = torch.optim.SGD(model.encoder.parameters(), lr=0.003)
    wnet_opt = torch.optim.SGD(model.parameters(), lr=0.003)
    images = torch.rand(10, 3, 224, 224, device=device) * 255

    def step():
        probs = model.encode(images)
        loss = soft_ncut_loss(probs, images)
        encoder_opt.zero_grad()
        loss.backward()
        encoder_opt.step()
        _, reconstruction = model(images)
        loss = reconstruction_loss(reconstruction, model.normalize(images))
        wnet_opt.zero_grad()
        loss.backward()
        wnet_opt.step()

    probs = torch.softmax(torch.randn(10, 20, 224, 224, device=device), dim=1).requires_grad_(True)

    def ncut_only():
        soft_ncut_loss(probs, images).backward()

    timings = {}
    for name, fn in (("step_s", step), ("ncut_forward_backward_s", ncut_only)):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            _sync(torch, device)
            start = time.perf_counter()
            fn()
            _sync(torch, device)
            times.append(time.perf_counter() - start)
        timings[name] = statistics.median(times)
    return {
        "device": device,
        "threads": threads,
        "batch": 10,
        "classes": 20,
        "size": 224,
        **timings,
        "ncut_share_of_step": timings["ncut_forward_backward_s"] / timings["step_s"],
    }


# --------------------------------------------------------------------------------------------
# Driver: one subprocess per configuration, then ratios.
# --------------------------------------------------------------------------------------------


def _in_subprocess(payload: dict) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(payload)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return {**payload, "error": result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, nargs="+", default=[20, 64], help="K values timed for ours")
    parser.add_argument(
        "--baselines",
        nargs="*",
        default=["shift_loop", "unfold"],
        choices=METHODS[1:],
        help="baselines timed at the first K",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--training-step",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time a paper-configuration training step (default: on for CUDA only)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # child process: one measurement, one JSON line
        payload = json.loads(args.worker)
        if payload.pop("kind") == "step":
            print(json.dumps(run_training_step(**payload)))
        else:
            print(json.dumps(run_case(Case(**payload))))
        return

    common = {"batch": args.batch, "size": args.size, "threads": args.threads, "device": args.device}
    first_k = args.classes[0]
    cases = [Case("ours", classes=k, repeats=args.repeats, **common) for k in args.classes]
    # Baselines are several times slower: fewer repeats keep the run short on 2 cores.
    cases += [Case(m, classes=first_k, repeats=max(1, args.repeats // 2), **common) for m in args.baselines]
    results = [_in_subprocess({"kind": "case", **asdict(case)}) for case in cases]
    report = {"results": results}
    ours = next((r for r in results if r["method"] == "ours" and r["classes"] == first_k and "error" not in r), None)
    if ours is not None:
        report["vs_ours_at_first_k"] = {
            r["method"]: {
                "time_ratio": r["total_s"] / ours["total_s"],
                "memory_ratio": r["peak_extra_mb"] / max(ours["peak_extra_mb"], 1e-9),
                "loss_relative_difference": abs(r["loss"] - ours["loss"]) / abs(ours["loss"]),
            }
            for r in results
            if r["method"] != "ours" and "error" not in r
        }
    if args.training_step if args.training_step is not None else args.device.startswith("cuda"):
        report["training_step"] = _in_subprocess(
            {"kind": "step", "device": args.device, "repeats": args.repeats, "threads": args.threads}
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
