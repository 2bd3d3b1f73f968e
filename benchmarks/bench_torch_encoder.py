"""Throughput of the W-Net encoder in PyTorch on one device, by batch size and precision. Prints JSON.

The issue asks for ``wnet segment``'s images per second on a GPU. The GPU machine lent to this
project has PyTorch but only the CPU build of onnxruntime (onnxruntime-gpu does not fit the
64 MiB a device session may carry), so this measures what the network itself does there:
``WNet.encode`` (pad to a multiple of 16, encoder, softmax, crop), as ``wnet segment``
runs the exported copy of it, on random 0..255 images, in ``torch.inference_mode``, float32 and
bfloat16 autocast, channels_last on CUDA. Times are the fastest of ``--rounds`` rounds of
``--reps`` calls each, after warm-up calls, with the device synchronised around every round.
It runs on the CPU too (``--device cpu``), which is how its logic is tested.

Usage::

    python3 benchmarks/bench_torch_encoder.py --checkpoint runs/gpu/last.pt --device cuda --batches 1,8,16
    .venv/bin/python benchmarks/bench_torch_encoder.py --device cpu --batches 1 --reps 1 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from bench_inference import parse_size  # noqa: E402  (this folder is on sys.path when run as a script)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="checkpoint (default: a random quarter-width W-Net)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="321x481", help="image size HxW (BSDS500: 321x481, padded to 336x496)")
    parser.add_argument("--batches", default="1,8,16")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch

    from training.checkpoint import load_checkpoint
    from training.config import ModelConfig
    from training.model import WNet, count_parameters

    if args.checkpoint is not None:
        wnet = load_checkpoint(args.checkpoint)
    else:
        torch.manual_seed(0)
        wnet = WNet(ModelConfig(base_width=16))
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    wnet = wnet.eval().to(device, memory_format=memory_format)
    height, width = parse_size(args.size)

    def synchronise() -> None:
        if cuda:
            torch.cuda.synchronize()

    results = []
    for precision in ("float32", "bfloat16"):
        for batch in (int(b) for b in args.batches.split(",")):
            images = (torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0)) * 255).to(
                device, memory_format=memory_format
            )
            autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")

            def call(images=images, autocast=autocast):
                with torch.inference_mode(), autocast:
                    return wnet.encode(images)

            for _ in range(3):
                call()
            synchronise()
            best = float("inf")
            for _ in range(args.rounds):
                began = time.perf_counter()
                for _ in range(args.reps):
                    call()
                synchronise()
                best = min(best, (time.perf_counter() - began) / args.reps)
            results.append({
                "precision": precision, "batch": batch, "ms_per_call": round(best * 1000, 3),
                "images_per_s": round(batch / best, 1),
            })
    print(json.dumps({
        "benchmark": "torch_encoder", "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__, "checkpoint": str(args.checkpoint), "base_width": wnet.config.base_width,
        "k": wnet.config.k, "encoder_parameters": count_parameters(wnet.encoder), "size": [height, width],
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
