"""Speech -> the mel spectrogram Wav2Lip was trained on, and its per-video-frame windows.

Decoding pipes any file ffmpeg reads to float32 mono 16 kHz samples (no temp files). The spectrogram
follows the official ``audio.py`` with its ``hparams.py`` values: pre-emphasis, a 50 ms Hann STFT every
12.5 ms (reflect padding at the ends, as librosa did when the models were trained), 80 Slaney mel bands
from 55 to 7600 Hz, amplitude in dB floored at -100 dB, minus a 20 dB reference, mapped to [-4, 4].
Each video frame ``i`` is driven by the 16-frame (200 ms) window starting at mel frame
``int(i * 80 / fps)``.
"""

from __future__ import annotations

import functools
import numbers
from pathlib import Path

import numpy as np

from pipeline.core.errors import AudioError, InputError
from pipeline.core.ffmpeg import SPEECH_SAMPLE_RATE_HZ

SAMPLE_RATE_HZ = SPEECH_SAMPLE_RATE_HZ  # samples per second the models were trained on (16 kHz)
N_FFT = 800  # samples per STFT frame (50 ms)
HOP_LENGTH = 200  # samples between STFT frames (12.5 ms)
WIN_LENGTH = 800  # samples of the Hann window (50 ms)
N_MELS = 80  # mel bands
FMIN_HZ = 55.0  # lowest mel band edge
FMAX_HZ = 7600.0  # highest mel band edge
PREEMPHASIS = 0.97  # first-order high-pass coefficient y[n] = x[n] - 0.97 x[n-1]
REF_LEVEL_DB = 20.0  # dB subtracted after the amplitude-to-dB conversion
MIN_LEVEL_DB = -100.0  # dB floor; amplitudes below 1e-5 count as this level
MAX_ABS_VALUE = 4.0  # normalised mels lie in [-4, 4]
MEL_FRAMES_PER_SECOND = SAMPLE_RATE_HZ / HOP_LENGTH  # 80 mel frames per second
MEL_STEP_SIZE = 16  # mel frames per video-frame window (200 ms)
SILENCE_MEL_VALUE = -MAX_ABS_VALUE  # what silence maps to; used to pad audio shorter than one window
MIN_AMPLITUDE = 10.0 ** (MIN_LEVEL_DB / 20.0)  # 1e-5, the amplitude floor of the dB conversion


def load_wav(path: str | Path, sr: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Decode any audio or video file ffmpeg reads to ``(n,) float32`` mono samples at ``sr`` Hz.

    Stereo is averaged to mono like librosa (other layouts use ffmpeg's normalised downmix); values
    are in [-1, 1] for integer sources. A source at another rate is resampled as
    ``librosa.load(path, sr=sr)`` (the official features) does:
    :func:`pipeline.core.media.load_speech`, which the render's speech loading uses too. Raises
    :class:`AudioError` when the file is missing, has no audio stream, cannot be decoded or is empty.
    """
    from pipeline.core.media import load_speech

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    return load_speech(path, sr).samples


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """The official normalised log-mel spectrogram of 16 kHz mono ``wav``.

    ``wav``: ``(n,)`` float samples at 16 kHz, n >= 1. Returns ``(80, 1 + n // 200) float32`` in
    [-4, 4]; silence gives exactly -4. Raises :class:`AudioError` for empty or non-finite input.
    """
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise AudioError(f"audio must be mono (n,) samples, got shape {wav.shape}")
    if wav.size == 0:
        raise AudioError("audio is empty: no samples to compute a mel spectrogram from")
    bad = np.count_nonzero(~np.isfinite(wav))
    if bad:
        raise AudioError(f"audio has {bad} NaN or infinite samples; re-export or re-synthesise it")
    mel = np.empty((N_MELS, 1 + wav.size // HOP_LENGTH), np.float32)
    for start in range(0, mel.shape[1], STFT_BLOCK_FRAMES):
        stop = min(start + STFT_BLOCK_FRAMES, mel.shape[1])
        magnitude = np.abs(np.fft.rfft(_frames(wav, start, stop) * _window(), n=N_FFT, axis=1)).T
        mel[:, start:stop] = _normalize(_amp_to_db(_mel_basis() @ magnitude) - REF_LEVEL_DB)
    if not np.isfinite(mel).all():
        raise AudioError("mel spectrogram contains NaN; the audio could not be analysed")
    return mel


# STFT frames computed at once: bounds memory for long audio (an hour is ~288,000 frames).
STFT_BLOCK_FRAMES = 4096


def _frames(wav: np.ndarray, start: int, stop: int) -> np.ndarray:
    """STFT frames ``start``..``stop-1`` of the pre-emphasised signal, centred with reflect padding
    (librosa's ``stft(center=True, pad_mode="reflect")``), as ``(stop-start, N_FFT) float64``."""
    pad = N_FFT // 2
    if wav.size <= pad:  # too short for one reflection: pad the whole (tiny) signal at once
        padded = np.pad(_preemphasis(wav.astype(np.float64)), pad, mode="reflect")
        idx = np.arange(start, stop)[:, None] * HOP_LENGTH + np.arange(N_FFT)
        return padded[idx]
    idx = np.arange(start, stop)[:, None] * HOP_LENGTH + np.arange(N_FFT) - pad
    idx = np.abs(idx)  # reflect at the start: -i -> i
    last = wav.size - 1
    idx = np.where(idx > last, 2 * last - idx, idx)  # reflect at the end
    current = wav[idx].astype(np.float64)
    previous = np.where(idx > 0, wav[np.maximum(idx - 1, 0)], 0.0)  # lfilter starts from rest
    return current - PREEMPHASIS * previous


def _preemphasis(wav: np.ndarray) -> np.ndarray:
    # The official lfilter([1, -0.97], [1], wav), from rest: e[n] = x[n] - 0.97 x[n-1], x[-1] = 0.
    out = wav.copy()
    out[1:] -= PREEMPHASIS * wav[:-1]
    return out


@functools.lru_cache(maxsize=1)
def _window() -> np.ndarray:
    """The periodic Hann window librosa's stft uses (``get_window("hann", N_FFT, fftbins=True)``)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN_LENGTH) / WIN_LENGTH)


@functools.lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    """``(N_MELS, N_FFT // 2 + 1)`` Slaney-style mel filterbank, as ``librosa.filters.mel`` builds it
    with its defaults (``htk=False``, ``norm="slaney"``); written out so that no numba-compiled module is
    loaded at run time (tests compare it with librosa's)."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE_HZ / 2.0, N_FFT // 2 + 1)
    mel_edges = np.linspace(_hz_to_mel(FMIN_HZ), _hz_to_mel(FMAX_HZ), N_MELS + 2)
    edges_hz = _mel_to_hz(mel_edges)
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]  # equal area per band
    return weights.astype(np.float32)


# The Slaney mel scale: linear below 1 kHz, logarithmic above.
_MEL_LINEAR_HZ_PER_MEL = 200.0 / 3
_MEL_BREAK_HZ = 1000.0
_MEL_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    if hz < _MEL_BREAK_HZ:
        return hz / _MEL_LINEAR_HZ_PER_MEL
    return _MEL_BREAK_HZ / _MEL_LINEAR_HZ_PER_MEL + np.log(hz / _MEL_BREAK_HZ) / _MEL_LOG_STEP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    break_mel = _MEL_BREAK_HZ / _MEL_LINEAR_HZ_PER_MEL
    linear = _MEL_LINEAR_HZ_PER_MEL * mels
    logarithmic = _MEL_BREAK_HZ * np.exp(_MEL_LOG_STEP * (mels - break_mel))
    return np.where(mels >= break_mel, logarithmic, linear)


def _amp_to_db(amplitude: np.ndarray) -> np.ndarray:
    # The floor keeps log10 finite: silence (amplitude 0) becomes MIN_LEVEL_DB, not -inf.
    return 20.0 * np.log10(np.maximum(MIN_AMPLITUDE, amplitude))


def _normalize(level_db: np.ndarray) -> np.ndarray:
    scaled = (2.0 * MAX_ABS_VALUE) * ((level_db - MIN_LEVEL_DB) / (-MIN_LEVEL_DB)) - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE)


def mel_window_count(mel_frames: int, fps: float) -> int:
    """How many video frames ``mel_frames`` columns of mel drive at ``fps``, by the official rule.

    Window i starts at ``int(i * (80 / fps))``; every window that fits is taken, then one final window
    (the last 16 columns) and the iteration stops, so the count is (windows that fit) + 1. A mel shorter
    than 16 columns counts as padded to 16 (see :func:`mel_window`).
    """
    step = _mel_step(fps)
    if mel_frames < 1:
        raise AudioError("mel spectrogram is empty; the audio has no samples")
    last_start = max(int(mel_frames), MEL_STEP_SIZE) - MEL_STEP_SIZE
    fitting = int(last_start / step) + 1  # estimate, corrected below with the exact float expression
    while fitting > 0 and int((fitting - 1) * step) > last_start:
        fitting -= 1
    while int(fitting * step) <= last_start:
        fitting += 1
    return fitting + 1


def mel_window(mel: np.ndarray, index: int, fps: float) -> np.ndarray:
    """The ``(80, 16) float32`` mel window that drives video frame ``index`` at ``fps``.

    Same windows as :func:`mel_chunks` without building the list. A mel with fewer than 16 columns
    (audio under 0.2 s) is first padded at the end with the silence value -4, so one window exists.
    Raises ``IndexError`` for an index outside ``range(mel_window_count(mel.shape[1], fps))``.
    """
    count = mel_window_count(mel.shape[1], fps)
    if not 0 <= index < count:
        raise IndexError(f"mel window {index} out of range: {count} windows at {fps} fps")
    mel = pad_mel(mel)
    if index == count - 1:
        return np.ascontiguousarray(mel[:, -MEL_STEP_SIZE:], dtype=np.float32)
    start = int(index * _mel_step(fps))
    return np.ascontiguousarray(mel[:, start : start + MEL_STEP_SIZE], dtype=np.float32)


def mel_chunks(mel: np.ndarray, fps: float) -> list[np.ndarray]:
    """All ``(80, 16)`` windows of ``mel (80, T)``, one per video frame at ``fps`` (official rule)."""
    return [mel_window(mel, i, fps) for i in range(mel_window_count(mel.shape[1], fps))]


def pad_mel(mel: np.ndarray) -> np.ndarray:
    """``mel (80, T)`` padded at the end with -4 (silence) to at least 16 columns; longer mels unchanged."""
    if mel.ndim != 2 or mel.shape[0] != N_MELS:
        raise AudioError(f"mel must be ({N_MELS}, T), got shape {mel.shape}")
    if mel.shape[1] == 0:
        raise AudioError("mel spectrogram is empty; the audio has no samples")
    missing = MEL_STEP_SIZE - mel.shape[1]
    if missing <= 0:
        return mel
    return np.pad(mel, ((0, 0), (0, missing)), constant_values=SILENCE_MEL_VALUE)


def _mel_step(fps: float) -> float:
    rate = float(fps) if isinstance(fps, numbers.Real) and not isinstance(fps, bool) else float("nan")
    if not (np.isfinite(rate) and rate > 0):
        raise InputError(f"frame rate must be a positive number, got {fps!r}")
    return MEL_FRAMES_PER_SECOND / rate
