"""Train the Wav2Lip generator against the frozen lip-sync expert, optionally with the visual-quality GAN.

``python -m wav2lip.train --config configs/train_wav2lip.yaml [--gan]``; multi-GPU or multi-node
with ``torchrun --nproc_per_node N -m wav2lip.train ...``. The official recipe (``wav2lip_train.py``,
with ``--gan`` ``hq_wav2lip_train.py``): L1 reconstruction of the masked lower half, the expert's
sync loss with weight 0 until the validation sync loss falls below 0.75 and 0.03 afterwards, with the
GAN a perceptual loss of weight 0.07 from the discriminator, which learns real vs generated faces.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.core.weight_store import resolve
from wav2lip.face_input import postprocess_faces, syncnet_face_input
from wav2lip.loading import DISCRIMINATOR, GENERATOR, load_syncnet
from wav2lip.models import SyncNet, Wav2Lip, Wav2LipDiscQual
from wav2lip.training import checkpoint_files, cli_flags, distributed, loaders, loop, objectives
from wav2lip.training.config import Wav2LipTrainConfig, config_to_plain, final_syncnet_wt, global_batch
from wav2lip.training.data import Wav2LipDataset

DISC_PREFIX = "disc_"  # official name of the discriminator's checkpoints: disc_checkpoint_step*.pth
SAMPLE_CLIPS = 2  # clips of a batch drawn into the sample grid


@dataclass
class Wav2LipRun:
    """Generator (and with the GAN the discriminator), their optimizers and scalers, the frozen expert,
    the current sync-loss weight and the step counters."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    expert: SyncNet
    syncnet_wt: float
    disc: nn.Module | None = None
    disc_optimizer: torch.optim.Optimizer | None = None
    disc_scaler: torch.amp.GradScaler | None = None
    global_step: int = 0
    global_epoch: int = 0


def load_expert(config: Wav2LipTrainConfig, device: torch.device) -> SyncNet:
    """The frozen expert; in training mode (batch statistics) when ``expert_batch_stats``, as the
    official scripts never switch it to eval mode."""
    expert = load_syncnet(resolve("lipsync_expert", config.syncnet_checkpoint), device)
    for param in expert.parameters():
        param.requires_grad_(False)
    return expert.train(config.expert_batch_stats)


def build_run(config: Wav2LipTrainConfig, ctx: distributed.DistContext) -> Wav2LipRun:
    """Models and optimizers, restored from the resume / start checkpoints when there are any."""
    betas = tuple(config.gan_betas if config.gan else config.betas)
    model = Wav2Lip().to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=betas)
    run = Wav2LipRun(
        model, optimizer, objectives.make_scaler(ctx.device, config.amp), load_expert(config, ctx.device), 0.0
    )
    start = checkpoint_files.start_point(
        config.checkpoint_dir, config.checkpoint, config.resume, config.weights_only_init
    )
    run.syncnet_wt = config.syncnet_wt_initial
    if start.path is not None:
        raw = checkpoint_files.read_checkpoint(start.path, "Wav2Lip generator training checkpoint")
        checkpoint_files.restore_model(model, raw, GENERATOR, start.path)
        if not start.weights_only:
            _restore_progress(run, raw, start.path, ctx, config)
    if config.gan:
        _build_disc(run, config, ctx, start)
    run.model = distributed.wrap_ddp(model, ctx)
    return run


def _restore_progress(run: Wav2LipRun, raw: dict, path, ctx: distributed.DistContext, config) -> None:
    state = checkpoint_files.restore_training_state(run.optimizer, run.scaler, raw, path, ctx.device)
    run.global_step, run.global_epoch = checkpoint_files.restore_counters(raw)
    run.syncnet_wt = float(state.get("syncnet_wt", config.syncnet_wt_initial))


def _build_disc(
    run: Wav2LipRun,
    config: Wav2LipTrainConfig,
    ctx: distributed.DistContext,
    start: checkpoint_files.StartPoint,
) -> None:
    disc = Wav2LipDiscQual().to(ctx.device)
    run.disc_optimizer = torch.optim.Adam(disc.parameters(), lr=config.disc_lr, betas=tuple(config.gan_betas))
    run.disc_scaler = objectives.make_scaler(ctx.device, config.amp)
    resumed = checkpoint_files.checkpoint_path(config.checkpoint_dir, run.global_step, DISC_PREFIX)
    path = resumed if start.resumed and resumed.is_file() else config.disc_checkpoint
    if path:
        raw = checkpoint_files.read_checkpoint(path, "visual-quality discriminator checkpoint")
        checkpoint_files.restore_model(disc, raw, DISCRIMINATOR, path)
        if path == resumed or not config.weights_only_init:
            checkpoint_files.restore_training_state(
                run.disc_optimizer, run.disc_scaler, raw, path, ctx.device
            )
    run.disc = distributed.wrap_ddp(disc, ctx)


# --- one step ------------------------------------------------------------------------------------------


def sync_loss(expert: SyncNet, mel: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """The expert's loss that ``generated (B, 3, 5, 96, 96)`` is in sync with ``mel (B, 1, 80, 16)``."""
    audio_emb, face_emb = expert(mel, syncnet_face_input(generated))
    return objectives.cosine_loss(audio_emb, face_emb, torch.ones(len(generated), 1, device=generated.device))


def generator_losses(run: Wav2LipRun, batch, config: Wav2LipTrainConfig, device, training: bool) -> tuple:
    """``(generated, total loss, {name: value})`` for one batch ``(x, indiv_mels, mel, gt)``."""
    x, indiv_mels, mel, gt = (t.to(device, non_blocking=True) for t in batch)
    with objectives.autocast(device, config.amp):
        generated = run.model(indiv_mels, x)
        l1 = nn.functional.l1_loss(generated.float(), gt)
        sync = sync_loss(run.expert, mel, generated) if (run.syncnet_wt > 0 or not training) else None
        percep = _perceptual_loss(run, generated) if run.disc is not None else None
    disc_wt = config.disc_wt if run.disc is not None else 0.0
    total = (1.0 - run.syncnet_wt - disc_wt) * l1
    if sync is not None and run.syncnet_wt > 0:
        total = total + run.syncnet_wt * sync
    if percep is not None and disc_wt > 0:
        total = total + disc_wt * percep
    values = {"l1": l1.item(), "sync": sync.item() if sync is not None else 0.0}
    if percep is not None:
        values["perceptual"] = percep.item()
    return generated, total, values


def _perceptual_loss(run: Wav2LipRun, generated: torch.Tensor) -> torch.Tensor:
    # The discriminator's gradients from this loss are discarded, so DDP need not synchronise them.
    no_sync = run.disc.no_sync() if isinstance(run.disc, nn.parallel.DistributedDataParallel) else None
    with no_sync or contextlib.nullcontext():
        return objectives.bce_logits(run.disc(generated, logits=True), 1.0)


def train_step(run: Wav2LipRun, batch, config: Wav2LipTrainConfig, device: torch.device) -> tuple:
    """One generator step (and with the GAN one discriminator step, official order).

    Returns ``({loss name: value}, generated faces (B, 3, 5, 96, 96) detached)``.
    """
    run.model.train()
    if run.disc is not None:
        run.disc.train()
        run.disc_optimizer.zero_grad(set_to_none=True)
    run.optimizer.zero_grad(set_to_none=True)
    generated, total, values = generator_losses(run, batch, config, device, training=True)
    run.scaler.scale(total).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.disc is not None:
        values.update(_disc_step(run, generated.detach(), batch[3].to(device), config, device))
    values["total"] = total.item()
    values.update(objectives.scaler_scales({"loss_scale": run.scaler, "disc_loss_scale": run.disc_scaler}))
    return values, generated.detach()


def _disc_step(run: Wav2LipRun, generated, gt, config, device) -> dict[str, float]:
    run.disc_optimizer.zero_grad(set_to_none=True)
    with objectives.autocast(device, config.amp):
        real = objectives.bce_logits(run.disc(gt, logits=True), 1.0)
    run.disc_scaler.scale(real).backward()
    with objectives.autocast(device, config.amp):
        fake = objectives.bce_logits(run.disc(generated, logits=True), 0.0)
    run.disc_scaler.scale(fake).backward()
    run.disc_scaler.step(run.disc_optimizer)
    run.disc_scaler.update()
    return {"disc_real": real.item(), "disc_fake": fake.item()}


@torch.no_grad()
def evaluate(run: Wav2LipRun, dataset: Wav2LipDataset, config: Wav2LipTrainConfig, ctx) -> dict[str, float]:
    """Mean L1 and sync loss (and GAN losses) over ``eval_steps`` validation batches, all ranks."""
    eval_steps = config.gan_eval_steps if config.gan else config.eval_steps
    per_process = global_batch(config, ctx.world_size)[1]
    n_batches, loader = loaders.eval_loader(
        dataset, per_process, eval_steps, ctx, config.data.num_workers, at_most_one_pass=config.gan
    )
    run.model.eval()
    if run.disc is not None:
        run.disc.eval()
    sums: dict[str, float] = {}
    for _ in range(n_batches):
        batch = next(loader)
        generated, _, values = generator_losses(run, batch, config, ctx.device, training=False)
        if run.disc is not None:
            with objectives.autocast(ctx.device, config.amp):
                values["disc_real"] = float(
                    objectives.bce_logits(run.disc(batch[3].to(ctx.device), logits=True), 1.0)
                )
                values["disc_fake"] = float(objectives.bce_logits(run.disc(generated, logits=True), 0.0))
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value
    return {key: distributed.mean_across_ranks(value / n_batches, ctx) for key, value in sums.items()}


def sample_grid(x: torch.Tensor, generated: torch.Tensor, gt: torch.Tensor) -> np.ndarray:
    """``(rows*96, 4*96, 3) uint8`` BGR: per clip and frame, reference | masked input | generated | truth."""
    rows = []
    for clip in range(min(SAMPLE_CLIPS, len(x))):
        for t in range(x.size(2)):
            parts = [x[clip, 3:, t], x[clip, :3, t], generated[clip, :, t], gt[clip, :, t]]
            faces = postprocess_faces(torch.stack([p.float().cpu() for p in parts]))
            rows.append(np.concatenate(list(faces), axis=1))
    return np.concatenate(rows, axis=0)


# --- the loop ------------------------------------------------------------------------------------------


def train(config: Wav2LipTrainConfig, ctx: distributed.DistContext | None = None) -> loop.TrainResult:
    """Train until ``config.max_steps`` (or forever). Rank 0 writes checkpoints, samples and logs."""
    return loop.train(config, ctx, Wav2LipDataset, build_run, HOOKS)


def _step(session: loop.Session, batch) -> tuple[dict[str, float], tuple]:
    syncnet_wt = session.run.syncnet_wt  # the weight this step uses (the evaluation after it may change it)
    values, generated = train_step(session.run, batch, session.config, session.ctx.device)
    return values | {"syncnet_wt": syncnet_wt}, (batch, generated)


def _evaluate_and_save(session: loop.Session, outputs: tuple) -> None:
    run, config, ctx = session.run, session.config, session.ctx
    step = run.global_step
    if (step == 1 and not config.gan) or step % config.eval_interval == 0:
        scores = evaluate(run, session.val_set, config, ctx)
        if scores["sync"] < config.sync_loss_threshold:
            run.syncnet_wt = final_syncnet_wt(config)
        session.result.evaluations.append({"step": step, **scores})
        session.logger.scalars({f"val/{k}": v for k, v in scores.items()}, step)
    if ctx.is_main and loop.should_checkpoint(step, config.checkpoint_interval, config.max_steps):
        session.result.checkpoints.extend(_save(run, config))
        (x, _, _, gt), generated = outputs
        session.logger.image("samples", sample_grid(x, generated, gt), step)


HOOKS = loop.LoopHooks("Wav2Lip", _step, _evaluate_and_save, postfix=("l1", "sync"))


def _save(run: Wav2LipRun, config: Wav2LipTrainConfig) -> list:
    step, plain = run.global_step, config_to_plain(config)
    state = {"syncnet_wt": run.syncnet_wt, "scaler": run.scaler.state_dict(), "seed": config.seed}
    paths = [checkpoint_files.checkpoint_path(config.checkpoint_dir, step)]
    checkpoint_files.save_checkpoint(paths[0], run.model, run.optimizer, step, run.global_epoch, plain, state)
    if run.disc is not None:
        paths.append(checkpoint_files.checkpoint_path(config.checkpoint_dir, step, DISC_PREFIX))
        disc_state = {"scaler": run.disc_scaler.state_dict()}
        checkpoint_files.save_checkpoint(
            paths[1], run.disc, run.disc_optimizer, step, run.global_epoch, plain, disc_state
        )
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wav2lip.train", description=__doc__.split("\n")[0])
    cli_flags.add_common_flags(parser)
    parser.add_argument("--disc-checkpoint", metavar="FILE", help="discriminator to start from (with --gan)")
    parser.add_argument(
        "--syncnet-checkpoint", metavar="FILE", help="the trained expert (lipsync_expert.pth)"
    )
    parser.add_argument(
        "--gan", action="store_true", default=None, help="train with the quality discriminator"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    return loop.cli_main(build_parser(), Wav2LipTrainConfig, train, argv, _overrides)


def _overrides(args: argparse.Namespace) -> dict:
    """Config overrides of the generator's own flags (None: not given)."""
    return {
        "disc_checkpoint": args.disc_checkpoint,
        "syncnet_checkpoint": args.syncnet_checkpoint,
        "gan": args.gan,
    }


if __name__ == "__main__":
    sys.exit(main())
