"""Dialogue renders: two faces side by side, each speaker's turns lip-sync only that speaker's face."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import tts
from pipeline.cli import main
from pipeline.config import build_config
from pipeline.core.media import decode_audio
from pipeline.timeline import output_frame_count, source_indices
from tests.dialogue_fixtures import (
    check_each_speaker_moves_only_their_face,
    check_voices_in_order,
    summary_segments,
    write_dialogue,
)
from tests.media_fixtures import make_video, read_all_frames
from tests.test_end_to_end import weights  # noqa: F401 - the seeded-checkpoint fixture

FACE_A = (30, 90, 5, 75)  # top, bottom, left, right: the left face of the 160x120 clip
FACE_B = (30, 90, 85, 155)  # the right face
SCRIPT = "[A] Hello there, how are you?\n[B] Fine, thanks."


def _box(face) -> str:
    return "box:" + ",".join(map(str, face))


def _region_diff(frames, expected, face) -> np.ndarray:
    top, bottom, left, right = face
    lower = (slice(None), slice((top + bottom) // 2 + 5, bottom - 5), slice(left + 10, right - 10))
    return np.abs(frames[lower].astype(np.int16) - expected[lower]).mean(axis=(1, 2, 3))


def test_two_speakers_each_move_only_their_own_face(weights, tmp_path: Path, capsys):  # noqa: F811
    clip = make_video(tmp_path / "two.mp4", seconds=1.0, audio=False)
    out, speech = tmp_path / "out.mp4", tmp_path / "speech.wav"
    argv = ["--video", str(clip), "--text-string", SCRIPT, "--restorer", "none", "--hold-silence", "0"]
    argv += ["--speaker-face", f"A={_box(FACE_A)}", "--speaker-face", f"B={_box(FACE_B)}"]
    argv += ["--speaker-voice", "A=en-us", "--speaker-voice", "B=en-gb+f3", "--save-audio", str(speech)]
    argv += ["--wav2lip-checkpoint", str(weights["wav2lip"]), "-o", str(out), "--device", "cpu"]
    assert main(argv) == 0
    summary = capsys.readouterr().out
    spans = {
        m[0]: (float(m[1]), float(m[2]))
        for m in re.findall(r"speaker (\w) .*?: (\d+\.\d+)-(\d+\.\d+)", summary)
    }
    # The summary's segment times are the lengths of each speaker's own synthesis, B after a gap.
    cfg = build_config({}).tts
    a = tts.synthesize("Hello there, how are you?", cfg)
    b = tts.synthesize("Fine, thanks.", cfg.__class__(**{**cfg.__dict__, "voice": "en-gb+f3"}))
    assert spans["A"] == pytest.approx((0.0, a.duration_s), abs=0.01)
    assert spans["B"][1] - spans["B"][0] == pytest.approx(b.duration_s, abs=0.01)
    assert spans["B"][0] > spans["A"][1]
    # The output audio holds A's voice, then B's.
    audio = decode_audio(speech).samples
    from pipeline.dialogue import DIALOGUE_GAP_S

    a_end = len(a.samples)  # the summary rounds to 10 ms: cut by the syntheses themselves
    b_start = a_end + round(DIALOGUE_GAP_S * 16000)
    assert abs(len(audio) - (b_start + len(b.samples))) <= 16  # A's speech, the gap, then B's
    assert np.abs(audio[a_end + 160 : b_start - 160]).max() < 1e-3  # the gap between the turns is silent
    assert np.sqrt(np.mean(audio[:a_end] ** 2)) > 0.02 and np.sqrt(np.mean(audio[b_start:] ** 2)) > 0.02
    # The video's own audio track: A's low voice, then B's high one, where the summary says.
    segments = summary_segments(summary)
    assert [seg[0] for seg in segments] == ["A", "B"]
    check_voices_in_order(out, segments)
    frames, source = read_all_frames(out), read_all_frames(clip)
    expected = source[source_indices(len(source), len(frames))]
    a_frames = slice(2, int(spans["A"][1] * 25) - 1)
    b_frames = slice(int(spans["B"][0] * 25) + 2, int(spans["B"][1] * 25) - 1)
    diff_a, diff_b = _region_diff(frames, expected, FACE_A), _region_diff(frames, expected, FACE_B)
    assert diff_a[a_frames].min() > 8 and diff_b[a_frames].max() < 2.5  # A speaks: B keeps its pixels
    assert diff_b[b_frames].min() > 8 and diff_a[b_frames].max() < 2.5  # and the reverse


def test_recorded_dialogue_with_srt_cues_renders_each_speaker_in_turn(weights, tmp_path: Path, capsys):  # noqa: F811
    clip = make_video(tmp_path / "two.mp4", seconds=1.0, audio=False)
    wav, srt, cues = write_dialogue(tmp_path)
    out = tmp_path / "out.mp4"
    argv = ["--video", str(clip), "--audio", str(wav), "--segments", str(srt), "--restorer", "none"]
    argv += [
        "--speaker-face",
        f"A={_box(FACE_A)}",
        "--speaker-face",
        f"B={_box(FACE_B)}",
        "--hold-silence",
        "0",
    ]
    argv += ["--wav2lip-checkpoint", str(weights["wav2lip"]), "-o", str(out), "--device", "cpu"]
    assert main(argv) == 0
    summary = capsys.readouterr().out
    # The summary's segments are the cues; the video is as long as the recording, its audio too.
    segments = summary_segments(summary)
    assert [(s, pytest.approx(a, abs=0.005), pytest.approx(b, abs=0.005)) for s, a, b in segments] == cues
    audio_s = decode_audio(wav).duration_s
    frames, source = read_all_frames(out), read_all_frames(clip)
    assert len(frames) == output_frame_count(audio_s, 25)
    assert decode_audio(out).duration_s == pytest.approx(audio_s, abs=1 / 25)
    expected = source[source_indices(len(source), len(frames))]
    check_each_speaker_moves_only_their_face(frames, expected, {"A": FACE_A, "B": FACE_B}, cues)
    check_voices_in_order(out, cues)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--speaker-face", "A=box:30,90,5,75"], "unknown speaker 'B'"),
        (["--speaker-face", "A=middle", "--speaker-face", "B=left"], "--speaker-face A=middle"),
        (["--speaker-voice", "A=en-us"], "need a face per speaker"),
    ],
)
def test_bad_dialogue_input_exits_2_before_heavy_work(tmp_path: Path, capsys, extra, message):
    clip = make_video(tmp_path / "two.mp4", seconds=0.4, audio=False)
    # A missing checkpoint would exit 3: exit 2 shows the check ran first.
    argv = ["--video", str(clip), "--text-string", SCRIPT, "--wav2lip-checkpoint", str(tmp_path / "none.pth")]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_segments_file_with_overlap_exits_2(tmp_path: Path, capsys):
    clip = make_video(tmp_path / "two.mp4", seconds=0.4)
    cues = tmp_path / "d.srt"
    cues.write_text("1\n00:00:00,000 --> 00:00:02,000\nA: hi\n\n2\n00:00:01,000 --> 00:00:03,000\nB: yo\n")
    argv = [
        "--video",
        str(clip),
        "--audio",
        str(clip),
        "--segments",
        str(cues),
        "--speaker-face",
        "A=box:1,2,1,2",
    ]
    argv += ["--speaker-face", "B=box:1,2,3,4", "--wav2lip-checkpoint", str(tmp_path / "none.pth")]
    assert main(argv) == 2
    assert "overlaps cue 1" in capsys.readouterr().err
