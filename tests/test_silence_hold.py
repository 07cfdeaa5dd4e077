"""Silence hold: the mouth keeps its original pixels in pauses of the speech, cross-faded at the edges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from pipeline.cli import main
from pipeline.core.types import AudioClip
from pipeline.speech import hold_weights, voiced_frames
from pipeline.timeline import source_indices
from tests.media_fixtures import make_video, read_all_frames
from tests.test_end_to_end import BOX, weights  # noqa: F401 - the seeded-checkpoint fixture

RATE = 16000


def _tone_pause_tone(seconds=(1.0, 1.0, 1.0)) -> np.ndarray:
    """A 300 Hz tone, digital silence, the tone again (seconds of each)."""
    parts = []
    for i, length in enumerate(seconds):
        t = np.arange(round(length * RATE)) / RATE
        parts.append(0.0 * t if i % 2 else 0.5 * np.sin(2 * np.pi * 300 * t))
    return np.concatenate(parts).astype(np.float32)


def test_voiced_frames_find_the_pause_with_hangover():
    voiced = voiced_frames(AudioClip(_tone_pause_tone(), RATE), 25, 75)
    # The tone stops at frame 25; the 0.1 s hangover keeps frames 25-27 voiced; it resumes at frame 50.
    assert voiced[:28].all() and not voiced[28:50].any() and voiced[50:].all()


def test_quiet_noise_in_a_pause_is_not_speech():
    samples = _tone_pause_tone()
    samples[RATE : 2 * RATE] = np.random.default_rng(0).normal(0, 1e-3, RATE)  # -60 dBFS hiss
    assert not voiced_frames(AudioClip(samples, RATE), 25, 75)[30:48].any()


def test_hold_weights_fade_two_frames_each_edge_and_skip_short_pauses():
    voiced = np.ones(30, bool)
    voiced[5:15] = False  # 10 frames: held
    voiced[20:24] = False  # 4 frames: shorter than the 6-frame minimum, not held
    weight = hold_weights(voiced, min_frames=6)
    np.testing.assert_allclose(weight[5:15], [2 / 3, 1 / 3, 0, 0, 0, 0, 0, 0, 1 / 3, 2 / 3], atol=1e-6)
    assert (weight[:5] == 1).all() and (weight[15:] == 1).all()


def test_hold_silence_zero_holds_nothing():
    voiced = np.zeros(50, bool)
    assert hold_weights(voiced, min_frames=50).min() == 1


def _mouth_diff(weights, tmp_path: Path, *extra: str) -> np.ndarray:  # noqa: F811
    clip = make_video(tmp_path / "face.mp4", seconds=2.0, audio=False)
    speech = tmp_path / "speech.wav"
    soundfile.write(speech, _tone_pause_tone((0.5, 1.0, 0.5)), RATE)
    out = tmp_path / "out.mp4"
    argv = ["--video", str(clip), "--audio", str(speech), "--box", *map(str, BOX), "--restorer", "none"]
    argv += ["--wav2lip-checkpoint", str(weights["wav2lip"]), "-o", str(out), "--quiet", "--device", "cpu"]
    assert main(argv + list(extra)) == 0
    frames, source = read_all_frames(out), read_all_frames(clip)
    expected = source[source_indices(len(source), len(frames))]
    top, bottom, left, right = BOX
    mouth = (slice(None), slice((top + bottom) // 2 + 5, bottom - 5), slice(left + 10, right - 10))
    return np.abs(frames[mouth].astype(np.int16) - expected[mouth]).mean(axis=(1, 2, 3))


def test_one_second_pause_shows_the_original_mouth(weights, tmp_path: Path):  # noqa: F811
    diff = _mouth_diff(weights, tmp_path)
    # Tone to 0.5 s (+0.1 s hangover: frames 0-14), silence to 1.5 s (frames 15-36), tone to 2 s.
    assert len(diff) == 50
    assert diff[17:35].max() < 2.5  # held: the input within encoding noise
    assert diff[2:12].min() > 8 and diff[39:48].min() > 8  # speech: generated mouths
    assert diff[15] > diff[16] > diff[18] and diff[36] > diff[35] > diff[33]  # cross-fades at the edges


def test_hold_silence_0_keeps_generating_in_pauses(weights, tmp_path: Path):  # noqa: F811
    diff = _mouth_diff(weights, tmp_path, "--hold-silence", "0")
    assert diff[17:35].min() > 8


def test_negative_hold_silence_is_a_bad_input(tmp_path: Path, capsys):
    clip = make_video(tmp_path / "face.mp4", seconds=0.4, audio=False)
    code = main(
        ["--video", str(clip), "--text-string", "hi", "--hold-silence", "-1", "--box", *map(str, BOX)]
    )
    assert code == 2
    assert "--hold-silence must be >= 0" in capsys.readouterr().err


def test_empty_audio_is_all_voiced():
    assert voiced_frames(AudioClip(np.zeros(0, np.float32), RATE), 25, 3).all()
