"""Device choice and multi-process training under ``torchrun`` (DistributedDataParallel).

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; with more than one process the
trainer joins the process group (gloo on CPU, nccl on CUDA), each process draws its own
batches, DistributedDataParallel averages the gradients, and only rank 0 writes files and
reports progress.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from wnetcli.errors import InputError, TrainingError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process runs: ``world_size`` processes, this one is ``rank`` on ``device``."""

    world_size: int
    rank: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and reports progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def resolve_device(request: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"`` -> a torch device."""
    if request not in DEVICES:
        raise InputError(f"device must be one of {', '.join(DEVICES)}, got {request!r}")
    cuda = torch.cuda.is_available()
    if request == "cuda" and not cuda:
        raise InputError("--device cuda was asked for, but PyTorch sees no CUDA GPU (try --device cpu)")
    if request == "cpu" or not cuda:
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise TrainingError(f"environment variable {name}={value!r} is not an integer") from exc


def setup(device_request: str) -> DistributedContext:
    """Read torchrun's environment, pick the device and, with several processes, join the group."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = resolve_device(device_request, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(world_size, rank, local_rank, device)


def teardown(context: DistributedContext) -> None:
    """Leave the process group (if this process joined one)."""
    if context.distributed and dist.is_initialized():
        # Without a barrier, a rank that finishes first tears down gloo's pairs while the other
        # is still in its last collective, and gloo aborts that process (seen once in ~10 runs).
        dist.barrier()
        dist.destroy_process_group()


def mean_across(values: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Average a tensor over the processes (identity with one process)."""
    if not context.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / context.world_size


def barrier(context: DistributedContext) -> None:
    """Wait until every process gets here (nothing with one process)."""
    if context.distributed:
        dist.barrier()


def any_across(flag: bool, context: DistributedContext) -> bool:
    """True on every process if ``flag`` is true on any (``flag`` itself with one process).

    A stop signal (Ctrl-C, SIGTERM) reaches the processes at slightly different moments; one
    that stopped alone would leave the others waiting in their next collective for good.
    """
    if not context.distributed:
        return flag
    value = torch.tensor(1 if flag else 0, dtype=torch.int32, device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value)


def replica_difference(model: torch.nn.Module, context: DistributedContext) -> float:
    """Largest absolute difference between this process's parameters and rank 0's (0.0 alone).

    DDP keeps the replicas' parameters equal by averaging gradients; a non-zero value means they
    drifted apart, and the checkpoint (rank 0's) would not be what every process trained.
    Buffers (batch-norm statistics) legitimately differ after each process's last forward pass,
    since DDP broadcasts rank 0's at the start of every forward: they are synchronised here
    from rank 0 instead of compared.
    """
    if not context.distributed:
        return 0.0
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
    worst = torch.zeros((), dtype=torch.float64, device=context.device)
    for parameter in model.parameters():
        reference = parameter.detach().clone()
        dist.broadcast(reference, src=0)
        worst = torch.maximum(worst, (parameter.detach() - reference).abs().max().double())
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return float(worst)
