"""What both training scripts share: device and torchrun/DDP setup, data loaders, checkpoint files,
exact resume, mixed precision, the cosine sync loss and the shared command-line flags (the step loop
is :mod:`wav2lip.train_loop`, the logs :mod:`wav2lip.train_log`).

Checkpoints use the official layout ``{'state_dict', 'optimizer', 'global_step', 'global_epoch'}``
(so ``wav2lip.loading`` and other Wav2Lip tools read them) plus ``'config'`` (the resolved training
config) and ``'train_state'`` (sync-loss weight, AMP scaler state): plain str/int/float/bool/list
values only, so every file loads with ``torch.load(weights_only=True)``. Only rank 0 writes files;
a file appears under its final name only when complete.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pipeline.checkpoints import canonicalize_state_dict, load_checkpoint
from pipeline.devices import float16_autocast
from pipeline.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    EngineUnavailableError,
    LipSyncError,
    WeightsError,
)
from wav2lip.data import ResumableSampler
from wav2lip.loading import check_model

CHECKPOINT_PATTERN = re.compile(r"^(?P<prefix>.*)checkpoint_step(?P<step>\d{9})\.pth$")


# --- devices and processes -----------------------------------------------------------------------------


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


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU raises EngineUnavailableError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EngineUnavailableError("device cuda requested but no CUDA GPU is usable; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def init_distributed(device_name: str) -> DistContext:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL on CUDA, gloo on the CPU).

    Each process uses ``cuda:LOCAL_RANK`` on GPUs. Without torchrun this is a one-process context.
    """
    device = resolve_device(device_name)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world, local, device)


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
    dataset: Dataset, batch_size: int, eval_steps: int | None, ctx: DistContext, num_workers: int
) -> tuple[int, Iterator[Any]]:
    """``(number of batches, batch iterator)`` of one evaluation: ``eval_steps`` batches, or with None
    enough for one pass over ``dataset`` across all processes. Every evaluation sees the same stream."""
    n_batches = eval_steps or max(1, math.ceil(len(dataset) / (batch_size * ctx.world_size)))
    return n_batches, make_loader(dataset, batch_size, 0, ctx, num_workers)


# --- mixed precision and losses ------------------------------------------------------------------------


autocast = float16_autocast  # ``amp`` is CUDA only: a no-op context on the CPU


def make_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A loss scaler that is active only on CUDA with ``enabled``; elsewhere it passes losses and steps
    through unchanged (``scale`` returns the loss, ``step`` calls ``optimizer.step``)."""
    return torch.amp.GradScaler("cuda", enabled=enabled and device.type == "cuda")


def cosine_loss(audio_emb: torch.Tensor, face_emb: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The official expert loss: BCE of the cosine similarity of ``(B, 512)`` embeddings vs ``(B, 1)``
    labels in {0, 1}. Computed in float32 outside autocast; the similarity is clamped to [0, 1] (the
    embeddings are non-negative, so only rounding can leave that range)."""
    with torch.autocast(audio_emb.device.type, enabled=False):
        sim = nn.functional.cosine_similarity(audio_emb.float(), face_emb.float())
        return nn.functional.binary_cross_entropy(sim.clamp(0.0, 1.0).unsqueeze(1), label.float())


def bce(prob: torch.Tensor, target_value: float) -> torch.Tensor:
    """Binary cross-entropy of probabilities ``(N, 1)`` against a constant target, in float32."""
    with torch.autocast(prob.device.type, enabled=False):
        prob = prob.float()
        return nn.functional.binary_cross_entropy(prob, torch.full_like(prob, float(target_value)))


# --- checkpoints ---------------------------------------------------------------------------------------


def checkpoint_path(checkpoint_dir: str | Path, step: int, prefix: str = "") -> Path:
    """``<dir>/<prefix>checkpoint_step000003000.pth`` (the official naming)."""
    return Path(checkpoint_dir) / f"{prefix}checkpoint_step{step:09d}.pth"


def latest_checkpoint(checkpoint_dir: str | Path, prefix: str = "") -> Path | None:
    """The checkpoint with the highest step named ``<prefix>checkpoint_step<9 digits>.pth``, or None."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    found = []
    for path in folder.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and match["prefix"] == prefix:
            found.append((int(match["step"]), path))
    return max(found)[1] if found else None


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    epoch: int,
    config: Mapping[str, Any],
    train_state: Mapping[str, Any],
) -> Path:
    """Write the official layout plus ``config`` and ``train_state`` to ``path`` atomically."""
    payload = {
        "state_dict": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "global_step": int(step),
        "global_epoch": int(epoch),
        "config": dict(config),
        "train_state": dict(train_state),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save(payload, partial)
    os.replace(partial, path)
    return path


def read_checkpoint(path: str | Path, what: str) -> dict[str, Any]:
    """The raw checkpoint dict (``weights_only=True``); WeightsError when it has no ``state_dict``."""
    raw = load_checkpoint(path, what)
    if not isinstance(raw.get("state_dict"), Mapping) and not any(
        isinstance(v, torch.Tensor) for v in raw.values()
    ):
        raise WeightsError(f"{what} file {path} has no 'state_dict'")
    return raw


def restore_model(model: nn.Module, raw: Mapping[str, Any], kind: str, path: str | Path) -> None:
    """Load the weights of ``raw`` into ``model`` strictly after checking it holds network ``kind``."""
    state = canonicalize_state_dict(raw)
    check_model(state, kind, path)
    unwrap(model).load_state_dict(state, strict=True)


def restore_optimizer(optimizer: torch.optim.Optimizer, raw: Mapping[str, Any], path: str | Path) -> bool:
    """Load ``raw['optimizer']`` (learning rates and moments included) when present; True if loaded."""
    state = raw.get("optimizer")
    if not state:
        return False
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError) as exc:
        raise WeightsError(
            f"the optimizer state in {path} does not fit this model ({exc}); set weights_only_init: true "
            "to start a fresh optimizer from its weights"
        ) from exc
    return True


def move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move loaded optimizer moments onto ``device`` (Adam's ``step`` counters stay where they are)."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device)


def restore_training_state(
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    raw: Mapping[str, Any],
    path: str | Path,
    device: torch.device,
) -> dict[str, Any]:
    """Load the optimizer state of checkpoint ``raw`` (moved to ``device``) and, when this run uses mixed
    precision, its AMP scaler state. Returns ``raw['train_state']`` (``{}`` when absent)."""
    if restore_optimizer(optimizer, raw, path):
        move_optimizer_state(optimizer, device)
    state = dict(raw.get("train_state") or {})
    if state.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    return state


def restore_counters(raw: Mapping[str, Any]) -> tuple[int, int]:
    """``(global_step, global_epoch)`` of a checkpoint (0 where missing)."""
    return int(raw.get("global_step", 0)), int(raw.get("global_epoch", 0))


# --- runs ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartPoint:
    """Where a run starts: a checkpoint to read (or None) and whether to take only its weights."""

    path: Path | None
    weights_only: bool
    resumed: bool


def start_point(
    checkpoint_dir: str, checkpoint: str | None, resume: bool, weights_only: bool, prefix: str = ""
) -> StartPoint:
    """Resume from the newest ``<prefix>checkpoint_step*.pth`` in ``checkpoint_dir`` when ``resume`` and one
    exists; else start from ``checkpoint`` (whole state, or weights only); else from scratch."""
    latest = latest_checkpoint(checkpoint_dir, prefix) if resume else None
    if latest is not None:
        if checkpoint:
            warnings.warn(
                f"resuming from {latest}; checkpoint {checkpoint} is not used (--no-resume to start from it)",
                stacklevel=2,
            )
        return StartPoint(latest, False, True)
    if checkpoint:
        return StartPoint(Path(checkpoint), weights_only, False)
    return StartPoint(None, False, False)


# --- command line --------------------------------------------------------------------------------------


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Flags both trainers share; each overrides one config key (see the YAML for all keys)."""
    parser.add_argument("--config", metavar="FILE", help="training YAML (default configs/train_*.yaml)")
    parser.add_argument("--data-root", metavar="DIR", help="preprocessed data (data.data_root)")
    parser.add_argument("--checkpoint-dir", metavar="DIR", help="where checkpoints and logs go")
    parser.add_argument("--checkpoint", metavar="FILE", help="start from this checkpoint")
    parser.add_argument("--max-steps", type=int, metavar="N", help="stop after global step N")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    parser.add_argument("--no-resume", action="store_true", help="ignore checkpoints in --checkpoint-dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def common_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides from the shared flags (None where a flag was not given)."""
    return {
        "data": {"data_root": args.data_root},
        "checkpoint_dir": args.checkpoint_dir,
        "checkpoint": args.checkpoint,
        "max_steps": args.max_steps,
        "device": args.device,
        "resume": False if args.no_resume else None,
        "quiet": True if args.quiet else None,
    }


def run_cli(action: Callable[[], None], quiet: bool = False) -> int:
    """Run ``action``; return the exit code (one-line message on stderr for a LipSyncError)."""
    try:
        action()
    except LipSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if not quiet:
            print("interrupted; resume with the same command", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK
