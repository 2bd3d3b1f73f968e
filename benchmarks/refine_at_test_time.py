"""Experiment (issue 22): refine the network on each image at test time before taking its maps.

For every image of a BSDS500 split (every ``--stride``-th), a copy of the model takes ``--steps``
soft N-cut steps (Adam, ``--lr``) on the image and its mirror at the size the pipeline runs the
network at, then its boundary map of the image goes into the recipe as usual (``--steps 0`` gives
the exported model's map). Scored against
the same recipe with the model as exported (``wnet compare``'s paired bootstrap). The encoder is
read from the ``.onnx`` (``training.onnx_init``); an exported model has no decoder, so the
reconstruction update is not run: N-cut steps only.

    python benchmarks/refine_at_test_time.py --model wnetcli/models/boundaries.onnx \
        --recipe runs/candidate.toml --split train --stride 2 --steps 5 --lr 1e-4

Prints one JSON object (the two runs' scores and the paired differences). Needs the ``train`` extra.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wnetcli.evaluation import EvaluationOptions, RunCounts, compare_runs, evaluate, find_split
from wnetcli.evaluation.inputs import Prediction, SegmenterMethod
from wnetcli.images import read_rgb
from wnetcli.segmentation import Segmenter, SegmentOptions
from wnetcli.segmentation.cues import NetworkMaps
from wnetcli.segmentation.grids import resize_rgb
from wnetcli.segmentation.pipeline import _network_input_size
from wnetcli.segmentation.recipe import load_recipe
from wnetcli.segmentation.runtime import pad_batch


@dataclass
class RefinedMethod:
    """The recipe's ucm2 with the network refined on each image first (built per process)."""

    model: Path
    options: SegmentOptions
    steps: int
    lr: float
    name: str = "refined"
    _state: Any = field(default=None, repr=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_state": None}

    def _load(self):
        import torch

        from training.config import ModelConfig
        from training.model import WNet
        from training.onnx_init import load_onnx_encoder, read_onnx_initializers
        from wnetcli.model_info import PREFIX

        torch.set_num_threads(1)
        _, metadata = read_onnx_initializers(self.model)
        config = ModelConfig(**json.loads(metadata[f"{PREFIX}model_config"]))
        wnet = WNet(config)
        load_onnx_encoder(wnet, self.model)
        segmenter = Segmenter(self.model, self.options)
        self._state = (wnet, {k: v.clone() for k, v in wnet.encoder.state_dict().items()}, segmenter)
        return self._state

    def network_maps(self, rgb: np.ndarray) -> NetworkMaps:
        import torch

        from training.losses import soft_ncut_loss

        wnet, initial, segmenter = self._state or self._load()
        wnet.encoder.load_state_dict(initial)
        wnet.eval()  # running BatchNorm statistics, no dropout: two images make no batch statistics
        info = segmenter.info
        size = _network_input_size(*rgb.shape[:2], self.options.max_size, info.short_side)
        image = resize_rgb(rgb, size).transpose(2, 0, 1)[None].astype(np.float32)
        padded = pad_batch(np.concatenate([image, image[..., ::-1]]), info.pad_multiple, info.min_padded_side)
        x = torch.from_numpy(np.ascontiguousarray(padded))
        optimiser = torch.optim.Adam(wnet.encoder.parameters(), lr=self.lr)
        for _ in range(self.steps):
            optimiser.zero_grad()
            soft_ncut_loss(wnet.encode(x), x, radius=5.0, sigma_i=10.0, sigma_x=4.0).backward()
            optimiser.step()
        with torch.no_grad():
            boundaries = torch.sigmoid(wnet.boundary_logits(x))[:, 0, : size[0], : size[1]].numpy()
        return NetworkMaps(soft_maps=None, boundaries=boundaries[0])

    def __call__(self, image) -> Prediction:
        rgb = read_rgb(image.image)
        maps = self.network_maps(rgb)
        segmenter = (self._state or self._load())[2]
        return Prediction("ucm2", np.asarray(segmenter.finish(rgb, maps).ucm2, dtype=np.float64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--bsds", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/bsds500")
    parser.add_argument("--split", default="train")
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    if recipe.network_outputs() != {"boundaries"}:
        raise SystemExit("the recipe must read the network's boundaries only")
    images = find_split(args.bsds, args.split)[:: args.stride]
    options = EvaluationOptions(thresholds=99, jobs=args.jobs)
    segment_options = SegmentOptions(recipe=recipe, threads=1)
    began = time.perf_counter()
    as_exported = evaluate(images, SegmenterMethod(args.model, segment_options, name="as-exported"), options)
    middle = time.perf_counter()
    refined = evaluate(images, RefinedMethod(args.model, segment_options, args.steps, args.lr), options)
    ended = time.perf_counter()
    comparison = compare_runs(RunCounts.from_result(as_exported), RunCounts.from_result(refined))
    print(json.dumps({
        "images": len(images), "split": args.split, "steps": args.steps, "lr": args.lr,
        "seconds": {"as_exported": round(middle - began, 1), "refined": round(ended - middle, 1)},
        "refined_minus_as_exported": {
            m.name: [round(v, 4) for v in (m.difference, m.low, m.high)] for m in comparison.measures
        },
    }, indent=1))


if __name__ == "__main__":
    main()
