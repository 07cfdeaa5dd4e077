"""Settings of the speech stage (``tts:`` in configs/inference.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


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
