"""Train the colour lip-sync expert (SyncNet_color) on LRS2-layout data, as ``color_syncnet_train.py`` does.

``python -m wav2lip.train_syncnet --config configs/train_syncnet.yaml [--data-root ...]``; multi-GPU
or multi-node with ``torchrun --nproc_per_node N -m wav2lip.train_syncnet ...``. Loss: binary
cross-entropy of the cosine similarity of the audio and face embeddings against the in-sync label;
Adam at 1e-4, batch 64, checkpoint and evaluation every 10000 steps (the official values).
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from dataclasses import dataclass, field

import torch

from wav2lip.loading import SYNCNET
from wav2lip.models import SyncNet
from wav2lip.training import checkpoint_files, cli_flags, distributed, loaders, loop, objectives
from wav2lip.training.config import SyncNetTrainConfig, config_to_plain, global_batch
from wav2lip.training.data import SyncNetDataset

CHECKPOINT_WHAT = "lip-sync expert training checkpoint"
CHANCE_LOSS = math.log(2.0)  # BCE when every similarity is 0.5: the expert has learnt nothing
STUCK_TOLERANCE = 0.02  # a train loss within this of ln 2 counts as "stuck at chance"


class StuckLossWatch:
    """Counts consecutive steps whose train loss is within ``STUCK_TOLERANCE`` of ln 2 and warns once
    when the count reaches ``steps`` (the expert "stuck at 0.69", Rudrabha/Wav2Lip #240, #258, #296)."""

    def __init__(self, steps: int) -> None:
        self.steps, self.count, self.warned = steps, 0, False

    def update(self, loss: float, step: int) -> bool:
        """Record one step's loss; True (and a UserWarning) the first time the run counts as stuck."""
        self.count = self.count + 1 if abs(loss - CHANCE_LOSS) < STUCK_TOLERANCE else 0
        if self.warned or self.count < self.steps:
            return False
        self.warned = True
        warnings.warn(
            f"SyncNet train loss has stayed within {STUCK_TOLERANCE} of ln 2 ({CHANCE_LOSS:.3f}) for "
            f"{self.count} steps (step {step}): the expert is not learning. Usual causes: audio and video "
            "out of sync in the data (an offset; check a few clips with python -m wav2lip.evaluate), bad "
            "face crops (look at the preprocessed <n>.jpg frames), or the learning rate (try lowering lr)",
            stacklevel=2,
        )
        return True


@dataclass
class SyncNetRun:
    """The model (DDP-wrapped when distributed), its optimizer, AMP scaler and the step counters."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    global_step: int = 0
    global_epoch: int = 0
    stuck: StuckLossWatch = field(default_factory=lambda: StuckLossWatch(2000))


def build_run(config: SyncNetTrainConfig, ctx: distributed.DistContext) -> SyncNetRun:
    """A fresh SyncNet + Adam, then the state of the resume or start checkpoint when there is one."""
    model = SyncNet().to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=tuple(config.betas))
    run = SyncNetRun(model, optimizer, objectives.make_scaler(ctx.device, config.amp))
    run.stuck = StuckLossWatch(config.stuck_loss_steps)
    start = checkpoint_files.start_point(
        config.checkpoint_dir, config.checkpoint, config.resume, config.weights_only_init
    )
    if start.path is not None:
        raw = checkpoint_files.read_checkpoint(start.path, CHECKPOINT_WHAT)
        checkpoint_files.restore_model(model, raw, SYNCNET, start.path)
        if not start.weights_only:
            _restore_progress(run, raw, start.path, ctx)
    run.model = distributed.wrap_ddp(model, ctx)
    return run


def _restore_progress(run: SyncNetRun, raw: dict, path, ctx: distributed.DistContext) -> None:
    checkpoint_files.restore_training_state(run.optimizer, run.scaler, raw, path, ctx.device)
    run.global_step, run.global_epoch = checkpoint_files.restore_counters(raw)


def batch_accuracy(audio_emb: torch.Tensor, face_emb: torch.Tensor, label: torch.Tensor) -> float:
    """Fraction of the batch the expert gets right: cosine similarity above 0.5 iff the label is 1."""
    sim = torch.nn.functional.cosine_similarity(audio_emb.float(), face_emb.float())
    return ((sim > 0.5) == (label.view(-1) > 0.5)).float().mean().item()


def train_step(run: SyncNetRun, batch, device: torch.device, amp: bool) -> tuple[float, float]:
    """One optimisation step on ``(faces (B, 15, 48, 96), mel (B, 1, 80, 16), label (B, 1))``;
    ``(loss, batch accuracy)``."""
    faces, mel, label = (t.to(device, non_blocking=True) for t in batch)
    run.model.train()
    run.optimizer.zero_grad(set_to_none=True)
    with objectives.autocast(device, amp):
        audio_emb, face_emb = run.model(mel, faces)
    loss = objectives.cosine_loss(audio_emb, face_emb, label)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return loss.item(), batch_accuracy(audio_emb.detach(), face_emb.detach(), label)


@torch.no_grad()
def evaluate(
    run: SyncNetRun, dataset: SyncNetDataset, config: SyncNetTrainConfig, ctx: distributed.DistContext
) -> float:
    """Mean expert loss over ``eval_steps`` validation batches (None: one pass over the list), averaged
    over all processes. The validation stream is the same at every evaluation."""
    n_batches, loader = loaders.eval_loader(
        dataset, global_batch(config, ctx.world_size)[1], config.eval_steps, ctx, config.data.num_workers
    )
    run.model.eval()
    losses = []
    for _ in range(n_batches):
        faces, mel, label = (t.to(ctx.device) for t in next(loader))
        with objectives.autocast(ctx.device, config.amp):
            audio_emb, face_emb = run.model(mel, faces)
        losses.append(objectives.cosine_loss(audio_emb, face_emb, label).item())
    run.model.train()
    return distributed.mean_across_ranks(sum(losses) / len(losses), ctx)


def train(config: SyncNetTrainConfig, ctx: distributed.DistContext | None = None) -> loop.TrainResult:
    """Train until ``config.max_steps`` (or forever). Rank 0 writes checkpoints and logs."""
    return loop.train(config, ctx, SyncNetDataset, build_run, HOOKS)


def _step(session: loop.Session, batch) -> tuple[dict[str, float], None]:
    loss, accuracy = train_step(session.run, batch, session.ctx.device, session.config.amp)
    if session.ctx.is_main:
        session.run.stuck.update(loss, session.run.global_step + 1)
    scales = objectives.scaler_scales({"loss_scale": session.run.scaler})
    return {"loss": loss, "accuracy": accuracy, **scales}, None


def _evaluate_and_save(session: loop.Session, _outputs) -> None:
    run, config, ctx = session.run, session.config, session.ctx
    step = run.global_step
    if step % config.eval_interval == 0:
        val_loss = evaluate(run, session.val_set, config, ctx)
        session.result.evaluations.append({"step": step, "loss": val_loss})
        session.logger.scalars({"val/loss": val_loss}, step)
    if ctx.is_main and loop.should_checkpoint(step, config.checkpoint_interval, config.max_steps):
        train_state = {"scaler": run.scaler.state_dict(), "seed": config.seed}
        path = checkpoint_files.checkpoint_path(config.checkpoint_dir, step)
        checkpoint_files.save_checkpoint(
            path, run.model, run.optimizer, step, run.global_epoch, config_to_plain(config), train_state
        )
        session.result.checkpoints.append(path)


HOOKS = loop.LoopHooks("SyncNet", _step, _evaluate_and_save, postfix=("loss", "accuracy"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wav2lip.train_syncnet", description=__doc__.split("\n")[0]
    )
    cli_flags.add_common_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    return loop.cli_main(build_parser(), SyncNetTrainConfig, train, argv)


if __name__ == "__main__":
    sys.exit(main())
