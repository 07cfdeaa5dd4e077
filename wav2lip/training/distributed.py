"""Devices and processes of a training run: torchrun / DDP setup, reductions across ranks."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from pipeline.core.devices import choose_device


@dataclass(frozen=True)
class DistContext:
    """This process's place in a (possibly single-process) run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str) -> DistContext:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL on CUDA, gloo on the CPU).

    On GPUs each process uses :func:`process_gpu` (``cuda:N`` given explicitly is kept). Without torchrun
    this is a one-process context.
    """
    device = torch.device(choose_device(device_name))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", process_gpu(local, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world, local, device)


def process_gpu(local_rank: int, visible_gpus: int) -> int:
    """The GPU index of the process with ``local_rank``: ``LOCAL_RANK % visible GPUs``. One GPU per
    process when the launcher shows all of a node's GPUs (torchrun), and ``cuda:0`` when it shows each
    process only its own (SLURM ``--gpus-per-task=1``, where LOCAL_RANK can exceed 0)."""
    return local_rank % max(1, visible_gpus)


def shutdown_distributed(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, ctx: DistContext) -> nn.Module:
    """``model`` in DistributedDataParallel for multi-process runs, unchanged otherwise."""
    if not ctx.distributed:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def mean_across_ranks(value: float, ctx: DistContext) -> float:
    """The mean of ``value`` over all processes (identical on every rank)."""
    if not ctx.distributed:
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=_reduce_device(ctx))
    dist.all_reduce(tensor)
    return float(tensor.item() / ctx.world_size)


def _reduce_device(ctx: DistContext) -> torch.device:
    return ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
