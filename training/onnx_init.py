"""Start training from an exported ``.onnx`` (``init_from``): the shipped model has no checkpoint.

``wnet export`` names the graph's initializers after the encoder's ``state_dict``
(``encoder.down.0.0.weight``, ...), so the encoder's weights can be read back from them. Two
things an export changes are undone here:

* with ``wnet.fused_batchnorm = 1`` in the metadata, the BatchNorms that fed a 1x1 convolution
  (the last up module's, which feeds the heads, and those before ``resize_conv`` upsamplers)
  were folded into that convolution (:func:`export.optimize.fuse_encoder`) and are not in the
  file. They come back as identities (weight 1, bias 0, running mean 0, running variance
  ``1 - eps``, so that ``(x - 0) / sqrt(1 - eps + eps) * 1 + 0 = x`` in eval mode) and the
  convolution keeps the folded weights: in eval mode the network computes what the file does.
* the file holds no decoder: it keeps the model's seeded initialisation, as does a boundary
  head the file lacks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.model import WNet
from wnetcli.errors import TRAIN_EXTRA_HINT, DependencyError, InputError, ModelError
from wnetcli.model_info import PREFIX, ModelInfo

PARAMETER_PREFIX = "encoder."


def _identity_batchnorm(name: str, tensor: torch.Tensor, eps: float) -> torch.Tensor:
    """The value of ``state_dict`` entry ``name`` of a BatchNorm that computes the identity in eval mode."""
    if name.endswith(".weight"):
        return torch.ones_like(tensor)
    if name.endswith(".running_var"):
        return torch.full_like(tensor, 1.0 - eps)
    return torch.zeros_like(tensor)  # bias, running_mean


def read_onnx_initializers(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The encoder initializers (by ``state_dict`` name, float32 arrays) and the metadata of an exported file.

    Raises
    ------
    InputError
        If the file does not exist.
    ModelError
        If it is not an ONNX model made by ``wnet export`` (no wnet metadata).
    DependencyError
        Without the ``onnx`` package.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise DependencyError(f"onnx is not installed ({exc}); {TRAIN_EXTRA_HINT}") from exc
    path = Path(path)
    if not path.is_file():
        raise InputError(f"init_from not found: {path}")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # onnx raises protobuf's DecodeError and others
        raise ModelError(f"{path} is not an ONNX model ({type(exc).__name__})") from exc
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    ModelInfo.from_metadata(metadata, source=str(path))  # refuses files not made by `wnet export`
    arrays = {
        init.name[len(PARAMETER_PREFIX):]: numpy_helper.to_array(init).astype(np.float32)
        for init in proto.graph.initializer
        if init.name.startswith(PARAMETER_PREFIX)
    }
    return arrays, metadata


def load_onnx_encoder(model: WNet, path: str | os.PathLike[str]) -> None:
    """Copy the encoder weights of an exported ``.onnx`` file into ``model`` (in place).

    Parameters
    ----------
    model : WNet
        The network to initialise; its config must give the encoder the file's layer shapes
        (``padding_mode`` and ``dropout`` may differ). Its decoder, and its boundary head when
        the file has none, keep their current weights.
    path : path
        A file written by ``wnet export`` (float32 or float16).

    Raises
    ------
    ModelError
        When a weight is missing or has another shape, or the file holds weights the model
        lacks (another architecture).
    """
    arrays, metadata = read_onnx_initializers(path)
    fused = metadata.get(f"{PREFIX}fused_batchnorm", "0") == "1"
    batchnorms = {name: module for name, module in model.encoder.named_modules() if isinstance(module, nn.BatchNorm2d)}
    state = {}
    for name, tensor in model.encoder.state_dict().items():
        module_name = name.rsplit(".", 1)[0]
        if name in arrays:
            array = arrays.pop(name)
            if tuple(array.shape) != tuple(tensor.shape):
                raise ModelError(
                    f"{path}: encoder.{name} has shape {tuple(array.shape)}, the config's network "
                    f"{tuple(tensor.shape)} ({model.config})"
                )
            state[name] = torch.from_numpy(array).to(tensor.dtype)
        elif name.endswith(".num_batches_tracked") or module_name == "boundary_head":
            state[name] = tensor
        elif fused and module_name in batchnorms:
            state[name] = _identity_batchnorm(name, tensor, batchnorms[module_name].eps)
        else:
            raise ModelError(f"{path} lacks the encoder weight encoder.{name} of the config's network ({model.config})")
    if arrays:
        raise ModelError(
            f"{path} holds encoder weights the config's network lacks ({', '.join(sorted(arrays)[:3])}); "
            f"its model config: {metadata.get(f'{PREFIX}model_config', '?')}"
        )
    model.encoder.load_state_dict(state)
