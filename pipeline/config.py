"""The typed, frozen configuration of a run.

Configuration flows one way: the dataclass defaults below < ``configs/inference.yaml`` (or the file
given with ``--config``) < command-line flags. :func:`build_config` merges the three, rejects unknown
keys and wrong types with a one-line :class:`~pipeline.errors.ConfigError`, and returns a frozen
:class:`PipelineConfig`. Each stage receives only its own section.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "configs" / "inference.yaml"
# Where checkpoints are looked for; LIPSYNC_WEIGHTS_DIR points elsewhere (a shared model folder).
WEIGHTS_DIR = Path(os.environ.get("LIPSYNC_WEIGHTS_DIR") or REPO_ROOT / "weights")


@dataclass(frozen=True)
class TTSConfig:
    engine: Literal["espeak", "coqui"] = "espeak"
    voice: str = "en-us"  # espeak voice / language name
    speed: int = 165  # espeak words per minute
    model_name: str | None = None  # Coqui model name (downloaded by Coqui's manager where online)
    model_path: str | None = None  # Coqui local model file (with config_path: nothing downloaded)
    config_path: str | None = None
    speaker: str | None = None
    language: str | None = None
    voice_sample: str | None = None  # XTTS voice cloning reference
    clone_voice_from_video: bool = False
    sentence_pause_s: float = 0.25
    paragraph_pause_s: float = 0.6
    max_edge_silence_s: float = 0.2


@dataclass(frozen=True)
class DetectConfig:
    model: Literal["retinaface_resnet50", "retinaface_mobile0.25"] = "retinaface_resnet50"
    checkpoint: str | None = None  # default: weights/<manifest file of `model`>
    detect_max_side: int = 640  # detection runs on a copy downscaled to at most this many pixels
    score_threshold: float = 0.8
    batch_size: int = 8
    smooth_window: int = 5  # frames; 1 (or nosmooth) disables box smoothing
    nosmooth: bool = False
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)  # top, bottom, left, right in pixels
    box: tuple[int, int, int, int] | None = None  # top, bottom, left, right: skip detection
    face: str | int = "largest"  # largest | center | N (index from the left)


@dataclass(frozen=True)
class Wav2LipConfig:
    checkpoint: str | None = None  # default: weights/wav2lip_gan.pth
    batch_size: int | None = None  # None: 128 on CUDA, 16 on CPU
    paste: Literal["feather", "hard"] = "feather"
    feather_px: int = 6  # width of the soft seam of the feathered paste, in 96x96 face pixels


@dataclass(frozen=True)
class RestoreConfig:
    restorer: Literal["gfpgan", "codeformer", "none"] = "gfpgan"
    checkpoint: str | None = None  # default: weights/GFPGANv1.4.pth or weights/codeformer.pth
    fidelity: float = 0.5  # CodeFormer w in [0, 1]; ~1.0 is steadier on video
    batch_size: int | None = None  # faces per forward pass; None: 8 on CUDA, 1 on CPU
    upscale: Literal[1, 2, 4] = 1
    bg_upsampler: Literal["realesrgan"] | None = None
    parsing: bool = True  # use parsing_parsenet.pth for the blend mask when present
    landmark_smooth_window: int = 5


@dataclass(frozen=True)
class OutputConfig:
    path: str | None = None  # default: results/<video-stem>_lipsync.mp4
    crf: int = 18
    preset: str = "medium"
    save_audio: str | None = None
    fps: float = 25.0


@dataclass(frozen=True)
class PipelineConfig:
    video: str | None = None
    text: str | None = None
    text_string: str | None = None
    audio: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    quiet: bool = False
    debug: bool = False
    frame_batch: int = 32  # frames per streaming batch
    tts: TTSConfig = field(default_factory=TTSConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    wav2lip: Wav2LipConfig = field(default_factory=Wav2LipConfig)
    restore: RestoreConfig = field(default_factory=RestoreConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


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
        merged = _deep_merge(merged, read_yaml(path))
    merged = _deep_merge(merged, _drop_none(overrides or {}))
    return from_dict(PipelineConfig, merged, "config")


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def to_dict(config: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass (tuples become lists), for YAML output."""
    return _plain(dataclasses.asdict(config))


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from ``data``, checking every key and value type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]} (allowed: {', '.join(sorted(names))})")
    values = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(str(a) for a in args)
            raise ConfigError(f"{where} must be one of {allowed}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    return _coerce_scalar(hint, value, where)


def _coerce_scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, (str, Path)):
            return str(value)
    raise ConfigError(f"{where} must be of type {getattr(hint, '__name__', hint)}, got {value!r}")


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            value = _drop_none(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
