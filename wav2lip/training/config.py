"""Typed, frozen configuration of the two training scripts (expert SyncNet and Wav2Lip generator).

Defaults are the official hyper-parameters of Rudrabha/Wav2Lip (``hparams.py`` with
``color_syncnet_train.py``, ``wav2lip_train.py`` and ``hq_wav2lip_train.py``). Values flow one way:
dataclass defaults < the YAML file (``configs/train_syncnet.yaml`` / ``configs/train_wav2lip.yaml``)
< command-line flags. :func:`load_train_config` checks every key and type (unknown keys and wrong
types raise a one-line :class:`~pipeline.core.errors.ConfigError`) and the ranges below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pipeline.core.config_io import REPO_ROOT, dump_yaml, from_dict, read_yaml, to_dict
from pipeline.core.errors import ConfigError

SYNCNET_CONFIG_PATH = REPO_ROOT / "configs" / "train_syncnet.yaml"
WAV2LIP_CONFIG_PATH = REPO_ROOT / "configs" / "train_wav2lip.yaml"

ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True)
class DataConfig:
    """Where the preprocessed LRS2-layout data lives and how samples are read."""

    data_root: str = "data/lrs2_preprocessed"  # <video_id>/<utterance>/<n>.jpg + audio.wav
    train_filelist: str | None = None  # default: <data_root>/train.txt
    val_filelist: str | None = None  # default: <data_root>/val.txt
    img_size: int = 96  # pixels: faces are resized to img_size x img_size (the networks need 96)
    fps: float = 25.0  # video frames per second of the preprocessed frames (LRS2: 25)
    num_workers: int = 4  # DataLoader worker processes per training process (official: 16)
    mel_cache_size: int = 256  # utterances whose mel spectrogram each worker keeps in memory

    def filelist(self, split: str) -> Path:
        given = self.train_filelist if split == "train" else self.val_filelist
        return Path(given) if given else Path(self.data_root) / f"{split}.txt"


@dataclass(frozen=True)
class SyncNetTrainConfig:
    """``python -m wav2lip.train_syncnet``: the colour lip-sync expert (SyncNet_color)."""

    data: DataConfig = field(default_factory=DataConfig)
    checkpoint_dir: str = "checkpoints/syncnet"
    checkpoint: str | None = None  # start from this file (official release or own run)
    weights_only_init: bool = False  # with `checkpoint`: take weights only (fresh optimizer, step 0)
    resume: bool = True  # continue from the newest checkpoint in checkpoint_dir when there is one
    device: str = "auto"  # auto, cpu, cuda or cuda:N (checked by choose_device)
    seed: int = 0  # seeds the sample stream (resume continues it exactly)
    max_steps: int | None = None  # stop after this global step (None: run until interrupted)
    batch_size: int = 64  # official syncnet_batch_size; global or per process, see batch_scope
    batch_scope: Literal["global", "per_process"] = "global"  # global: split over torchrun processes
    lr: float = 1e-4  # Adam learning rate (official syncnet_lr)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam betas (torch default, as the official script)
    checkpoint_interval: int = 10000  # steps (official syncnet_checkpoint_interval)
    eval_interval: int = 10000  # steps (official syncnet_eval_interval)
    eval_steps: int | None = None  # validation batches per evaluation; None: one pass over val.txt
    amp: bool = False  # float16 mixed precision on CUDA (ignored on the CPU); the official recipe is fp32
    log_interval: int = 50  # steps between logged training losses
    stuck_loss_steps: int = 2000  # warn when the train loss stays within 0.02 of ln 2 this many steps
    quiet: bool = False  # no progress bar


@dataclass(frozen=True)
class Wav2LipTrainConfig:
    """``python -m wav2lip.train``: the Wav2Lip generator, with ``gan`` the visual-quality GAN too."""

    data: DataConfig = field(default_factory=DataConfig)
    checkpoint_dir: str = "checkpoints/wav2lip"
    checkpoint: str | None = None  # generator to start from (official wav2lip(_gan).pth or own run)
    disc_checkpoint: str | None = None  # discriminator to start from (visual_quality_disc.pth)
    syncnet_checkpoint: str | None = None  # the frozen expert; None: weights/lipsync_expert.pth
    weights_only_init: bool = False  # with `checkpoint`: take weights only (fresh optimizer, step 0)
    resume: bool = True  # continue from the newest checkpoint in checkpoint_dir when there is one
    gan: bool = False  # also train the visual-quality discriminator (hq_wav2lip_train.py)
    device: str = "auto"  # auto, cpu, cuda or cuda:N (checked by choose_device)
    seed: int = 0
    max_steps: int | None = None
    batch_size: int = 16  # official batch_size; global or per process, see batch_scope
    batch_scope: Literal["global", "per_process"] = "global"  # global: split over torchrun processes
    lr: float = 1e-4  # generator Adam learning rate (official initial_learning_rate)
    betas: tuple[float, float] = (0.9, 0.999)  # generator Adam betas without the GAN (torch default)
    gan_betas: tuple[float, float] = (0.5, 0.999)  # Adam betas of both networks with the GAN
    disc_lr: float = 1e-4  # discriminator Adam learning rate (official disc_initial_learning_rate)
    syncnet_wt_initial: float = 0.0  # sync-loss weight until the eval sync loss drops below the threshold
    syncnet_wt: float = 0.01  # sync-loss weight from then on without the GAN (official wav2lip_train.py)
    gan_syncnet_wt: float = 0.03  # ... and with the GAN (official hq_wav2lip_train.py)
    sync_loss_threshold: float = 0.75  # eval sync loss below which syncnet_wt switches on
    disc_wt: float = 0.07  # perceptual (adversarial) loss weight with the GAN (official)
    expert_batch_stats: bool = True  # the expert's BatchNorm uses batch statistics (official: never .eval())
    checkpoint_interval: int = 3000  # steps (official)
    eval_interval: int = 3000  # steps (official); without the GAN an evaluation also follows step 1
    eval_steps: int | None = 700  # validation batches per evaluation (official wav2lip_train.py)
    gan_eval_steps: int | None = 302  # with the GAN: one pass over val.txt capped at this (official)
    amp: bool = False  # float16 mixed precision on CUDA; the official recipe is fp32
    log_interval: int = 50
    quiet: bool = False


def load_train_config(
    cls: type[ConfigT], config_path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> ConfigT:
    """Defaults < YAML (``config_path``, else the default file of ``cls`` when it exists) < ``overrides``.

    ``overrides`` is nested like the YAML; ``None`` values mean "not given". Returns a validated,
    frozen ``cls`` instance; raises ConfigError.
    """
    default = SYNCNET_CONFIG_PATH if cls is SyncNetTrainConfig else WAV2LIP_CONFIG_PATH
    path = Path(config_path) if config_path else default
    merged: dict[str, Any] = read_yaml(path) if (config_path or path.exists()) else {}
    merged = _merge(merged, overrides or {})
    config = from_dict(cls, merged, "config")
    validate(config)
    return config


def validate(config: SyncNetTrainConfig | Wav2LipTrainConfig) -> None:
    """Range checks that types alone do not express; raises ConfigError naming the key."""
    data = config.data
    _positive("data.img_size", data.img_size)
    _positive("data.fps", data.fps)
    _at_least("data.num_workers", data.num_workers, 0)
    _at_least("data.mel_cache_size", data.mel_cache_size, 0)
    for name in ("batch_size", "lr", "checkpoint_interval", "eval_interval", "log_interval"):
        _positive(name, getattr(config, name))
    if config.max_steps is not None:
        _positive("max_steps", config.max_steps)
    if config.eval_steps is not None:
        _positive("eval_steps", config.eval_steps)
    if isinstance(config, SyncNetTrainConfig):
        _positive("stuck_loss_steps", config.stuck_loss_steps)
    _check_betas("betas", config.betas)
    if isinstance(config, Wav2LipTrainConfig):
        _validate_wav2lip(config)


def _validate_wav2lip(config: Wav2LipTrainConfig) -> None:
    _check_betas("gan_betas", config.gan_betas)
    _positive("disc_lr", config.disc_lr)
    for name in ("syncnet_wt_initial", "syncnet_wt", "gan_syncnet_wt", "disc_wt", "sync_loss_threshold"):
        _at_least(name, getattr(config, name), 0.0)
    if config.gan_eval_steps is not None:
        _positive("gan_eval_steps", config.gan_eval_steps)
    disc = config.disc_wt if config.gan else 0.0
    final = final_syncnet_wt(config)
    if max(final, config.syncnet_wt_initial) + disc >= 1.0:
        raise ConfigError(
            f"the sync-loss weight ({final}) + disc_wt ({disc}) must stay below 1 so the L1 loss keeps "
            "a positive weight; lower one of them"
        )


def final_syncnet_wt(config: Wav2LipTrainConfig) -> float:
    """The sync-loss weight once the validation sync loss is below the threshold: ``gan_syncnet_wt``
    with the GAN (official 0.03), else ``syncnet_wt`` (official 0.01)."""
    return config.gan_syncnet_wt if config.gan else config.syncnet_wt


def global_batch(config: SyncNetTrainConfig | Wav2LipTrainConfig, world_size: int) -> tuple[int, int]:
    """``(global batch, per-process batch)`` for ``world_size`` processes under ``batch_scope``.

    With ``global`` the batch is split evenly over the processes (raises ConfigError when it does not
    divide); with ``per_process`` every process takes ``batch_size`` samples.
    """
    if config.batch_scope == "per_process":
        return config.batch_size * world_size, config.batch_size
    if config.batch_size % world_size:
        raise ConfigError(
            f"batch_size {config.batch_size} (global) does not split over {world_size} processes; use a "
            "multiple of the process count or batch_scope: per_process"
        )
    return config.batch_size, config.batch_size // world_size


def config_to_plain(config: Any) -> dict[str, Any]:
    """The config as nested dicts of str/int/float/bool/None/lists (loads with ``weights_only=True``)."""
    return to_dict(config)


def config_to_yaml(config: Any) -> str:
    return dump_yaml(config)


def replace_data(config: ConfigT, **changes: Any) -> ConfigT:
    """A copy of ``config`` with fields of its ``data`` section changed."""
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **changes))  # type: ignore[attr-defined]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if value is None:
            continue
        if isinstance(value, dict):
            inner = out.get(key) if isinstance(out.get(key), dict) else {}
            out[key] = _merge(inner, value)
        else:
            out[key] = value
    return out


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be positive, got {value!r}")


def _at_least(name: str, value: float, low: float) -> None:
    if not value >= low:
        raise ConfigError(f"{name} must be at least {low}, got {value!r}")


def _check_betas(name: str, betas: tuple[float, float]) -> None:
    if not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(f"{name} must be two numbers in [0, 1), got {list(betas)}")
