"""Say planned pieces one by one and condition the result into one 16 kHz speech clip."""

from __future__ import annotations

import warnings
from typing import Protocol

import numpy as np
from tqdm import tqdm

from pipeline.core.errors import AudioError, ConfigError, LipSyncError
from pipeline.core.types import AudioClip
from tts.conditioning import (
    OUTPUT_SAMPLE_RATE_HZ,
    PIECE_EDGE_S,
    fit_edge_silence,
    join_with_pauses,
    peak_normalize,
    resample,
    to_mono_float,
    trim_edge_silence,
    voiced_bounds,
)
from tts.config import TTSConfig
from tts.text import Piece


class Speaker(Protocol):
    """A loaded speech engine: ``speak(text)`` returns mono speech at the engine's own rate."""

    def speak(self, text: str) -> AudioClip: ...


def check_timing(cfg: TTSConfig) -> None:
    """ConfigError for a negative pause or edge-silence setting."""
    for name in ("sentence_pause_s", "paragraph_pause_s", "max_edge_silence_s"):
        value = getattr(cfg, name)
        if not value >= 0.0:
            raise ConfigError(f"tts.{name} must be >= 0 seconds, got {value}")


def render(speaker: Speaker, pieces: list[Piece], cfg: TTSConfig, progress: bool = False) -> AudioClip:
    """Speak ``pieces`` in order and join them into float32 mono speech at 16000 Hz.

    Each piece is resampled to 16 kHz and given :data:`PIECE_EDGE_S` of edge silence; piece ``i`` is
    followed by a silent gap of ``pieces[i].pause_after_s`` seconds (a piece that came out silent is
    dropped with a warning, the longer of its and the previous pause kept). The whole is peak-normalised to
    0.95 and its leading/trailing silence cut to at most ``cfg.max_edge_silence_s``. Raises AudioError
    when the engine produced no audible speech at all.
    """
    parts: list[np.ndarray] = []
    pauses: list[float] = []
    for index, piece in enumerate(tqdm(pieces, desc="speech", unit="piece", disable=not progress)):
        part = condition_piece(_speak(speaker, piece.text, index))
        if part.size:
            parts.append(part)
            pauses.append(piece.pause_after_s)
        else:  # nothing audible: dropped, its pause merged into the one before
            warnings.warn(
                f"sentence {index + 1} ({piece.text[:40]!r}) produced no audible speech", stacklevel=2
            )
            if pauses:
                pauses[-1] = max(pauses[-1], piece.pause_after_s)
    joined = join_with_pauses(parts, pauses, OUTPUT_SAMPLE_RATE_HZ)
    if voiced_bounds(joined, OUTPUT_SAMPLE_RATE_HZ) is None:
        raise AudioError("the speech engine produced only silence for the script; check the text and voice")
    speech = trim_edge_silence(peak_normalize(joined), OUTPUT_SAMPLE_RATE_HZ, cfg.max_edge_silence_s)
    return AudioClip(speech, OUTPUT_SAMPLE_RATE_HZ)


def condition_piece(clip: AudioClip) -> np.ndarray:
    """One engine output -> float32 16 kHz samples with exactly :data:`PIECE_EDGE_S` silence per edge."""
    samples = to_mono_float(clip.samples)
    if not np.all(np.isfinite(samples)):
        raise LipSyncError("the speech engine produced non-finite samples (NaN/inf)")
    samples = resample(samples, clip.sample_rate_hz, OUTPUT_SAMPLE_RATE_HZ)
    return fit_edge_silence(samples, OUTPUT_SAMPLE_RATE_HZ, PIECE_EDGE_S)


def _speak(speaker: Speaker, text: str, index: int) -> AudioClip:
    try:
        return speaker.speak(text)
    except LipSyncError:
        raise
    except Exception as exc:  # an engine's own error: one line for the user, the cause chained
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
        raise LipSyncError(
            f"speech synthesis failed on sentence {index + 1} ({text[:40]!r}): {type(exc).__name__}: {detail}"
        ) from exc
