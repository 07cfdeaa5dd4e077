"""The typed, frozen configuration of a run.

Configuration flows one way: the dataclass defaults below < ``configs/inference.yaml`` (or the file
given with ``--config``) < command-line flags. :func:`build_config` merges the three, rejects unknown
keys and wrong types with a one-line :class:`~pipeline.core.errors.ConfigError`, and returns a frozen
:class:`PipelineConfig`. Each stage receives only its own section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.core.config_io import REPO_ROOT, deep_merge, drop_none, from_dict, read_yaml
from pipeline.core.device_names import check_device_name
from pipeline.faces.config import DetectConfig
from restore.config import RestoreConfig
from tts.config import TTSConfig
from wav2lip.config import Wav2LipConfig

DEFAULT_CONFIG_PATH = REPO_ROOT / "configs" / "inference.yaml"


@dataclass(frozen=True)
class OutputConfig:
    path: str | None = None  # default: results/<video-stem>_lipsync.mp4
    crf: int = 18
    preset: str = "medium"  # libx264's
    encoder: str = "auto"  # auto (NVENC on a CUDA run where ffmpeg can use it, else x264), x264, nvenc
    save_audio: str | None = None
    fps: float = 25.0


@dataclass(frozen=True)
class SpeakersConfig:
    """Dialogue: ``faces`` (``A=left``, ``B=1``, ``C=box:T,B,L,R``, ...) turns it on; ``voices``
    (``A=en-gb+f3``) per speaker; ``segments``: a .srt/.vtt/.json file of who speaks when in ``--audio``
    (else the script is tagged)."""

    voices: tuple[str, ...] = ()
    faces: tuple[str, ...] = ()
    segments: str | None = None


@dataclass(frozen=True)
class PipelineConfig:
    video: str | None = None
    text: str | None = None
    text_string: str | None = None
    audio: str | None = None
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    # auto: per network the fastest its architecture and the device support (bf16 on a CPU with native
    # bf16 and on CUDA, fp16 on CUDA where bf16 is not there, else fp32); fp32 / bf16 / fp16 force one
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    quiet: bool = False
    debug: bool = False
    frame_batch: int = 32  # frames per streaming batch
    tts: TTSConfig = field(default_factory=TTSConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    wav2lip: Wav2LipConfig = field(default_factory=Wav2LipConfig)
    restore: RestoreConfig = field(default_factory=RestoreConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    speakers: SpeakersConfig = field(default_factory=SpeakersConfig)

    def __post_init__(self) -> None:
        check_device_name(self.device)


def build_config(
    overrides: dict[str, Any] | None = None, config_path: str | Path | None = None
) -> PipelineConfig:
    """Defaults < YAML file (``config_path`` or configs/inference.yaml) < ``overrides``.

    ``overrides`` is nested like the YAML (``{"restore": {"fidelity": 0.7}, "video": "a.mp4"}``);
    ``None`` values in it mean "not given" and are skipped.
    """
    merged: dict[str, Any] = {}
    path = Path(config_path) if config_path else DEFAULT_CONFIG_PATH
    if config_path or path.exists():
        merged = deep_merge(merged, read_yaml(path))
    merged = deep_merge(merged, drop_none(overrides or {}))
    return from_dict(PipelineConfig, merged, "config")
