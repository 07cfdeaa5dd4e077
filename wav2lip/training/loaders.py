"""Training and evaluation data loaders that continue the sample stream exactly on resume."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset

from wav2lip.training.data import ResumableSampler
from wav2lip.training.distributed import DistContext


def make_loader(
    dataset: Dataset, batch_size: int, start_batch: int, ctx: DistContext, num_workers: int
) -> Iterator[Any]:
    """An endless iterator of collated batches continuing the sample stream at ``start_batch``."""
    sampler = ResumableSampler(start_batch, batch_size, ctx.rank, ctx.world_size)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=num_workers > 0,
    )
    return iter(loader)


def eval_loader(
    dataset: Dataset,
    batch_size: int,
    eval_steps: int | None,
    ctx: DistContext,
    num_workers: int,
    at_most_one_pass: bool = False,
) -> tuple[int, Iterator[Any]]:
    """``(number of batches, batch iterator)`` of one evaluation: ``eval_steps`` batches, or with None
    enough for one pass over ``dataset`` across all processes; with ``at_most_one_pass`` the smaller of
    the two (the GAN recipe). Every evaluation sees the same stream."""
    one_pass = max(1, math.ceil(len(dataset) / (batch_size * ctx.world_size)))
    n_batches = min(eval_steps, one_pass) if (eval_steps and at_most_one_pass) else (eval_steps or one_pass)
    return n_batches, make_loader(dataset, batch_size, 0, ctx, num_workers)
