"""W-Net training in PyTorch (needs the ``train`` extra: ``pip install 'wnet[train]'``).

Public API (imported lazily so that ``import training`` without torch gives an install hint
instead of a bare ImportError):

- :class:`ModelConfig` (no torch needed), :class:`WNet`,
- :func:`load_checkpoint` -> W-Net in eval mode, :func:`save_checkpoint`, :func:`read_checkpoint`.
- :class:`TrainConfig`, :data:`PRESETS`, :func:`resolve_train_config` (no torch needed),
  :func:`train` -> :class:`TrainResult` (the paper's Algorithm 1; see :mod:`training.trainer`).
"""

from __future__ import annotations

from importlib import import_module

from training.config import PRESETS, ModelConfig, TrainConfig, resolve_train_config

_LAZY = {
    "WNet": "training.model",
    "UNet": "training.model",
    "load_checkpoint": "training.checkpoint",
    "save_checkpoint": "training.checkpoint",
    "read_checkpoint": "training.checkpoint",
    "train": "training.trainer",
    "TrainResult": "training.trainer",
}

__all__ = ["PRESETS", "ModelConfig", "TrainConfig", "resolve_train_config", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        from wnetcli.errors import require_torch

        require_torch()
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
