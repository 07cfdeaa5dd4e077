"""The pitch of a stretch of speech, for tests that tell two voices apart (librosa's YIN)."""

from __future__ import annotations

import numpy as np

F0_MIN_HZ, F0_MAX_HZ = 60.0, 400.0  # the range searched: low male to high female speech
YIN_FRAME = 1024  # samples per YIN analysis frame (64 ms at 16 kHz: two periods of 60 Hz)
VOICED_RMS = 0.02  # frames quieter than this (float samples in [-1, 1]) are pauses, not voice


def median_f0(samples: np.ndarray, rate_hz: int) -> float:
    """Median fundamental frequency in Hz over the loud frames of mono float ``samples``."""
    import librosa

    samples = np.asarray(samples, np.float32)
    hop = YIN_FRAME // 4
    f0 = librosa.yin(
        samples, fmin=F0_MIN_HZ, fmax=F0_MAX_HZ, sr=rate_hz, frame_length=YIN_FRAME, hop_length=hop
    )
    rms = librosa.feature.rms(y=samples, frame_length=YIN_FRAME, hop_length=hop)[0][: len(f0)]
    voiced = f0[: len(rms)][rms > VOICED_RMS]
    if len(voiced) == 0:
        raise AssertionError("no voiced frames to measure the pitch of")
    return float(np.median(voiced))
