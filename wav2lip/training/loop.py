"""The shape both trainers share: data sets, the step loop with its counters, logs and progress bar, and
the command-line launch. Each trainer passes only what differs: its step and what follows a step.

Per step the loop draws the next batch of the resumable sample stream, calls the trainer's ``step``,
advances ``global_step`` / ``global_epoch``, records the step's losses (history; ``train/<name>`` and
``train/lr`` scalars every ``log_interval`` steps) and then calls the trainer's ``after_step``
(evaluation, checkpoints, samples).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from wav2lip.training import cli_flags, distributed, loaders
from wav2lip.training.config import SyncNetTrainConfig, Wav2LipTrainConfig, global_batch, load_train_config
from wav2lip.training.data import crop_method, epoch_of, read_filelist
from wav2lip.training.log import MetricLogger

TrainConfig = SyncNetTrainConfig | Wav2LipTrainConfig
VAL_SEED_OFFSET = 1  # the validation stream is seeded with config.seed + 1


class Run(Protocol):
    """What the loop needs of a trainer's run: the optimizer (for its learning rate) and the counters."""

    optimizer: torch.optim.Optimizer
    global_step: int
    global_epoch: int


@dataclass
class TrainResult:
    """What a training call did: final counters, files written (rank 0), per-step losses
    (``{"step": n, name: value}``) and evaluations."""

    global_step: int
    global_epoch: int
    checkpoints: list[Path]
    history: list[dict[str, float]]
    evaluations: list[dict[str, float]]


@dataclass
class Session:
    """One training call as the trainer's hooks see it: the config, this process, the run (model,
    optimizer, counters, ...), the validation set, the logger and the result being filled."""

    config: TrainConfig
    ctx: distributed.DistContext
    run: Any
    val_set: Dataset
    logger: MetricLogger
    result: TrainResult


StepFn = Callable[[Session, Any], tuple[dict[str, float], Any]]  # batch -> ({loss: value}, step outputs)
AfterStepFn = Callable[[Session, Any], None]  # (session, step outputs): evaluate, save, draw samples


@dataclass(frozen=True)
class LoopHooks:
    """A trainer's part of the loop: progress-bar ``name``, ``step`` and ``after_step`` (see the aliases)
    and the loss names shown on the progress bar."""

    name: str
    step: StepFn
    after_step: AfterStepFn
    postfix: tuple[str, ...]


def should_checkpoint(step: int, interval: int, max_steps: int | None) -> bool:
    """Official rule (after step 1 and every ``interval`` steps) plus the last step of a bounded run."""
    return step == 1 or step % interval == 0 or (max_steps is not None and step >= max_steps)


def steps_remaining(step: int, max_steps: int | None) -> bool:
    return max_steps is None or step < max_steps


def make_datasets(dataset_cls: type[Dataset], config: TrainConfig) -> tuple[Dataset, Dataset]:
    """``(train, validation)`` data sets of the utterances in the two file lists (seeds ``seed``,
    ``seed + 1``)."""
    data = config.data
    train_utterances = read_filelist(data.filelist("train"), data.data_root)
    val_utterances = read_filelist(data.filelist("val"), data.data_root)
    crop_method(train_utterances + val_utterances)  # raises when the lists mix crop methods
    train_set = dataset_cls(train_utterances, data, config.seed)
    return train_set, dataset_cls(val_utterances, data, config.seed + VAL_SEED_OFFSET)


def train(
    config: TrainConfig,
    ctx: distributed.DistContext | None,
    dataset_cls: type[Dataset],
    build_run: Callable[[Any, distributed.DistContext], Run],
    hooks: LoopHooks,
) -> TrainResult:
    """Seed with ``config.seed``, build both data sets and the run (``build_run(config, ctx)``, which
    restores any resume / start checkpoint), then step with ``hooks`` until ``config.max_steps``.
    ``ctx`` None: join the torchrun process group (or run alone) on ``config.device``."""
    ctx = ctx or distributed.init_distributed(config.device)
    torch.manual_seed(config.seed)
    train_set, val_set = make_datasets(dataset_cls, config)
    run = build_run(config, ctx)
    return run_loop(run, train_set, val_set, config, ctx, hooks)


def run_loop(
    run: Run,
    train_set: Dataset,
    val_set: Dataset,
    config: TrainConfig,
    ctx: distributed.DistContext,
    hooks: LoopHooks,
) -> TrainResult:
    """Step from ``run.global_step`` until ``config.max_steps`` (forever when None); returns TrainResult.

    The sample stream continues at the run's step (exact resume). Logs go to ``config.checkpoint_dir``
    on rank 0; the progress bar shows there unless ``config.quiet``.
    """
    per_process = global_batch(config, ctx.world_size)[1]
    loader = loaders.make_loader(train_set, per_process, run.global_step, ctx, config.data.num_workers)
    logger = MetricLogger(config.checkpoint_dir, ctx.is_main, resume_step=run.global_step)
    _log_setup(logger, run, config, ctx)
    result = TrainResult(run.global_step, run.global_epoch, [], [], [])
    session = Session(config, ctx, run, val_set, logger, result)
    bar = tqdm(
        total=config.max_steps,
        initial=run.global_step,
        desc=hooks.name,
        disable=config.quiet or not ctx.is_main,
    )
    try:
        while steps_remaining(run.global_step, config.max_steps):
            values, outputs = hooks.step(session, next(loader))
            run.global_step += 1
            run.global_epoch = epoch_of(run.global_step, per_process, ctx.world_size, len(train_set))
            _record(session, values)
            hooks.after_step(session, outputs)
            bar.update(1)
            bar.set_postfix({name: f"{values[name]:.4f}" for name in hooks.postfix})
    finally:
        bar.close()
        logger.close()
    result.global_step, result.global_epoch = run.global_step, run.global_epoch
    return result


def _log_setup(logger: MetricLogger, run: Run, config: TrainConfig, ctx: distributed.DistContext) -> None:
    """Log (and on rank 0 print) the effective global batch and learning rate this run trains with."""
    total, per_process = global_batch(config, ctx.world_size)
    lr = run.optimizer.param_groups[0]["lr"]
    values = {"run/global_batch_size": total, "run/process_batch_size": per_process}
    logger.scalars(values | {"run/world_size": ctx.world_size, "run/lr": lr}, run.global_step)
    if ctx.is_main and not config.quiet:
        print(
            f"training with global batch {total} ({per_process} per process x {ctx.world_size}), lr {lr:g}",
            file=sys.stderr,
        )


def _record(session: Session, values: Mapping[str, float]) -> None:
    step = session.run.global_step
    session.result.history.append({"step": step, **values})
    if step % session.config.log_interval == 0:
        lr = session.run.optimizer.param_groups[0]["lr"]
        scalars = {f"train/{name}": value for name, value in values.items()} | {"train/lr": lr}
        session.logger.scalars(scalars, step)


# --- command line --------------------------------------------------------------------------------------


def cli_main(
    parser: argparse.ArgumentParser,
    config_cls: type[TrainConfig],
    train_fn: Callable[[Any, distributed.DistContext], TrainResult],
    argv: list[str] | None,
    extra_overrides: Callable[[argparse.Namespace], dict[str, Any]] = lambda args: {},
) -> int:
    """Parse ``argv``, build the config (YAML < flags), join the process group, train, leave it.

    Returns the exit code: 0, the LipSyncError's code (one line on stderr) or 130 on Ctrl-C.
    """
    args = parser.parse_args(argv)

    def action() -> None:
        overrides = cli_flags.common_overrides(args) | extra_overrides(args)
        config = load_train_config(config_cls, args.config, overrides)
        ctx = distributed.init_distributed(config.device)
        try:
            result = train_fn(config, ctx)
        finally:
            distributed.shutdown_distributed(ctx)
        if ctx.is_main and not config.quiet:
            print(f"stopped at step {result.global_step}; checkpoints in {config.checkpoint_dir}")

    return cli_flags.run_cli(action, quiet=bool(args.quiet))
