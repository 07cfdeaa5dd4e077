"""The whole CLI on short generated clips, with seeded checkpoints in the official layouts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.core.media import decode_audio
from tests.media_fixtures import make_tone, make_video, read_all_frames, stream_info
from tests.weights_fixtures import write_official_checkpoint

REPO = Path(__file__).resolve().parent.parent
BOX = (40, 100, 50, 110)  # top, bottom, left, right in the 160x120 test clips


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("weights")
    return {
        "wav2lip": write_official_checkpoint("wav2lip_generator", root / "wav2lip_gan.pth"),
        "detector": write_official_checkpoint("retinaface_resnet50", root / "detection_Resnet50_Final.pth"),
        "gfpgan": write_official_checkpoint("gfpgan_v1_clean_512", root / "GFPGANv1.4.pth"),
    }


def _render(weights, tmp_path: Path, *extra: str, restorer: str = "none") -> tuple[int, Path]:
    out = tmp_path / "out" / "result.mp4"
    argv = [
        "--wav2lip-checkpoint",
        str(weights["wav2lip"]),
        "--restorer",
        restorer,
        "-o",
        str(out),
        "--quiet",
        "--debug",
        "--device",
        "cpu",
        *extra,
    ]
    if restorer == "gfpgan":
        argv += ["--restorer-checkpoint", str(weights["gfpgan"])]
    if "--box" not in extra:
        argv += ["--detector-checkpoint", str(weights["detector"])]
    return main(argv), out


def _frame_count(path: Path) -> int:
    return len(read_all_frames(path))


def _box_args() -> list[str]:
    return ["--box", *map(str, BOX)]


def test_text_to_video_length_fps_audio_and_mouth(weights, tmp_path: Path):
    clip = make_video(tmp_path / "face.mp4", seconds=1.0)
    speech = tmp_path / "speech.wav"
    code, out = _render(
        weights,
        tmp_path,
        "--video",
        str(clip),
        "--text-string",
        "Hello world, this is a test.",
        "--save-audio",
        str(speech),
        *_box_args(),
    )
    assert code == 0 and out.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["result.mp4"]  # no temporary left behind
    duration = decode_audio(speech).duration_s
    info = stream_info(out)
    assert "25 fps" in info and "Audio: aac" in info and "Video: h264" in info
    frames = read_all_frames(out)
    assert abs(len(frames) - duration * 25) <= 1
    assert decode_audio(out).duration_s == pytest.approx(duration, abs=0.1)
    source = read_all_frames(clip)
    from pipeline.timeline import source_indices

    expected = source[source_indices(len(source), len(frames))].astype(np.int16)
    diff = np.abs(frames.astype(np.int16) - expected)
    top, bottom, left, right = BOX
    outside = diff.copy()
    outside[:, top:bottom, left:right] = 0
    mouth = diff[:, (top + bottom) // 2 + 5 : bottom - 5, left + 10 : right - 10]
    assert outside.mean() < 2.5  # only codec noise outside the face box
    assert mouth.mean() > 8  # the lower face was regenerated


def test_audio_input_and_shorter_video_is_ping_ponged(weights, tmp_path: Path):
    clip = make_video(tmp_path / "short.mp4", seconds=0.6, fps=30)  # 30 fps input, 15 frames at 25 fps
    tone = make_tone(tmp_path / "tone.wav", seconds=2.2, rate=44100, channels=2)
    code, out = _render(weights, tmp_path, "--video", str(clip), "--audio", str(tone), *_box_args())
    assert code == 0
    assert abs(_frame_count(out) - 55) <= 1
    assert decode_audio(out).duration_s == pytest.approx(2.2, abs=0.1)


def test_still_image_becomes_talking_head(weights, tmp_path: Path):
    image = tmp_path / "face.png"
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"import cv2, numpy as np; cv2.imwrite({str(image)!r}, np.full((121, 161, 3), 90, np.uint8))",
        ],
        check=True,
    )
    tone = make_tone(tmp_path / "tone.wav", seconds=0.8)
    code, out = _render(weights, tmp_path, "--video", str(image), "--audio", str(tone), *_box_args())
    assert code == 0
    frames = read_all_frames(out)
    assert len(frames) == 20 and frames.shape[1:] == (120, 160, 3)


def test_variable_frame_rate_input_has_correct_length(weights, tmp_path: Path):
    vfr = make_video(
        tmp_path / "vfr.mkv",
        seconds=2.0,
        fps=30,
        extra=["-vf", "setpts='PTS+0.02*sin(N)/TB'", "-fps_mode", "vfr"],
    )
    tone = make_tone(tmp_path / "tone.wav", seconds=1.6)
    code, out = _render(weights, tmp_path, "--video", str(vfr), "--audio", str(tone), *_box_args())
    assert code == 0
    assert abs(_frame_count(out) - 40) <= 1


def test_missing_weight_override_exit_code_3(weights, tmp_path: Path, capsys):
    clip = make_video(tmp_path / "face.mp4", seconds=0.4)
    missing = tmp_path / "nowhere" / "wav2lip_gan.pth"
    code = main(
        [
            "--video",
            str(clip),
            "--text-string",
            "hi",
            "--wav2lip-checkpoint",
            str(missing),
            "--restorer",
            "none",
            "--box",
            *map(str, BOX),
            "-o",
            str(tmp_path / "o.mp4"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert str(missing) in err
    assert not (tmp_path / "o.mp4").exists()


def test_missing_default_weights_name_file_source_and_fetch(tmp_path: Path):
    clip = make_video(tmp_path / "face.mp4", seconds=0.4)
    env = {**os.environ, "LIPSYNC_WEIGHTS_DIR": str(tmp_path / "empty")}
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "run_pipeline.py"),
            "--video",
            str(clip),
            "--text-string",
            "hi",
            "-o",
            str(tmp_path / "o.mp4"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 3
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error: ")
    assert str(tmp_path / "empty" / "wav2lip_gan.pth") in line
    assert "python -m pipeline.weights fetch" in line or "download" in line
    assert not (tmp_path / "o.mp4").exists()


def test_cli_process_reports_one_line_errors(tmp_path: Path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "run_pipeline.py"),
            "--video",
            str(tmp_path / "none.mp4"),
            "--text-string",
            "hi",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: video not found: {tmp_path / 'none.mp4'}"
    assert "Traceback" not in result.stderr


def _detect_config(tmp_path: Path, threshold: float) -> str:
    path = tmp_path / "detect.yaml"
    path.write_text(f"detect:\n  score_threshold: {threshold}\n  detect_max_side: 160\n")
    return str(path)


@pytest.mark.slow
def test_restoration_batches_filled_across_streaming_batches_match_one_face_at_a_time(weights, tmp_path):
    """Streaming batches of 2 frames, restoration forwards of 3 faces (queued across them) against one
    face per forward: the same video, frame for frame."""
    clip = make_video(tmp_path / "face.mp4", seconds=0.4)
    tone = make_tone(tmp_path / "tone.wav", seconds=0.2)
    config = tmp_path / "stream.yaml"
    detect = "detect:\n  score_threshold: 0.0\n  detect_max_side: 160\n"  # landmarks align the faces
    config.write_text(detect + "frame_batch: 2\nrestore:\n  parsing: false\n")
    videos = {}
    for faces_per_forward in ("1", "3"):
        code, out = _render(
            weights, tmp_path / faces_per_forward, "--video", str(clip), "--audio", str(tone),
            "--config", str(config), "--restore-batch", faces_per_forward, restorer="gfpgan",
        )  # fmt: skip
        assert code == 0
        videos[faces_per_forward] = read_all_frames(out)
    assert videos["3"].shape == videos["1"].shape == (5, 120, 160, 3)
    per_frame = np.abs(videos["3"].astype(np.int16) - videos["1"]).mean(axis=(1, 2, 3))
    assert per_frame.max() < 0.5  # every frame its own face, in order
    assert np.abs(videos["1"].astype(np.int16) - read_all_frames(clip)[:5]).mean() > 1  # restored


def test_detector_finding_no_face_is_an_error_before_rendering(weights, tmp_path: Path, capsys):
    clip = make_video(tmp_path / "face.mp4", seconds=0.4)
    code, out = _render(
        weights,
        tmp_path,
        "--video",
        str(clip),
        "--text-string",
        "hi",
        "--save-audio",
        str(tmp_path / "out" / "speech.wav"),
        "--config",
        _detect_config(tmp_path, 1.0),
    )  # no score exceeds 1
    err = capsys.readouterr().err
    assert code == 2
    assert "no face" in err.lower() and "--box" in err
    assert not out.exists()
    assert not out.parent.exists()  # no partial video, no speech, not even the output folder


def test_detected_landmarks_drive_gfpgan_restoration(weights, tmp_path: Path):
    # With a zero threshold the seeded detector reports boxes everywhere: the largest is followed,
    # its landmarks align the face for GFPGAN, and the restored face is pasted back.
    clip = make_video(tmp_path / "face.mp4", seconds=0.4)
    tone = make_tone(tmp_path / "tone.wav", seconds=0.2)
    code, out = _render(
        weights,
        tmp_path,
        "--video",
        str(clip),
        "--audio",
        str(tone),
        "--config",
        _detect_config(tmp_path, 0.0),
        restorer="gfpgan",
    )
    assert code == 0
    frames = read_all_frames(out)
    assert frames.shape == (5, 120, 160, 3)
    source = read_all_frames(clip)[:5]
    assert np.abs(frames.astype(np.int16) - source).mean() > 1  # something was restored and pasted
