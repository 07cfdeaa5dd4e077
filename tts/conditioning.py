"""Pure audio conditioning of synthesised speech: PCM conversion, resampling, trimming, joining, level.

All functions take and return mono ``float32`` sample arrays of shape ``(n,)`` (nominally in [-1, 1])
and never modify their input.
"""

from __future__ import annotations

from math import gcd

import numpy as np

from pipeline.core.ffmpeg import SPEECH_SAMPLE_RATE_HZ

OUTPUT_SAMPLE_RATE_HZ = SPEECH_SAMPLE_RATE_HZ  # Hz, the rate Wav2Lip's mel features are computed at
PEAK_LEVEL = 0.95  # full scale, the peak of the finished speech
FRAME_S = 0.01  # seconds per analysis frame of the silence detector
SILENCE_BELOW_PEAK_DB = 40.0  # dB: a frame this far below the clip's peak RMS frame counts as silence
SILENCE_FLOOR = 1e-4  # full scale RMS: frames below this are silence whatever the peak
PIECE_EDGE_S = 0.02  # seconds of silence kept at each edge of a piece before joining


def pcm16_to_float(samples: np.ndarray) -> np.ndarray:
    """``int16`` PCM ``(n,)`` or ``(n, channels)`` -> ``float32`` mono in [-1, 1) (channels averaged)."""
    out = np.asarray(samples, dtype=np.float32) / 32768.0
    return out.mean(axis=1, dtype=np.float32) if out.ndim == 2 else out


def to_mono_float(samples: np.ndarray) -> np.ndarray:
    """Any float or int array ``(n,)``/``(n, channels)`` -> ``float32 (n,)`` (int16 scaled to [-1, 1))."""
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        return pcm16_to_float(samples)
    out = samples.astype(np.float32, copy=False)
    return out.mean(axis=1, dtype=np.float32) if out.ndim == 2 else out.reshape(-1)


def resample(samples: np.ndarray, from_hz: int, to_hz: int = OUTPUT_SAMPLE_RATE_HZ) -> np.ndarray:
    """Band-limited polyphase resampling (Kaiser-windowed FIR) of ``samples`` from ``from_hz`` to ``to_hz``.

    Output length is ``ceil(n * to_hz / from_hz)``; ``float32``.
    """
    if from_hz <= 0 or to_hz <= 0:
        raise ValueError(f"sample rates must be positive, got {from_hz} -> {to_hz}")
    samples = np.asarray(samples, dtype=np.float32)
    if from_hz == to_hz or samples.size == 0:
        return samples.copy()
    from scipy.signal import resample_poly  # imported here: scipy.signal takes seconds to import

    common = gcd(int(from_hz), int(to_hz))
    out = resample_poly(samples.astype(np.float64), int(to_hz) // common, int(from_hz) // common)
    return out.astype(np.float32)


def frame_rms(samples: np.ndarray, sample_rate_hz: int, frame_s: float = FRAME_S) -> np.ndarray:
    """RMS of consecutive ``frame_s`` frames (the last one partial), ``float32 (ceil(n / frame),)``."""
    frame = max(1, round(frame_s * sample_rate_hz))
    count = -(-len(samples) // frame)
    padded = np.zeros(count * frame, dtype=np.float64)
    padded[: len(samples)] = samples
    return np.sqrt((padded.reshape(count, frame) ** 2).mean(axis=1)).astype(np.float32)


def voiced_bounds(samples: np.ndarray, sample_rate_hz: int) -> tuple[int, int] | None:
    """``(start, end)`` sample indices spanning every non-silent frame, or None for an all-silent clip.

    A frame is silent when its RMS is :data:`SILENCE_BELOW_PEAK_DB` below the loudest frame or under
    :data:`SILENCE_FLOOR`. Within the first and last loud frames the bounds are refined to the first
    and last sample whose magnitude reaches that threshold.
    """
    if len(samples) == 0:
        return None
    rms = frame_rms(samples, sample_rate_hz)
    threshold = max(float(rms.max()) * 10.0 ** (-SILENCE_BELOW_PEAK_DB / 20.0), SILENCE_FLOOR)
    loud = np.flatnonzero(rms > threshold)
    if loud.size == 0:
        return None
    frame = max(1, round(FRAME_S * sample_rate_hz))
    first = np.abs(samples[loud[0] * frame : (loud[0] + 1) * frame]) >= threshold
    last = np.abs(samples[loud[-1] * frame : (loud[-1] + 1) * frame]) >= threshold
    start = int(loud[0]) * frame + (int(np.argmax(first)) if first.any() else 0)
    end = int(loud[-1]) * frame + (len(last) - int(np.argmax(last[::-1])) if last.any() else len(last))
    return start, min(len(samples), end)


def trim_edge_silence(samples: np.ndarray, sample_rate_hz: int, max_edge_s: float) -> np.ndarray:
    """Cut leading and trailing silence down to at most ``max_edge_s`` seconds each; all-silent -> empty."""
    bounds = voiced_bounds(samples, sample_rate_hz)
    if bounds is None:
        return np.zeros(0, dtype=np.float32)
    keep = round(max(0.0, max_edge_s) * sample_rate_hz)
    start, end = max(0, bounds[0] - keep), min(len(samples), bounds[1] + keep)
    return np.asarray(samples[start:end], dtype=np.float32).copy()


def fit_edge_silence(samples: np.ndarray, sample_rate_hz: int, edge_s: float) -> np.ndarray:
    """Exactly ``edge_s`` seconds of silence before the first and after the last non-silent frame.

    Longer edges are cut, shorter ones padded with zeros; all-silent input -> empty array.
    """
    bounds = voiced_bounds(samples, sample_rate_hz)
    if bounds is None:
        return np.zeros(0, dtype=np.float32)
    keep = round(max(0.0, edge_s) * sample_rate_hz)
    start, end = max(0, bounds[0] - keep), min(len(samples), bounds[1] + keep)
    lead, tail = keep - (bounds[0] - start), keep - (end - bounds[1])
    body = np.asarray(samples[start:end], dtype=np.float32)
    return np.concatenate([np.zeros(lead, np.float32), body, np.zeros(tail, np.float32)])


def silence(duration_s: float, sample_rate_hz: int) -> np.ndarray:
    """``float32`` zeros lasting ``duration_s`` seconds (rounded to whole samples, never negative)."""
    return np.zeros(max(0, round(duration_s * sample_rate_hz)), dtype=np.float32)


def join_with_pauses(pieces: list[np.ndarray], pauses_s: list[float], sample_rate_hz: int) -> np.ndarray:
    """Concatenate ``pieces`` with ``pauses_s[i]`` seconds of silence after piece ``i``.

    Each piece is expected to carry exactly :data:`PIECE_EDGE_S` of silence at its edges (see
    :func:`fit_edge_silence`), so the inserted silence is shortened by twice that: the silent gap
    between the speech of two pieces is then ``pauses_s[i]`` (never shorter than the two edges).
    """
    if len(pieces) != len(pauses_s):
        raise ValueError(f"{len(pieces)} pieces but {len(pauses_s)} pauses")
    parts: list[np.ndarray] = []
    for piece, pause in zip(pieces, pauses_s):
        parts.append(np.asarray(piece, dtype=np.float32))
        parts.append(silence(pause - 2 * PIECE_EDGE_S, sample_rate_hz))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def peak_normalize(samples: np.ndarray, peak: float = PEAK_LEVEL) -> np.ndarray:
    """Scale so that ``max(|x|) == peak`` (0 < peak <= 1): never clips; all-zero input is returned as is."""
    if not 0.0 < peak <= 1.0:
        raise ValueError(f"peak must be in (0, 1], got {peak}")
    samples = np.asarray(samples, dtype=np.float32)
    current = float(np.max(np.abs(samples))) if samples.size else 0.0
    if current == 0.0 or not np.isfinite(current):
        return samples.copy()
    out = samples * np.float32(peak / current)
    return np.clip(out, -peak, peak)  # guards the last ulp of float32 rounding
