"""Speakers' faces by position or index: the pure rule, following several faces, and the errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.core.errors import InputError, NoFaceError
from pipeline.core.types import FaceBox
from pipeline.dialogue import (
    DialoguePlan,
    FaceSpec,
    faces_need_detection,
    follow_speaker_faces,
    pick_speaker_faces,
)
from pipeline.faces.config import DetectConfig
from pipeline.faces.landmarks import _face_runs
from pipeline.faces.tracking import face_index, follow_faces, left_to_right
from tests.media_fixtures import make_video
from tests.test_end_to_end import weights  # noqa: F401 - the seeded-checkpoint fixture

FRAME = (200, 400)  # height, width
# Three faces given out of left-to-right order: a small one in the centre, a big one on the right, one left.
MIDDLE = FaceBox(80, 120, 180, 220)  # centre x 200 = the frame centre, 40x40
RIGHT = FaceBox(20, 180, 250, 390)  # centre x 320, 160x140: the largest
LEFT = FaceBox(50, 150, 10, 110)  # centre x 60, 100x100


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("left", 2), ("right", 1), ("center", 0), ("largest", 1), ("0", 2), ("1", 0), ("2", 1), ("3", None)],
)
def test_the_face_rule_picks_by_box_centre_area_and_left_to_right_order(rule, expected):
    assert face_index([MIDDLE, RIGHT, LEFT], rule, FRAME) == expected


def test_the_face_rule_on_no_faces_and_a_bad_rule():
    assert face_index([], "left", FRAME) is None and face_index([], "0", FRAME) is None
    assert left_to_right([RIGHT, LEFT]) == [1, 0]
    with pytest.raises(InputError, match="left, right, center, largest"):
        face_index([LEFT], "middle", FRAME)


def _shift(box: FaceBox, dx: int) -> FaceBox:
    return FaceBox(box.top, box.bottom, box.left + dx, box.right + dx)


def test_each_track_follows_its_own_face_not_the_nearer_or_larger_one():
    a, b = FaceBox(50, 150, 100, 200), FaceBox(50, 150, 210, 310)
    frames = []
    for step in range(8):  # the faces walk towards each other, overlapping more and more; the order flips
        pair = [_shift(a, 6 * step), _shift(b, -6 * step)]
        frames.append(pair if step % 2 else pair[::-1])
    frames[3] = [frames[3][1]]  # A's face is missed in frame 3: A is None there (not B's face), then found
    followed = follow_faces([[], *frames], 1, [a, b])
    assert followed[0][0] is None and followed[1][0] is None  # before the first frame with faces
    assert [f.left for f in followed[0][1:] if f] == [100 + 6 * s for s in range(8) if s != 3]
    assert [f.left for f in followed[1][1:] if f] == [210 - 6 * s for s in range(8)]
    assert followed[0][4] is None


def _plan(**faces: FaceSpec) -> DialoguePlan:
    return DialoguePlan(faces=faces, voices={})


def test_speakers_pick_their_face_in_the_first_frame_with_faces():
    plan = _plan(A=FaceSpec(position="left"), B=FaceSpec(index=1), C=FaceSpec(box=(1, 2, 3, 4)))
    first, picked = pick_speaker_faces(plan, [[], [RIGHT, LEFT, MIDDLE], [LEFT]], FRAME)
    assert first == 1 and picked == {"A": LEFT, "B": MIDDLE}
    faces = follow_speaker_faces(
        plan, [[], [RIGHT, LEFT, MIDDLE], [LEFT]], DetectConfig(pads=(0, 5, 0, 0)), FRAME
    )
    assert faces.tracks["A"][0] is None and faces.tracks["A"][2].bottom == LEFT.bottom + 5  # padded
    assert faces.tracks["B"][2] is None  # the middle face is gone in frame 2: not replaced by another
    assert faces.tracks["C"] == [FaceBox(1, 2, 3, 4)] * 3
    assert faces.describe("A", plan.faces["A"]) == "left: box 50,150,10,110 in frame 1"


@pytest.mark.parametrize(
    ("faces", "per_frame", "error", "message"),
    [
        ({"A": "3", "B": "0"}, [[LEFT, RIGHT]], NoFaceError,
          "A=3: face not found: frame 0 (the first with faces) has 2 faces (index 0 to 1"),
        ({"A": "left", "B": "0"}, [[LEFT, RIGHT]], InputError,
          "--speaker-face A and B both pick the face at box 50,150,10,110"),
        ({"A": "largest", "B": "right"}, [[LEFT, RIGHT]], InputError, "both pick"),
        ({"A": "center", "B": "left"}, [[], []], NoFaceError,
          "A=center: face not found: no face in any of the 2 frames"),
    ],
)  # fmt: skip
def test_a_face_that_cannot_be_found_or_is_taken_twice_is_a_one_line_error(faces, per_frame, error, message):
    plan = _plan(
        **{s: FaceSpec(position=v) if not v.isdigit() else FaceSpec(index=int(v)) for s, v in faces.items()}
    )
    with pytest.raises(error, match=re.escape(message)) as info:
        pick_speaker_faces(plan, per_frame, FRAME)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)


def test_detection_is_needed_only_for_faces_by_position_or_index():
    assert not faces_need_detection(("A=box:1,2,3,4", "B=BOX:5,6,7,8"))
    assert faces_need_detection(("A=box:1,2,3,4", "B=right"))


def test_landmark_runs_end_where_the_face_jumps_to_another_speaker():
    assert _face_runs([LEFT, LEFT, RIGHT, None, RIGHT]) == [(0, 2), (2, 3), (4, 5)]


def test_no_face_in_the_video_exits_2_before_lip_sync(weights, tmp_path: Path, capsys):  # noqa: F811
    clip = make_video(tmp_path / "two.png", seconds=0.04, audio=False, extra=["-frames:v", "1"])  # a photo
    config = tmp_path / "detect.yaml"  # no score exceeds 1: the seeded detector finds nothing
    config.write_text("detect:\n  score_threshold: 1.0\n  detect_max_side: 160\n")
    out = tmp_path / "out" / "result.mp4"
    argv = ["--video", str(clip), "--text-string", "[A] Hi.\n[B] Yo.", "--config", str(config)]
    argv += ["--speaker-face", "A=left", "--speaker-face", "B=right", "--restorer", "none", "--device", "cpu"]
    argv += [
        "--wav2lip-checkpoint",
        str(weights["wav2lip"]),
        "--detector-checkpoint",
        str(weights["detector"]),
    ]
    argv += ["-o", str(out), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: --speaker-face A=left: face not found: no face in any of")
        and err.count("\n") == 1
    )
    assert not out.parent.exists()  # no partial video, not even the output folder
