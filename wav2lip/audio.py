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
import warnings
from pathlib import Path

import librosa
import numpy as np
from scipy import signal

from pipeline.errors import AudioError, InputError

SAMPLE_RATE_HZ = 16000  # samples per second the models were trained on
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
    are in [-1, 1] for integer sources. Raises
    :class:`AudioError` when the file is missing, has no audio stream, cannot be decoded or is empty.
    """
    from pipeline.media import decode_audio

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    return decode_audio(path, sr).samples


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
    magnitude = _stft_magnitude(_preemphasis(wav.astype(np.float64)))
    level_db = _amp_to_db(_mel_basis() @ magnitude) - REF_LEVEL_DB
    mel = _normalize(level_db).astype(np.float32)
    if not np.isfinite(mel).all():
        raise AudioError("mel spectrogram contains NaN; the audio could not be analysed")
    return mel


def _preemphasis(wav: np.ndarray) -> np.ndarray:
    return signal.lfilter([1.0, -PREEMPHASIS], [1.0], wav)


def _stft_magnitude(wav: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        # Clips shorter than one STFT frame are valid here (they are padded to one window later).
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large", category=UserWarning)
        spec = librosa.stft(
            y=wav, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, center=True, pad_mode="reflect"
        )
    return np.abs(spec)


@functools.lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    return librosa.filters.mel(sr=SAMPLE_RATE_HZ, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN_HZ, fmax=FMAX_HZ)


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
