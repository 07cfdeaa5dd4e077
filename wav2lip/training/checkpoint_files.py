"""Training checkpoint files: naming, writing, reading, exact resume and where a run starts.

Checkpoints use the official layout ``{'state_dict', 'optimizer', 'global_step', 'global_epoch'}``
(so ``wav2lip.loading`` and other Wav2Lip tools read them) plus ``'config'`` (the resolved training
config) and ``'train_state'`` (sync-loss weight, AMP scaler state): plain str/int/float/bool/list
values only, so every file loads with ``torch.load(weights_only=True)``. Only rank 0 writes files;
a file appears under its final name only when complete.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.checkpoints import canonicalize_state_dict, load_checkpoint
from pipeline.core.errors import (
    WeightsError,
)
from wav2lip.loading import check_model
from wav2lip.training.distributed import unwrap

CHECKPOINT_PATTERN = re.compile(r"^(?P<prefix>.*)checkpoint_step(?P<step>\d{9})\.pth$")


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
