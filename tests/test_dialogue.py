"""The dialogue plan: tagged scripts, timed cues and speaker faces, checked before any heavy work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core.errors import InputError
from pipeline.dialogue import (
    FaceSpec,
    Segment,
    check_speakers,
    frame_speakers,
    parse_assignments,
    parse_face_spec,
    parse_tagged_script,
    read_segments,
)

SRT = """1
00:00:00,000 --> 00:00:01,200
A: Hello, how are you?

2
00:00:01,500 --> 00:00:02,750
B: Fine, thanks.
"""


def test_tagged_script_bare_lines_continue_the_last_speaker():
    script = "[A] Hello, how are you?\nI mean it.\n\n[B] Fine, thanks.\n[A] Good."
    assert parse_tagged_script(script) == [
        ("A", "Hello, how are you? I mean it."),
        ("B", "Fine, thanks."),
        ("A", "Good."),
    ]


def test_script_without_a_first_tag_is_an_error():
    with pytest.raises(InputError, match="line 1 has no speaker"):
        parse_tagged_script("Hello\n[A] there")


def test_srt_and_vtt_cues_carry_the_speaker(tmp_path: Path):
    srt = tmp_path / "d.srt"
    srt.write_text(SRT)
    expected = [Segment("A", 0.0, 1.2, "Hello, how are you?"), Segment("B", 1.5, 2.75, "Fine, thanks.")]
    assert read_segments(srt) == expected
    vtt = tmp_path / "d.vtt"
    vtt.write_text("WEBVTT\n\n00:00.000 --> 00:01.200\nA: Hello, how are you?\n\n"
                   "00:01.500 --> 00:02.750\nB: Fine, thanks.\n")  # fmt: skip
    assert read_segments(vtt) == expected


def test_json_cues_with_a_speaker_field(tmp_path: Path):
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps([{"speaker": "A", "start": 0, "end": 1.0}, {"speaker": "B", "start": 1, "end": 2}])
    )
    assert [s.speaker for s in read_segments(path)] == ["A", "B"]


@pytest.mark.parametrize(
    ("cues", "message"),
    [
        (
            "1\n00:00:00,000 --> 00:00:02,000\nA: hi\n\n2\n00:00:01,000 --> 00:00:03,000\nB: yo\n",
            "overlaps cue 1",
        ),
        (
            "1\n00:00:02,000 --> 00:00:03,000\nA: hi\n\n2\n00:00:00,000 --> 00:00:01,000\nB: yo\n",
            "starts before",
        ),
        ("1\n00:00:00,000 --> 00:00:01,000\nhello\n", "has no speaker"),
        ("1\n00:00:01,000 --> 00:00:01,000\nA: hi\n", "not after its start"),
    ],
)
def test_bad_cues_are_one_line_errors(tmp_path: Path, cues: str, message: str):
    path = tmp_path / "bad.srt"
    path.write_text(cues)
    with pytest.raises(InputError, match=message) as info:
        read_segments(path)
    assert "\n" not in str(info.value)


def test_unknown_speaker_and_bad_face_specs():
    segments = [Segment("A", 0, 1), Segment("C", 1, 2)]
    with pytest.raises(InputError, match="unknown speaker 'C'"):
        check_speakers(segments, {"A": "left", "B": "right"}, "d.srt")
    with pytest.raises(InputError, match="--speaker-face A=middle"):
        parse_face_spec("A", "middle")
    with pytest.raises(InputError, match="box:TOP"):
        parse_face_spec("A", "box:10,5,0,20")
    with pytest.raises(InputError, match="SPEAKER=VALUE"):
        parse_assignments(["A"], "--speaker-voice")


def test_face_specs():
    assert parse_face_spec("A", "Left") == FaceSpec(position="left")
    assert parse_face_spec("A", "2") == FaceSpec(index=2)
    assert parse_face_spec("A", "box:10,50,20,60") == FaceSpec(box=(10, 50, 20, 60))
    assert parse_assignments(["A=en-us", "B=en-gb+f3"], "--speaker-voice") == {"A": "en-us", "B": "en-gb+f3"}


def test_frame_speakers_follow_the_segments():
    speakers = frame_speakers([Segment("A", 0.0, 0.2), Segment("B", 0.3, 0.4)], 10, 5)
    assert speakers == ["A", "A", None, "B", None]


def test_each_speaker_gets_its_voice_coqui_speaker_or_cloning_sample(tmp_path: Path):
    from pipeline.core.errors import InputError
    from pipeline.speech import speaker_tts_config
    from tts.config import TTSConfig

    espeak, coqui = TTSConfig(engine="espeak"), TTSConfig(engine="coqui")
    assert speaker_tts_config(espeak, "A", "en-gb+f3").voice == "en-gb+f3"
    assert speaker_tts_config(espeak, "A", None) is espeak
    assert speaker_tts_config(coqui, "B", "Ana Florence").speaker == "Ana Florence"
    sample = tmp_path / "alice.wav"
    sample.write_bytes(b"RIFF")
    cloned = speaker_tts_config(coqui, "A", f"sample:{sample}")
    assert cloned.voice_sample == str(sample) and cloned.speaker == coqui.speaker
    with pytest.raises(InputError, match=r"--speaker-voice A=sample:.* needs --tts coqui"):
        speaker_tts_config(espeak, "A", f"sample:{sample}")
    with pytest.raises(InputError, match=r"no such recording .*missing\.wav"):
        speaker_tts_config(coqui, "A", f"sample:{tmp_path / 'missing.wav'}")
