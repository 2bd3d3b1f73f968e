"""Self-describing training checkpoints.

A checkpoint is a plain dict of tensors and primitives (so it loads with
``torch.load(..., weights_only=True)``, which cannot run code from the file):

=================  ==========================================================
``format``         :data:`CHECKPOINT_FORMAT` (int); readers refuse newer ones
``package``        ``"wnet"``
``version``        wnet version that wrote it
``model_config``   :meth:`training.config.ModelConfig.to_dict`
``model``          the W-Net ``state_dict``
``step``           optimisation steps done
``train_config``   resolved training config (dict), or ``{}``
``data``           text describing the training data
``optimizers``     dict of optimizer/scheduler ``state_dict`` s (for ``--resume``), or ``{}``
``rng``            dict of RNG states (for an exact ``--resume``), or ``{}``
=================  ==========================================================
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from training.config import ModelConfig
from training.model import WNet
from wnetcli import __version__
from wnetcli.atomic import atomic_write_bytes
from wnetcli.errors import InputError, ModelError

CHECKPOINT_FORMAT = 1
REQUIRED_KEYS = ("format", "package", "version", "model_config", "model", "step")


def save_checkpoint(
    path: str | os.PathLike[str],
    model: WNet,
    *,
    step: int,
    train_config: dict | None = None,
    data: str = "",
    optimizers: dict[str, Any] | None = None,
    rng: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file, then rename) and return its path.

    A failed write (a full disk) raises :class:`~wnetcli.errors.OutputError` naming ``path``;
    the checkpoint there before, if any, stays whole and loadable.

    ``model`` may be wrapped (DistributedDataParallel, ``torch.compile``): the plain W-Net's
    weights are stored, always on the CPU so the file loads anywhere.
    """
    plain = getattr(model, "module", model)
    plain = getattr(plain, "_orig_mod", plain)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "package": "wnet",
        "version": __version__,
        "model_config": plain.config.to_dict(),
        "model": {name: tensor.detach().cpu() for name, tensor in plain.state_dict().items()},
        "step": int(step),
        "train_config": dict(train_config or {}),
        "data": str(data),
        "optimizers": optimizers or {},
        "rng": rng or {},
    }
    target = Path(path)
    # Serialised in memory first: torch.save writing to a file turns the OS error of a full disk
    # into a RuntimeError ("[enforce fail at inline_container.cc]") that names neither the file
    # nor the cause; written from memory, the write's own OSError (ENOSPC) reaches atomic
    # writing, which names both, removes the temporary and keeps the previous checkpoint. The
    # cost is one copy of the checkpoint in memory while it is written.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(target, buffer.getbuffer())
    return target


def read_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> dict:
    """Load and validate a checkpoint dict (``weights_only=True``); raise :class:`ModelError` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols of files it then refuses; the refusal is the news.
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refused an object a checkpoint never holds (code, a class): a file of
        # unknown origin, maybe malicious. torch's message advises retrying with
        # weights_only=False, which would run that code, so none of it is relayed.
        raise ModelError(f"{path} is not a wnet checkpoint") from exc
    except Exception as exc:  # torch.load raises many types (struct.error, RuntimeError, ...)
        # torch.load's own messages can be as bare as "101" (a KeyError on a text file): the
        # exception type goes in front so the reason reads as one.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
        raise ModelError(f"{path} is not a wnet checkpoint (torch.load could not read it: {reason})") from exc
    if not isinstance(payload, dict) or payload.get("package") != "wnet":
        raise ModelError(f"{path} is not a wnet checkpoint (no 'package': 'wnet' entry)")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise ModelError(f"{path} is missing checkpoint keys: {', '.join(missing)}")
    if not isinstance(payload["format"], int) or payload["format"] > CHECKPOINT_FORMAT:
        raise ModelError(
            f"{path} has checkpoint format {payload['format']} (written by wnet {payload['version']}); "
            f"this wnet {__version__} reads format {CHECKPOINT_FORMAT}: upgrade wnet"
        )
    return payload


def model_from_checkpoint(payload: dict, *, source: str = "checkpoint") -> WNet:
    """Rebuild the W-Net from a validated checkpoint dict (train mode, CPU)."""
    try:
        config = ModelConfig.from_dict(payload["model_config"])
    except (InputError, TypeError) as exc:
        raise ModelError(f"{source} has an invalid model config: {exc}") from exc
    model = WNet(config)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise ModelError(f"{source} weights do not match its model config: {str(exc).splitlines()[0]}") from exc
    return model


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> WNet:
    """Load a checkpoint file as a W-Net in eval mode."""
    model = model_from_checkpoint(read_checkpoint(path, map_location=map_location), source=str(path))
    return model.to(map_location).eval()
