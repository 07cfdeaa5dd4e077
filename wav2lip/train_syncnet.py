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
from dataclasses import dataclass

import torch
from tqdm import tqdm

from wav2lip import trainer_common as tc
from wav2lip.data import SyncNetDataset, epoch_of, read_filelist
from wav2lip.loading import SYNCNET
from wav2lip.models import SyncNet
from wav2lip.train_config import SyncNetTrainConfig, config_to_plain, load_train_config

CHECKPOINT_WHAT = "lip-sync expert training checkpoint"


@dataclass
class SyncNetRun:
    """The model (DDP-wrapped when distributed), its optimizer, AMP scaler and the step counters."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    global_step: int = 0
    global_epoch: int = 0


def build_run(config: SyncNetTrainConfig, ctx: tc.DistContext) -> SyncNetRun:
    """A fresh SyncNet + Adam, then the state of the resume or start checkpoint when there is one."""
    model = SyncNet().to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=tuple(config.betas))
    run = SyncNetRun(model, optimizer, tc.make_scaler(ctx.device, config.amp))
    start = tc.start_point(config.checkpoint_dir, config.checkpoint, config.resume, config.weights_only_init)
    if start.path is not None:
        raw = tc.read_checkpoint(start.path, CHECKPOINT_WHAT)
        tc.restore_model(model, raw, SYNCNET, start.path)
        if not start.weights_only:
            _restore_progress(run, raw, start.path, ctx)
    run.model = tc.wrap_ddp(model, ctx)
    return run


def _restore_progress(run: SyncNetRun, raw: dict, path, ctx: tc.DistContext) -> None:
    if tc.restore_optimizer(run.optimizer, raw, path):
        tc.move_optimizer_state(run.optimizer, ctx.device)
    run.global_step = int(raw.get("global_step", 0))
    run.global_epoch = int(raw.get("global_epoch", 0))
    scaler_state = (raw.get("train_state") or {}).get("scaler")
    if scaler_state and run.scaler.is_enabled():
        run.scaler.load_state_dict(scaler_state)


def train_step(run: SyncNetRun, batch, device: torch.device, amp: bool) -> float:
    """One optimisation step on ``(faces (B, 15, 48, 96), mel (B, 1, 80, 16), label (B, 1))``; the loss."""
    faces, mel, label = (t.to(device, non_blocking=True) for t in batch)
    run.model.train()
    run.optimizer.zero_grad(set_to_none=True)
    with tc.autocast(device, amp):
        audio_emb, face_emb = run.model(mel, faces)
    loss = tc.cosine_loss(audio_emb, face_emb, label)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return loss.item()


@torch.no_grad()
def evaluate(
    run: SyncNetRun, dataset: SyncNetDataset, config: SyncNetTrainConfig, ctx: tc.DistContext
) -> float:
    """Mean expert loss over ``eval_steps`` validation batches (None: one pass over the list), averaged
    over all processes. The validation stream is the same at every evaluation."""
    per_batch = config.batch_size * ctx.world_size
    n_batches = config.eval_steps or max(1, math.ceil(len(dataset) / per_batch))
    loader = tc.make_loader(dataset, config.batch_size, 0, ctx, config.data.num_workers)
    run.model.eval()
    losses = []
    for _ in range(n_batches):
        faces, mel, label = (t.to(ctx.device) for t in next(loader))
        with tc.autocast(ctx.device, config.amp):
            audio_emb, face_emb = run.model(mel, faces)
        losses.append(tc.cosine_loss(audio_emb, face_emb, label).item())
    run.model.train()
    return tc.mean_across_ranks(sum(losses) / len(losses), ctx)


def train(config: SyncNetTrainConfig, ctx: tc.DistContext | None = None) -> tc.TrainResult:
    """Train until ``config.max_steps`` (or forever). Rank 0 writes checkpoints and logs."""
    ctx = ctx or tc.init_distributed(config.device)
    torch.manual_seed(config.seed)
    train_set = SyncNetDataset(_utterances(config, "train"), config.data, config.seed)
    val_set = SyncNetDataset(_utterances(config, "val"), config.data, config.seed + 1)
    run = build_run(config, ctx)
    loader = tc.make_loader(train_set, config.batch_size, run.global_step, ctx, config.data.num_workers)
    logger = tc.MetricLogger(config.checkpoint_dir, ctx.is_main)
    result = tc.TrainResult(run.global_step, run.global_epoch, [], [], [])
    bar = tqdm(
        total=config.max_steps,
        initial=run.global_step,
        desc="SyncNet",
        disable=config.quiet or not ctx.is_main,
    )
    try:
        while tc.steps_remaining(run.global_step, config.max_steps):
            loss = train_step(run, next(loader), ctx.device, config.amp)
            run.global_step += 1
            run.global_epoch = epoch_of(run.global_step, config.batch_size, ctx.world_size, len(train_set))
            _after_step(run, loss, config, ctx, val_set, logger, result)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
    finally:
        bar.close()
        logger.close()
    result.global_step, result.global_epoch = run.global_step, run.global_epoch
    return result


def _after_step(run, loss, config, ctx, val_set, logger, result) -> None:
    step = run.global_step
    result.history.append({"step": step, "loss": loss})
    if step % config.log_interval == 0:
        logger.scalars({"train/loss": loss, "train/lr": run.optimizer.param_groups[0]["lr"]}, step)
    if step % config.eval_interval == 0:
        val_loss = evaluate(run, val_set, config, ctx)
        result.evaluations.append({"step": step, "loss": val_loss})
        logger.scalars({"val/loss": val_loss}, step)
    if ctx.is_main and tc.should_checkpoint(step, config.checkpoint_interval, config.max_steps):
        train_state = {"scaler": run.scaler.state_dict(), "seed": config.seed}
        path = tc.checkpoint_path(config.checkpoint_dir, step)
        tc.save_checkpoint(
            path, run.model, run.optimizer, step, run.global_epoch, config_to_plain(config), train_state
        )
        result.checkpoints.append(path)


def _utterances(config: SyncNetTrainConfig, split: str):
    return read_filelist(config.data.filelist(split), config.data.data_root)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wav2lip.train_syncnet", description=__doc__.split("\n")[0]
    )
    tc.add_common_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return tc.run_cli(lambda: _run(args), quiet=bool(args.quiet))


def _run(args: argparse.Namespace) -> None:
    config = load_train_config(SyncNetTrainConfig, args.config, tc.common_overrides(args))
    ctx = tc.init_distributed(config.device)
    try:
        result = train(config, ctx)
    finally:
        tc.shutdown_distributed(ctx)
    if ctx.is_main and not config.quiet:
        print(f"stopped at step {result.global_step}; checkpoints in {config.checkpoint_dir}")


if __name__ == "__main__":
    sys.exit(main())
