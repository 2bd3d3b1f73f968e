"""Check an exported encoder against PyTorch, the way ``wnet segment`` will run it.

Each check feeds the same random RGB batch to :meth:`training.model.WNet.encode` (or
:meth:`~training.model.WNet.encode_with_boundaries` for a two-output graph; float32,
padding and cropping in torch) and to an onnxruntime CPU session of the exported file, with
the input padded by ``numpy.pad(mode="reflect")`` on the bottom and right to the model's
multiple and the output cropped, exactly as the segment runtime does. So a check covers
the graph and the padding contract together.

fp16 graphs are checked on the CPU too: onnxruntime's CPU provider runs the float16 graph
here (kernels it lacks in float16 get casts inserted), and the reference stays float32
PyTorch, so the fp16 tolerance covers the rounding of both weights and activations.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from training.model import WNet
from wnetcli.errors import ModelError
from wnetcli.model_info import BOUNDARIES_NAME, INPUT_NAME, OUTPUT_NAME
from wnetcli.ort_options import onnx_session_options


def default_sizes(multiple: int) -> tuple[tuple[int, int], ...]:
    """Two (H, W) test sizes for a model padding to ``multiple``: not multiples, so both axes get padded.

    For ``multiple=16`` these are 53x61 and 33x87.
    """
    return ((3 * multiple + 5, 4 * multiple - 3), (2 * multiple + 1, 5 * multiple + 7))


def pad_reflect(images: np.ndarray, multiple: int) -> np.ndarray:
    """Pad (N, C, H, W) on the bottom and right to multiples of ``multiple`` with ``numpy.pad`` reflect."""
    pad_h, pad_w = (-images.shape[2]) % multiple, (-images.shape[3]) % multiple
    return np.pad(images, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="reflect")


def max_abs_difference(path: str | os.PathLike[str], wnet: WNet, height: int, width: int, *, batch: int = 2,
                       fp16: bool = False, seed: int = 0) -> float:
    """Largest |onnxruntime - PyTorch| over the outputs of one random batch: the probabilities,
    and the boundary map of a network with a boundary head.

    Parameters
    ----------
    path : path
        The exported ``.onnx`` file.
    wnet : WNet
        The network it was exported from, in eval mode.
    height, width : int
        Image size (any size; padded like the runtime pads).
    batch : int
        Images in the batch.
    fp16 : bool
        Feed the session float16 (the graph's input type when exported with ``--fp16``).
    seed : int
        Seed of the random images (uniform on 0..255, float32).

    Returns
    -------
    float
        The maximum absolute difference over all outputs (each is in 0..1).
    """
    import onnxruntime as ort

    multiple = wnet.config.pad_multiple
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 255.0, size=(batch, 3, height, width)).astype(np.float32)
    with torch.inference_mode():
        tensors = torch.from_numpy(images)
        if wnet.config.boundary_head:
            names, expected = (OUTPUT_NAME, BOUNDARIES_NAME), wnet.encode_with_boundaries(tensors)
        else:
            names, expected = (OUTPUT_NAME,), (wnet.encode(tensors),)
    try:
        session = ort.InferenceSession(str(path), sess_options=onnx_session_options(),
                                       providers=["CPUExecutionProvider"])
        feed = pad_reflect(images, multiple).astype(np.float16 if fp16 else np.float32)
        results = session.run(list(names), {INPUT_NAME: feed})
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"onnxruntime cannot run the exported graph: {str(exc).strip().splitlines()[0]}") from exc
    worst = 0.0
    for name, result, reference in zip(names, results, expected, strict=True):
        got = result[:, :, :height, :width].astype(np.float32)
        if got.shape != reference.shape:
            raise ModelError(f"the exported graph's {name} is {result.shape} for input {feed.shape}; "
                             f"expected {tuple(reference.shape)}")
        worst = max(worst, float(np.abs(got - reference.numpy()).max()))
    return worst
