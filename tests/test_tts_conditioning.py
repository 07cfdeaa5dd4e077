"""Pure output conditioning: resampling, silence detection and trimming, joining, peak level."""

from __future__ import annotations

import numpy as np
import pytest

from tts.conditioning import (
    PIECE_EDGE_S,
    fit_edge_silence,
    frame_rms,
    join_with_pauses,
    pcm16_to_float,
    peak_normalize,
    resample,
    silence,
    to_mono_float,
    trim_edge_silence,
    voiced_bounds,
)


def tone(freq_hz: float, duration_s: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    """A cosine burst: its first and last samples are far from zero, so its bounds are sample exact."""
    t = np.arange(round(duration_s * rate)) / rate
    return (amplitude * np.cos(2 * np.pi * freq_hz * t)).astype(np.float32)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1.0 / rate)[np.argmax(spectrum)])


def silent_gaps(samples: np.ndarray, rate: int, threshold: float = 0.01) -> list[float]:
    """Durations in seconds (10 ms resolution) of the silent runs between sounding runs."""
    loud = np.concatenate([[False], frame_rms(samples, rate) > threshold, [False]])
    changes = np.flatnonzero(np.diff(loud.astype(int)))
    starts, ends = changes[0::2], changes[1::2]
    return [round((starts[i + 1] - ends[i]) * 0.01, 2) for i in range(len(starts) - 1)]


def test_resample_22050_to_16000_keeps_pitch_length_and_level():
    source = tone(440.0, 1.0, 22050)
    out = resample(source, 22050, 16000)
    assert out.dtype == np.float32
    assert len(out) == 16000
    assert dominant_hz(out, 16000) == pytest.approx(440.0, abs=1.0)
    middle = out[2000:-2000]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_resample_removes_content_above_the_new_nyquist():
    out = resample(tone(10_000.0, 1.0, 24000), 24000, 16000)  # 10 kHz cannot exist at 16 kHz
    assert np.sqrt(np.mean(out[1000:-1000] ** 2)) < 0.01


def test_resample_identity_and_errors():
    x = tone(100.0, 0.1, 16000)
    same = resample(x, 16000, 16000)
    assert np.array_equal(same, x) and same is not x
    with pytest.raises(ValueError):
        resample(x, 0, 16000)


def test_pcm16_and_mono_conversion():
    pcm = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    assert np.allclose(pcm16_to_float(pcm), [0.0, 0.5, -1.0, 32767 / 32768])
    stereo = np.array([[1000, 3000], [-2000, 2000]], dtype=np.int16)
    assert np.allclose(pcm16_to_float(stereo), [2000 / 32768, 0.0])
    assert to_mono_float(np.array([[0.2, 0.4]], dtype=np.float64)).tolist() == pytest.approx([0.3])
    assert to_mono_float(pcm).dtype == np.float32


def test_frame_rms_and_voiced_bounds():
    rate = 16000
    x = np.concatenate([silence(0.3, rate), tone(300.0, 0.5, rate), silence(0.4, rate)])
    rms = frame_rms(x, rate)
    assert len(rms) == 120  # 1.2 s of 10 ms frames
    assert rms[:30].max() == 0.0 and rms[35:75].min() > 0.3
    start, end = voiced_bounds(x, rate)
    assert start == 4800 and end == 12800
    assert voiced_bounds(silence(1.0, rate), rate) is None
    assert voiced_bounds(np.zeros(0, np.float32), rate) is None


def test_quiet_noise_far_below_the_speech_counts_as_silence():
    rate = 16000
    rng = np.random.default_rng(0)
    hiss = (rng.standard_normal(rate) * 1e-3).astype(np.float32)  # -60 dB re a 0.5 tone
    x = np.concatenate([hiss, tone(300.0, 0.5, rate) + hiss[:8000], hiss])
    start, end = voiced_bounds(x, rate)
    assert abs(start - rate) <= 160 and abs(end - (rate + 8000)) <= 160


def test_trim_edge_silence_keeps_at_most_the_limit():
    rate = 16000
    x = np.concatenate([silence(1.0, rate), tone(300.0, 0.5, rate), silence(2.0, rate)])
    out = trim_edge_silence(x, rate, 0.2)
    start, end = voiced_bounds(out, rate)
    assert start == round(0.2 * rate) and len(out) - end == round(0.2 * rate)
    short = np.concatenate([silence(0.05, rate), tone(300.0, 0.5, rate)])
    assert len(trim_edge_silence(short, rate, 0.2)) == len(short)  # never adds silence
    assert trim_edge_silence(silence(1.0, rate), rate, 0.2).size == 0


def test_fit_edge_silence_cuts_or_pads_to_exactly_the_edge():
    rate = 16000
    body = tone(300.0, 0.3, rate)
    for lead_s, tail_s in [(0.0, 0.0), (0.5, 0.01), (0.005, 1.0)]:
        x = np.concatenate([silence(lead_s, rate), body, silence(tail_s, rate)])
        out = fit_edge_silence(x, rate, 0.02)
        assert len(out) == len(body) + 640
        assert np.array_equal(out[320:-320], body)
    assert fit_edge_silence(silence(0.5, rate), rate, 0.02).size == 0


def test_join_with_pauses_places_exact_gaps():
    rate = 16000
    edge = silence(PIECE_EDGE_S, rate)
    piece = np.concatenate([edge, tone(300.0, 0.3, rate), edge])
    joined = join_with_pauses([piece, piece, piece], [0.25, 0.6, 0.0], rate)
    assert silent_gaps(joined, rate) == pytest.approx([0.25, 0.6], abs=0.011)
    assert len(joined) == 3 * len(piece) + round((0.25 - 2 * PIECE_EDGE_S) * rate) + round(
        (0.6 - 0.04) * rate
    )
    with pytest.raises(ValueError):
        join_with_pauses([piece], [0.1, 0.2], rate)


def test_peak_normalize_never_clips():
    loud = np.array([0.0, 3.0, -6.0, 1.5], dtype=np.float32)
    out = peak_normalize(loud)
    assert np.max(np.abs(out)) == pytest.approx(0.95) and np.max(np.abs(out)) <= 0.95
    assert out.tolist() == pytest.approx([0.0, 0.475, -0.95, 0.2375])
    quiet = tone(200.0, 0.1, 16000, amplitude=0.01)
    assert np.max(np.abs(peak_normalize(quiet, 0.5))) == pytest.approx(0.5, rel=1e-6)
    assert not np.any(peak_normalize(np.zeros(5, np.float32)))
    with pytest.raises(ValueError):
        peak_normalize(loud, 1.5)
