"""Test helpers: tiny valid wnet ONNX models built with ``onnx.helper`` (no torch).

The model classifies each pixel by its nearest colour prototype: a softmax over the negative
squared RGB distances to K prototype colours, scaled by a temperature. Its first layer is a
3x3 convolution (pads 1) with only the centre tap set, so it reacts to colour, not to texture.
With ``pool=True`` the logits go through a 2x2 max-pooling and a 2x nearest upsampling, so
the graph only returns the right size for even H and W: feeding it unpadded odd sizes fails,
which is what makes the runtime's padding testable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wnetcli.model_info import INPUT_NAME, OUTPUT_NAME, ModelInfo

#: Pure red, green, blue and grey: the default prototypes (K = 4).
PROTOTYPES = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128]], dtype=np.float32)


def require_onnx():
    """Import :mod:`onnx`, or skip the calling test with the reason."""
    return pytest.importorskip("onnx", reason="onnx (the train extra) is needed to build test models")


def build_prototype_model(
    path: Path,
    prototypes: np.ndarray = PROTOTYPES,
    *,
    temperature: float = 20.0,
    pool: bool = True,
    pad_multiple: int = 16,
    fp16: bool = False,
    info: ModelInfo | None = None,
) -> Path:
    """Write a nearest-colour-prototype segmentation model to ``path`` and return ``path``.

    Parameters
    ----------
    prototypes : ndarray, shape (K, 3)
        RGB 0..255 colours; pixel p gets ``softmax_k(-temperature * |p/255 - c_k/255|^2)``.
    pool : bool
        Add the MaxPool 2x2 / Upsample 2x pair (needs even H, W).
    pad_multiple : int
        Written to the metadata; the runtime pads to it.
    fp16 : bool
        Take and return float16 (``ModelInfo.fp16``).
    info : ModelInfo, optional
        Metadata to write instead of the default one (for tests of bad metadata).
    """
    onnx = require_onnx()
    from onnx import TensorProto, helper, numpy_helper

    centres = np.asarray(prototypes, dtype=np.float32) / 255.0
    k = len(centres)
    # -t|x-c|^2 = -t|x|^2 + 2t c.x - t|c|^2; the -t|x|^2 term is the same for every k and
    # cancels in the softmax, leaving a linear layer: weights 2t c, bias -t|c|^2.
    weight = np.zeros((k, 3, 3, 3), dtype=np.float32)
    weight[:, :, 1, 1] = 2.0 * temperature * centres
    bias = (-temperature * (centres**2).sum(axis=1)).astype(np.float32)
    dtype = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    inits = [
        numpy_helper.from_array(np.array(1.0 / 255.0, dtype=np.float32), "scale"),
        numpy_helper.from_array(weight, "weight"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales"),
    ]
    nodes = []
    source = INPUT_NAME
    if fp16:
        nodes.append(helper.make_node("Cast", [INPUT_NAME], ["image32"], to=TensorProto.FLOAT))
        source = "image32"
    nodes += [
        helper.make_node("Mul", [source, "scale"], ["unit"]),
        helper.make_node(
            "Conv", ["unit", "weight", "bias"], ["logits"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        ),
    ]
    logits = "logits"
    if pool:
        nodes += [
            helper.make_node("MaxPool", ["logits"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Resize", ["pooled", "", "scales"], ["upsampled"], mode="nearest"),
        ]
        logits = "upsampled"
    out = "probs32" if fp16 else OUTPUT_NAME
    nodes.append(helper.make_node("Softmax", [logits], [out], axis=1))
    if fp16:
        nodes.append(helper.make_node("Cast", [out], [OUTPUT_NAME], to=TensorProto.FLOAT16))
    graph = helper.make_graph(
        nodes,
        "prototype_segmenter",
        [helper.make_tensor_value_info(INPUT_NAME, dtype, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, dtype, ["N", k, "H", "W"])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    info = info or ModelInfo(k=k, pad_multiple=pad_multiple, fp16=fp16, training_data="synthetic test model")
    helper.set_model_props(model, info.to_metadata())
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def squares_image(size: int = 32, colours: np.ndarray = PROTOTYPES) -> np.ndarray:
    """(size, size, 3) uint8: four flat quadrants in the first four ``colours``."""
    half = size // 2
    rgb = np.empty((size, size, 3), dtype=np.uint8)
    rgb[:half, :half], rgb[:half, half:] = colours[0], colours[1]
    rgb[half:, :half], rgb[half:, half:] = colours[2], colours[3]
    return rgb
