"""Dialogue faces by position with the real, trained RetinaFace on a two-face clip of real content.

The clip is made here from ``examples/face.mp4``: the face at full size on the left and, mirrored and
scaled to 70 %, on the right. The weights are ``../shared/weights/detection_mobilenet0.25_Final.pth``
beside the clone (never committed into the project); without them these tests are skipped.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.core.ffmpeg import ffmpeg_exe
from pipeline.core.media import decode_audio
from pipeline.dialogue import DialoguePlan, FaceSpec, follow_speaker_faces, pick_speaker_faces
from pipeline.faces.config import DetectConfig
from pipeline.faces.detector import load_detector
from pipeline.timeline import output_frame_count, source_indices
from tests.dialogue_fixtures import (
    check_each_speaker_moves_only_their_face,
    check_voices_in_order,
    summary_segments,
    write_dialogue,
)
from tests.media_fixtures import read_all_frames
from tests.test_end_to_end import weights  # noqa: F401 - the seeded-checkpoint fixture
from tests.test_faces_real import EXAMPLE, REAL_DETECTOR

pytestmark = [
    pytest.mark.real_weights,
    pytest.mark.skipif(
        not REAL_DETECTOR.is_file(), reason=f"real RetinaFace weights not found at {REAL_DETECTOR}"
    ),
]
SPLIT_X = 320  # the left face fills x < 320 of the 544x320 clip, the smaller right one x >= 320
TWO_FACES = (  # ffmpeg filter: the example beside its mirror image scaled to 224x224
    "[0:v]split[a][b];[b]hflip,scale=224:224,pad=224:320:0:48:color=gray[r];[a][r]hstack=inputs=2"
)


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("two_faces") / "two_faces.mp4"
    args = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(EXAMPLE), "-t", "1.2", "-an"]
    args += ["-filter_complex", TWO_FACES, "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(args, check=True)
    return path


@pytest.fixture(scope="module")
def detector():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two spinning threads run many times slower on a shared 2-core machine
    yield load_detector(DetectConfig(model="retinaface_mobile0.25"), REAL_DETECTOR, "cpu")
    torch.set_num_threads(threads)


def _side(box) -> str:
    return "left" if (box.left + box.right) / 2 < SPLIT_X else "right"


def test_both_real_faces_are_found_and_positions_pick_the_right_one(detector, two_faces):
    frames = read_all_frames(two_faces)
    per_frame = detector.detect(frames)
    assert len(per_frame) == 30 and all(len(faces) == 2 for faces in per_frame)
    assert all({_side(f) for f in faces} == {"left", "right"} for faces in per_frame)
    size = frames.shape[1:3]
    rules = {"left": "left", "right": "right", "0": "left", "1": "right", "largest": "left"}
    for rule, side in rules.items():
        spec = FaceSpec(index=int(rule)) if rule.isdigit() else FaceSpec(position=rule)
        plan = DialoguePlan({"A": spec, "B": FaceSpec(box=(0, 10, 0, 10))}, {})
        first, picked = pick_speaker_faces(plan, per_frame, size)
        assert first == 0 and _side(picked["A"]) == side, rule
    plan = DialoguePlan({"A": FaceSpec(position="left"), "B": FaceSpec(position="right")}, {})
    faces = follow_speaker_faces(plan, per_frame, DetectConfig(), size)
    # Each speaker's track stays on its own face in every frame.
    assert all(box is not None and _side(box) == "left" for box in faces.tracks["A"])
    assert all(box is not None and _side(box) == "right" for box in faces.tracks["B"])


def test_a_recorded_dialogue_lip_syncs_each_real_face_in_turn(weights, two_faces, tmp_path, capsys):  # noqa: F811
    wav, srt, cues = write_dialogue(tmp_path)
    out = tmp_path / "out.mp4"
    argv = ["--video", str(two_faces), "--audio", str(wav), "--segments", str(srt), "--restorer", "none"]
    argv += ["--speaker-face", "A=left", "--speaker-face", "B=right", "--hold-silence", "0"]
    argv += ["--detector", "retinaface_mobile0.25", "--detector-checkpoint", str(REAL_DETECTOR)]
    argv += ["--wav2lip-checkpoint", str(weights["wav2lip"]), "-o", str(out), "--device", "cpu"]
    assert main(argv) == 0
    summary = capsys.readouterr().out
    # The summary names each speaker's position and the box it resolved to in the first frame.
    boxes = {
        speaker: tuple(int(v) for v in box.split(","))
        for speaker, box in re.findall(
            r"^speaker (\w) \((?:left|right): box ([\d,]+) in frame 0\)", summary, re.M
        )
    }
    assert set(boxes) == {"A", "B"}
    assert boxes["A"][3] <= SPLIT_X <= boxes["B"][2]  # A's box on the left face, B's on the right one
    segments = summary_segments(summary)
    assert [(s, pytest.approx(a, abs=0.005), pytest.approx(b, abs=0.005)) for s, a, b in segments] == cues
    frames, source = read_all_frames(out), read_all_frames(two_faces)
    audio_s = decode_audio(wav).duration_s
    assert len(frames) == output_frame_count(audio_s, 25)
    assert decode_audio(out).duration_s == pytest.approx(audio_s, abs=1 / 25)
    expected = source[source_indices(len(source), len(frames))]
    # Real skin texture costs more encoding noise than the drawn test faces: a plain crf-18 re-encode
    # of this clip differs by up to 2.4 in these regions, the untouched face here by up to 3.3 (the
    # generated mouth by about 65).
    check_each_speaker_moves_only_their_face(frames, expected, boxes, cues, noise=4.0)
    check_voices_in_order(out, cues)
    # Outside the cues (the gap between the turns) both faces keep their pixels.
    gap = slice(int(cues[0][2] * 25) + 2, int(cues[1][1] * 25) - 1)
    assert np.abs(frames[gap].astype(np.int16) - expected[gap]).mean() < 4.0
