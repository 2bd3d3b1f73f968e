"""Training a W-Net with the paper's Algorithm 1, resumable exactly, on CPU, GPU or under torchrun.

Per minibatch (Xia & Kulis 2017, Algorithm 1): first update the encoder alone on the soft
normalized-cut loss, then update the whole W-Net on the reconstruction loss. Each update has its
own optimizer (one over the encoder's parameters, one over all parameters), as in the paper.

With boundary training (``boundary_weight > 0``) a third update follows: the encoder and its
boundary head on the class-balanced boundary loss against a teacher hierarchy's boundaries
(:mod:`training.teacher`, computed or read from their cache before the first step), with a
third optimizer over the encoder's parameters (the head is part of the encoder).

A run lives in a folder::

    RUN_DIR/config.json     the resolved TrainConfig (written at the start)
    RUN_DIR/last.pt         checkpoint: weights, the optimizers, step, config, version, RNG state;
                            written every ``checkpoint_every`` steps and every
                            ``checkpoint_minutes`` minutes
    RUN_DIR/log.jsonl       one JSON object per logged step: step, ncut, recon, boundary, lr, ...
    RUN_DIR/samples/        step_NNNNNNN.png sheets: input | argmax labels | reconstruction

Everything a step draws at random (its images, crops, flips and dropout masks) is seeded from
``(seed, step, rank)``, so ``resume=True`` continues exactly: on CPU, 10 steps, then a resumed 10
steps, give bitwise the weights of 20 steps in one go.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training import distributed
from training.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from training.config import ModelConfig, TrainConfig, with_boundary_defaults
from training.data import (
    BoundaryBatch,
    TrainingImages,
    Warn,
    center_crop,
    describe_data,
    iterate_batches,
    load_training_images,
)
from training.losses import balanced_bce_loss, reconstruction_loss, soft_ncut_loss
from training.model import WNet, count_parameters
from training.samples import write_sample_sheet
from wnetcli.atomic import LineLog, atomic_write_text, prepare_folder
from wnetcli.errors import InputError, ModelError, TrainingError
from wnetcli.tuning import tune_malloc
from wnetcli.workers import STOP_SIGNALS, signal_handlers

CHECKPOINT_NAME = "last.pt"
CONFIG_NAME = "config.json"
LOG_NAME = "log.jsonl"
SAMPLES_DIR = "samples"
SAMPLE_IMAGES = 4

Progress = Callable[[int, int], None]
#: Seconds on a steady clock; what ``checkpoint_minutes`` is measured with (tests replace it).
_clock: Callable[[], float] = time.monotonic
Metrics = Callable[[dict], None]


@dataclass(frozen=True)
class TrainResult:
    """What a call to :func:`train` did.

    Attributes:
        run_dir, checkpoint: the run folder and its ``last.pt``.
        step: steps done in total (including those before a resume).
        iterations: steps the run is meant to reach.
        start_step: the step this call began at (0 unless resumed).
        last: the last step's metrics (``step``, ``ncut``, ``recon``, ``boundary``, ``lr``, ``dropout``).
        parameters: trainable parameters of the W-Net.
        device: where it ran ("cpu", "cuda:0").
        world_size: processes (1 unless under torchrun).
        replica_difference: largest parameter difference between processes at the end (0.0 alone).
    """

    run_dir: Path
    checkpoint: Path
    step: int
    iterations: int
    start_step: int
    last: dict
    parameters: int
    device: str
    world_size: int
    replica_difference: float


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of torch's generator (dropout masks) at ``step`` on process ``rank``."""
    return int(np.random.SeedSequence([seed, step, rank, 1]).generate_state(1, dtype=np.uint64)[0] >> 1)


class Algorithm1(nn.Module):
    """The losses of one W-Net step as one module, so that DistributedDataParallel can wrap it.

    ``forward(images, "ncut")`` runs the encoder only and returns the soft N-cut loss;
    ``forward(images, "recon")`` runs the whole W-Net and returns the reconstruction loss;
    ``forward(images, "boundary", targets)`` runs the encoder with its boundary head and
    returns :func:`~training.losses.balanced_bce_loss` against ``targets`` ((N, 1, H, W) in
    [0, 1]). The losses are unweighted: :func:`algorithm1_step` applies the weights to the
    learning rates. Images are (N, 3, H, W) float RGB on 0..255. With ``amp`` the network runs
    under bfloat16 autocast; the losses are computed in float32.
    """

    def __init__(self, wnet: WNet, config: TrainConfig, *, amp: bool) -> None:
        super().__init__()
        self.wnet = wnet
        self.config = config
        self.amp = amp

    def forward(self, images: torch.Tensor, phase: str, targets: torch.Tensor | None = None) -> torch.Tensor:
        config = self.config
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if phase == "ncut":
                probs = self.wnet.encode(images)
                loss = soft_ncut_loss(
                    probs, images, radius=config.ncut_radius, sigma_i=config.ncut_sigma_i, sigma_x=config.ncut_sigma_x
                )
                return loss
            if phase == "recon":
                _, reconstruction = self.wnet(images)
                return reconstruction_loss(reconstruction, WNet.normalize(images))
            if phase == "boundary":
                return balanced_bce_loss(self.wnet.boundary_logits(images), targets)
        raise ValueError(f"unknown phase {phase!r}")


def _rng_state() -> dict:
    """Global RNG states as weights_only-loadable primitives (tensors, lists, numbers)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng_state(state: dict) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Turn the first Ctrl-C or SIGTERM into a flag checked between steps (a second one
    interrupts at once).

    A step interrupted between its two updates would leave weights that belong to no step, so
    the checkpoint written on Ctrl-C is taken at the next step boundary instead. SIGTERM counts
    the same (``kill``, a cluster's time limit: SLURM sends SIGKILL about 30 s later, far more
    than a step).
    """
    pressed = threading.Event()

    def handler(signum, frame):
        if pressed.is_set():
            raise KeyboardInterrupt
        pressed.set()

    with signal_handlers(STOP_SIGNALS, handler):
        yield pressed.is_set


def _truncate_log(path: Path, step: int) -> None:
    """Keep only the log lines of steps up to ``step`` (a resumed run rewrites the steps after it)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", math.inf) <= step:
                kept.append(line)
        except (ValueError, AttributeError):
            continue  # a line cut short by a crash
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def _sample_images(images, size: int) -> torch.Tensor:
    """Centre crops of the first few training images: (n, 3, size, size) float32 on 0..255."""
    return torch.stack([center_crop(images.get(i), size) for i in range(min(SAMPLE_IMAGES, len(images)))])


def _check_finite(value: float, name: str, step: int) -> None:
    if not math.isfinite(value):
        raise TrainingError(
            f"the {name} loss became {value} at step {step + 1}; stopped without saving it "
            f"(the last checkpoint written, if any, is kept). Try a lower --lr or a larger recon_weight."
        )


def _load_initial_weights(model: WNet, path: str) -> None:
    """Copy the W-Net weights of the checkpoint at ``path`` into ``model`` (fine-tuning), or the
    encoder's of an exported ``.onnx``."""
    if Path(path).suffix.lower() == ".onnx":
        from training.onnx_init import load_onnx_encoder

        load_onnx_encoder(model, path)
        return
    source = model_from_checkpoint(read_checkpoint(path), source=path)
    try:
        # A boundary head the checkpoint lacks keeps its seeded initialisation.
        missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    except RuntimeError as exc:
        missing, unexpected = [], [str(exc)]
    if unexpected or any(not name.startswith("encoder.boundary_head.") for name in missing):
        raise ModelError(
            f"init_from {path} holds a network of other shapes ({source.config}) than the config ({model.config})"
        )


def _start_state(config: TrainConfig, run_dir: Path, resume: bool) -> tuple[WNet, dict | None]:
    """A fresh W-Net seeded from ``config.seed``, or the one in ``run_dir/last.pt`` with its checkpoint dict."""
    checkpoint_path = run_dir / CHECKPOINT_NAME
    if not resume:
        if checkpoint_path.exists():
            raise InputError(f"{run_dir} already holds a run ({CHECKPOINT_NAME}); resume it or choose another folder")
        torch.manual_seed(config.seed)  # the same initial weights on every process and every run
        model = WNet(config.model)
        if config.init_from:
            _load_initial_weights(model, config.init_from)
        return model, None
    if not checkpoint_path.exists():
        raise InputError(f"nothing to resume: {checkpoint_path} does not exist")
    payload = read_checkpoint(checkpoint_path)
    saved = ModelConfig.from_dict(payload["model_config"])
    if saved != config.model:
        raise ModelError(f"{checkpoint_path} holds a different model ({saved}) than the config ({config.model})")
    return model_from_checkpoint(payload, source=str(checkpoint_path)), payload


def train(
    config: TrainConfig,
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    device: str = "auto",
    threads: int | None = None,
    stop_after: int | None = None,
    progress: Progress | None = None,
    on_metrics: Metrics | None = None,
    on_start: Callable[[dict], None] | None = None,
    warn: Warn | None = None,
    teacher_cache: str | os.PathLike[str] | None = None,
    on_teacher: Progress | None = None,
) -> TrainResult:
    """Train a W-Net on the images in ``data`` into ``run_dir``.

    Parameters
    ----------
    config : TrainConfig
        The resolved configuration; written to ``run_dir/config.json``.
    data : path or sequence of paths
        A folder of images (searched recursively) or a VOC tree (see
        :func:`training.data.resolve_image_root`), or several of them, used together.
    run_dir : path
        Output folder; must not hold a checkpoint unless ``resume``.
    resume : bool
        Continue from ``run_dir/last.pt`` (its model must equal ``config.model``; ``config`` may
        extend ``iterations``).
    device : {"auto", "cpu", "cuda"}
        Under torchrun each process takes the GPU of its ``LOCAL_RANK``.
    threads : int, optional
        CPU threads per process (default: all cores, divided among the processes).
    stop_after : int, optional
        Stop after this many steps in this call (the run can be resumed later).
    progress : callable, optional
        ``progress(done, total)`` after every step (rank 0 only).
    on_metrics : callable, optional
        Receives every step's metrics dict (rank 0 only): ``step`` (steps done), ``ncut``,
        ``recon`` and ``boundary`` (unweighted losses, averaged over processes; None for a phase
        whose weight is 0), ``lr``, ``dropout``, ``seconds`` (wall time of the step).
    on_start : callable, optional
        Receives a dict describing the run before the first step (rank 0 only): ``device``,
        ``parameters``, ``images``, ``in_memory``, ``start_step``, ``world_size``.
    warn : callable, optional
        Receives warnings (unreadable images, images left without a teacher target); default
        :func:`warnings.warn`.
    teacher_cache : path, optional
        Folder of the cached teacher targets (boundary training); default
        :func:`training.teacher.default_cache_dir`.
    on_teacher : callable, optional
        ``on_teacher(done, total)`` while the teacher targets are computed or read, before the
        first step (rank 0 only; boundary training only).

    Returns
    -------
    TrainResult

    Raises
    ------
    DataError
        The data folder is missing, empty or unreadable.
    InputError
        ``run_dir`` is a file or cannot be written to; it already holds a run (without
        ``resume``), or holds none to resume.
    TrainingError
        A loss became NaN or infinite (``last.pt`` keeps the last good state).
    OutputError
        A file of the run could not be written (a full disk): the run stops there, ``last.pt``
        keeps the last checkpoint written whole, and ``log.jsonl`` holds no partial line.
    KeyboardInterrupt
        After saving ``last.pt`` at the last completed step.
    """
    # A folder that cannot hold the run fails before any step; one to resume must exist already.
    run_dir = Path(run_dir) if resume else prepare_folder(run_dir, "run folder")
    context = distributed.setup(device)
    try:
        return _train(config, data, run_dir, context, resume, threads, stop_after, progress, on_metrics, on_start,
                      warn, teacher_cache, on_teacher)
    finally:
        distributed.teardown(context)


def _train(config, data, run_dir, context, resume, threads, stop_after, progress, on_metrics, on_start, warn,
           teacher_cache, on_teacher):
    tune_malloc()
    if threads:
        torch.set_num_threads(threads)
    elif context.distributed and context.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // context.world_size))
    model, payload = _start_state(config, run_dir, resume)
    start = int(payload["step"]) if payload else 0
    if start >= config.iterations:
        raise InputError(f"the run is already at step {start} of {config.iterations}; raise --iterations to go on")
    images = load_training_images(data, config, warn=warn if context.is_main else lambda _message: None)

    cuda = context.device.type == "cuda"
    memory_format = torch.channels_last if cuda and config.channels_last else torch.contiguous_format
    model = model.to(context.device, memory_format=memory_format)
    encoder_optimizer, full_optimizer = make_optimizers(model, config)
    boundary_optimizer = make_boundary_optimizer(model, config) if config.boundary_weight > 0 else None
    if payload:
        saved_optimizer = (payload.get("train_config") or {}).get("optimizer", config.optimizer)
        if saved_optimizer != config.optimizer:
            raise InputError(f"the run was trained with {saved_optimizer}; it cannot resume with {config.optimizer}")
        states = payload.get("optimizers") or {}
        if not {"encoder", "full"} <= set(states):
            raise ModelError(f"{run_dir / CHECKPOINT_NAME} holds no optimizer state (not written by `wnet train`)")
        try:
            encoder_optimizer.load_state_dict(states["encoder"])
            full_optimizer.load_state_dict(states["full"])
            # A run that trained no boundaries before starts this optimizer fresh.
            if boundary_optimizer is not None and "boundary" in states:
                boundary_optimizer.load_state_dict(states["boundary"])
        except (ValueError, KeyError) as exc:
            raise ModelError(f"{run_dir / CHECKPOINT_NAME}: optimizer state does not fit ({exc})") from exc
        if context.is_main:
            _restore_rng_state(payload.get("rng", {}))
    step_module = Algorithm1(model, config, amp=cuda and config.amp)
    if context.distributed:
        # The N-cut update leaves the decoder unused: DDP must not wait for its gradients.
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[context.device] if cuda else None, find_unused_parameters=True
        )

    checkpoint_path = run_dir / CHECKPOINT_NAME
    log_path = run_dir / LOG_NAME
    samples = _sample_images(images, config.size).to(context.device) if context.is_main else None
    if context.is_main:
        atomic_write_text(run_dir / CONFIG_NAME, json.dumps(config.to_dict(), indent=2) + "\n")
        if resume:
            _truncate_log(log_path, start)
        else:
            atomic_write_text(log_path, "")
        if on_start:
            on_start({
                "device": str(context.device), "parameters": count_parameters(model), "images": len(images),
                "in_memory": images.in_memory, "start_step": start, "world_size": context.world_size,
            })
    if config.boundary_weight > 0:
        quiet = not context.is_main
        _attach_teacher_targets(images, config, context, threads, teacher_cache, None if quiet else on_teacher,
                                (lambda _message: None) if quiet else warn)

    def save(step: int) -> None:
        if context.is_main:
            optimizers = {"encoder": encoder_optimizer.state_dict(), "full": full_optimizer.state_dict()}
            if boundary_optimizer is not None:
                optimizers["boundary"] = boundary_optimizer.state_dict()
            save_checkpoint(
                checkpoint_path, model, step=step, train_config=config.to_dict(), data=describe_data(data),
                optimizers=optimizers, rng=_rng_state(),
            )

    def due(every: int, step: int) -> bool:
        return every > 0 and step % every == 0

    def to_device(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(context.device, non_blocking=True).contiguous(memory_format=memory_format)

    stop = config.iterations if stop_after is None else min(config.iterations, start + max(1, stop_after))
    step, saved_step, metrics = start, start, {}
    # Counted from the start of this call, then from each checkpoint written.
    saved_at, save_seconds = _clock(), 60.0 * config.checkpoint_minutes
    with _deferred_interrupt() as interrupted, LineLog(log_path) if context.is_main else \
            contextlib.nullcontext() as log:
        for batch in iterate_batches(images, config, start, stop, context.rank):
            # Every process stops at the same step, even when the signal reached only one of them.
            if distributed.any_across(interrupted(), context):
                save(step)
                raise KeyboardInterrupt
            began = time.perf_counter()
            boundary_batch = None
            if isinstance(batch, BoundaryBatch):
                batch, boundary_batch = batch.images, (to_device(batch.jittered), to_device(batch.targets))
            batch = to_device(batch)
            lr, dropout = config.lr_at(step), config.dropout_at(step)
            model.set_dropout(dropout)
            torch.manual_seed(step_seed(config.seed, step, context.rank))
            losses = algorithm1_step(step_module, encoder_optimizer, full_optimizer, batch, config, step, context,
                                     boundary_optimizer=boundary_optimizer, boundary_batch=boundary_batch)
            step += 1
            metrics = {"step": step, **losses, "lr": lr, "dropout": dropout,
                       "seconds": round(time.perf_counter() - began, 4)}
            if not context.is_main:
                continue
            if on_metrics:
                on_metrics(metrics)
            if due(config.log_every, step) or step == stop:
                log.write_line(json.dumps(metrics))
            if due(config.sample_every, step) or step == stop:
                write_sample_sheet(run_dir / SAMPLES_DIR / f"step_{step:07d}.png", model, samples)
            if due(config.checkpoint_every, step) or (save_seconds > 0 and _clock() - saved_at >= save_seconds):
                save(step)
                saved_step, saved_at = step, _clock()
            if progress:
                progress(step, config.iterations)
        if step != saved_step:
            save(step)
        difference = distributed.replica_difference(model, context)
        if context.is_main and context.distributed:
            log.write_line(json.dumps({"step": step, "replica_difference": difference}))
    return TrainResult(
        run_dir=run_dir, checkpoint=checkpoint_path, step=step, iterations=config.iterations, start_step=start,
        last=metrics, parameters=count_parameters(model), device=str(context.device),
        world_size=context.world_size, replica_difference=difference,
    )


def algorithm1_step(
    step_module: nn.Module,
    encoder_optimizer: torch.optim.Optimizer,
    full_optimizer: torch.optim.Optimizer,
    batch: torch.Tensor,
    config: TrainConfig,
    step: int,
    context: distributed.DistributedContext,
    *,
    boundary_optimizer: torch.optim.Optimizer | None = None,
    boundary_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, float | None]:
    """One minibatch of Algorithm 1: an encoder update on the N-cut loss, then a W-Net update on
    reconstruction, then (with boundary training) an encoder update on the boundary loss.

    ``step_module`` is an :class:`Algorithm1` (possibly DDP-wrapped); ``batch`` (N, 3, H, W) float
    RGB 0..255 on its device. The N-cut update uses ``config.lr_at(step) * config.ncut_weight``,
    the reconstruction update ``config.lr_at(step) * config.recon_weight`` and the boundary
    update ``config.lr_at(step) * config.boundary_weight``: the weights scale the learning rates
    rather than the losses, because Adam divides every gradient by its own running magnitude,
    so a constant factor on a loss would change nothing (for SGD the two are the same thing). A
    phase whose weight is 0 is skipped (its loss reported as None). The boundary update needs
    ``boundary_optimizer`` (:func:`make_boundary_optimizer`) and ``boundary_batch``: the
    colour-jittered images (N, 3, H, W) and the targets (N, 1, H, W) in [0, 1] (see
    :class:`training.data.BoundaryBatch`). Returns the losses ``{"ncut", "recon", "boundary"}``,
    averaged over processes. Raises :class:`TrainingError` before the update whose loss is not
    finite, so that no NaN reaches the weights.
    """
    lr = config.lr_at(step)
    losses: dict[str, float | None] = {}
    phases = (("ncut", "soft N-cut", encoder_optimizer, config.ncut_weight, (batch,)),
              ("recon", "reconstruction", full_optimizer, config.recon_weight, (batch,)),
              ("boundary", "boundary", boundary_optimizer, config.boundary_weight, boundary_batch))
    for phase, name, optimizer, weight, inputs in phases:
        if weight == 0:
            losses[phase] = None
            continue
        if optimizer is None or inputs is None:
            raise ValueError(f"boundary_weight is {weight}: the boundary update needs its optimizer and batch")
        for group in optimizer.param_groups:
            group["lr"] = lr * weight
        optimizer.zero_grad(set_to_none=True)
        images, *targets = inputs
        loss = step_module(images, phase, *targets)
        value = float(distributed.mean_across(loss.detach(), context))
        _check_finite(value, name, step)
        loss.backward()
        optimizer.step()
        losses[phase] = value
    return losses


def _make_optimizer(parameters, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def make_optimizers(model: WNet, config: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Algorithm 1's two optimizers: over the encoder's parameters (N-cut), over all of them (reconstruction)."""
    return _make_optimizer(model.encoder.parameters(), config), _make_optimizer(model.parameters(), config)


def make_boundary_optimizer(model: WNet, config: TrainConfig) -> torch.optim.Optimizer:
    """The boundary update's optimizer: over the encoder's parameters, its boundary head included."""
    return _make_optimizer(model.encoder.parameters(), config)


def _attach_teacher_targets(images: TrainingImages, config: TrainConfig, context: distributed.DistributedContext,
                            threads: int | None, cache_dir, progress: Progress | None, warn: Warn | None) -> None:
    """Compute or read the teacher's target of every image and pair them (:mod:`training.teacher`).

    Each process of a distributed run computes its share of the missing targets; after a
    barrier every process pairs its images with all of them.
    """
    from training.teacher import existing, teacher_targets

    workers = threads or max(1, (os.cpu_count() or 1) // context.world_size)
    targets = teacher_targets(
        images, config.boundaries_from, mirror=config.teacher_mirror, model=config.teacher_model or None,
        cache_dir=cache_dir, workers=workers,
        shard=(context.rank, context.world_size), progress=progress, warn=warn,
    )
    distributed.barrier(context)
    images.attach_targets(existing(targets))


def load_run_config(run_dir: str | os.PathLike[str], overrides: dict | None = None) -> TrainConfig:
    """The config of the run in ``run_dir`` (from its ``last.pt``), with ``overrides`` (None entries ignored)."""
    checkpoint_path = Path(run_dir) / CHECKPOINT_NAME
    if not checkpoint_path.exists():
        raise InputError(f"nothing to resume: {checkpoint_path} does not exist")
    saved = read_checkpoint(checkpoint_path).get("train_config") or {}
    if not saved:
        raise ModelError(f"{checkpoint_path} holds no training config (it was not written by `wnet train`)")
    config = TrainConfig.from_dict(saved)
    changes = {name: value for name, value in (overrides or {}).items() if value is not None}
    changes = with_boundary_defaults(changes, config)
    return TrainConfig.from_dict(changes, base=config) if changes else config
