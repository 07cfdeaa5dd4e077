"""Issue 7: whatever users feed the tool, each case ends in a clear one-line error or a correct video.

Tables of cases run through ``pipeline.cli.main(argv)`` in-process: every error case asserts its exit
code, the fragments of its one ``error:`` line (what, where, how to fix), that no output file and no
``.*.partial-*`` temporary exists and that no code ran from a checkpoint; every render case asserts the
frame count, size and streams of the video it wrote. Process behaviour (signals, peak memory) runs
``run_pipeline.py`` in a subprocess. Checkpoints are seeded files in the official layouts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.core import ffmpeg
from pipeline.core.media import decode_audio
from tests.media_fixtures import make_tone, make_video, read_all_frames, stream_info
from tests.weights_fixtures import write_official_checkpoint

REPO = Path(__file__).resolve().parent.parent
BOX = ("40", "100", "50", "110")  # top, bottom, left, right inside the 160x120 clips
MARKER = "MARKER"  # a pickle payload would create this file in the test's folder


@dataclasses.dataclass(frozen=True)
class Env:
    root: Path
    wav2lip: Path  # seeded Wav2Lip generator, official layout
    detector: Path  # seeded RetinaFace ResNet-50, official layout
    face: Path  # 160x120, 0.4 s, with audio
    tone: Path  # 0.2 s of 440 Hz, mono 44.1 kHz


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    root = tmp_path_factory.mktemp("bad_inputs")
    return Env(
        root,
        write_official_checkpoint("wav2lip_generator", root / "w" / "wav2lip_gan.pth"),
        write_official_checkpoint("retinaface_resnet50", root / "w" / "detection_Resnet50_Final.pth"),
        make_video(root / "face.mp4", seconds=0.4),
        make_tone(root / "tone.wav", seconds=0.2),
    )


def run_cli(env: Env, tmp: Path, args: list[str], capsys, box: bool = True) -> tuple[int, list[str]]:
    """``main`` with fast defaults (later flags in ``args`` override them); returns the stderr lines."""
    argv = ["--wav2lip-checkpoint", str(env.wav2lip), "--restorer", "none", "--device", "cpu", "--quiet"]
    argv += ["-o", str(tmp / "out" / "result.mp4")]
    argv += ["--box", *BOX] if box else ["--detector-checkpoint", str(env.detector)]
    code = main(argv + args)
    return code, capsys.readouterr().err.strip().splitlines()


def assert_nothing_written(tmp: Path, output: Path) -> None:
    assert not output.exists()
    assert not output.parent.exists()  # the run's output folder is created only for the render, and
    # removed again when the render fails
    assert [p for p in tmp.rglob("*") if ".partial" in p.name] == []
    assert not (tmp / MARKER).exists()


def ffmpeg_run(*args: str) -> None:
    subprocess.run([ffmpeg.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def detect_config(tmp: Path, threshold: float) -> str:
    path = tmp / "detect.yaml"
    path.write_text(f"detect:\n  score_threshold: {threshold}\n  detect_max_side: 160\n")
    return str(path)


# --- building the inputs of the cases --------------------------------------------------------------


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def fifo(path: Path) -> str:
    os.mkfifo(path)
    return str(path)


def unix_socket(path: Path) -> str:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    return str(path)


def truncated(source: Path, path: Path, keep: float = 0.5) -> str:
    data = source.read_bytes()
    return write(path, data[: int(len(data) * keep)])


def folder(path: Path) -> str:
    path.mkdir()
    return str(path)


def symlink(target: Path, path: Path) -> str:
    path.symlink_to(target)
    return str(path)


class Payload:
    """Unpickling this opens (creates) the marker file: code run from a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def payload_checkpoint(env: Env, tmp: Path) -> str:
    torch.save({"state_dict": {"w": torch.zeros(3)}, "extra": Payload(tmp / MARKER)}, tmp / "evil.pth")
    return str(tmp / "evil.pth")


def raw_pickle_payload(tmp: Path) -> str:
    return write(tmp / "evil_raw.pth", pickle.dumps({"state_dict": Payload(tmp / MARKER)}, protocol=2))


def old_pickle(env: Env, tmp: Path) -> str:
    """A checkpoint in torch's pre-1.6 format that also pickled the training arguments (a class)."""
    state = {"state_dict": {"w": torch.zeros(3)}, "args": argparse.Namespace(lr=1e-4)}
    torch.save(state, tmp / "old.pth", _use_new_zipfile_serialization=False)
    return str(tmp / "old.pth")


# --- error cases -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fails:
    args: Callable[[Env, Path], list[str]]  # builds the case's files under the test folder
    code: int
    says: tuple[str, ...]  # fragments of the one error line; "{tmp}" is the test folder
    box: bool = True


def base(e: Env) -> list[str]:
    """The shared face clip and tone as the run's inputs."""
    return ["--video", str(e.face), "--audio", str(e.tone)]


def _video(make: Callable[[Env, Path], str]) -> Callable[[Env, Path], list[str]]:
    return lambda e, t: ["--video", make(e, t), "--audio", str(e.tone)]


def _audio(make: Callable[[Env, Path], str]) -> Callable[[Env, Path], list[str]]:
    return lambda e, t: ["--video", str(e.face), "--audio", make(e, t)]


def _script(make: Callable[[Env, Path], str]) -> Callable[[Env, Path], list[str]]:
    return lambda e, t: ["--video", str(e.face), "--text", make(e, t)]


def _w2l(make: Callable[[Env, Path], str]) -> Callable[[Env, Path], list[str]]:
    return lambda e, t: [*base(e), "--wav2lip-checkpoint", make(e, t)]


def _out(make: Callable[[Env, Path], str]) -> Callable[[Env, Path], list[str]]:
    return lambda e, t: [*base(e), "-o", make(e, t)]


REFUSED = ("refused by the safe loader", "can run code", "official source")
CORRUPT = ("corrupt or truncated", "fetch it again")
ERRORS = {
    # inputs
    "video-missing": Fails(
        _video(lambda e, t: f"{t}/missing.mp4"), 2, ("video not found: {tmp}/missing.mp4",)
    ),
    "video-is-directory": Fails(_video(lambda e, t: str(t)), 2, ("video is a directory", "{tmp}")),
    "video-unreadable": Fails(_video(lambda e, t: "/proc/self/mem"), 2, ("/proc/self/mem cannot be read",)),
    "video-is-fifo": Fails(_video(lambda e, t: fifo(t / "pipe.mp4")), 2, ("not a regular file",)),
    "video-is-socket": Fails(_video(lambda e, t: unix_socket(t / "s.mp4")), 2, ("not a regular file",)),
    "video-random-bytes": Fails(
        _video(lambda e, t: write(t / "r.mp4", np.random.default_rng(0).bytes(4096))),
        2,
        ("video {tmp}/r.mp4 is not a media file ffmpeg can read", "Invalid data"),
    ),
    "video-zero-length": Fails(_video(lambda e, t: write(t / "z.mp4", b"")), 2, ("{tmp}/z.mp4 is empty",)),
    "video-without-index": Fails(
        _video(lambda e, t: truncated(e.face, t / "cut.mp4")), 2, ("not a media file", "moov atom not found")
    ),
    "video-is-audio-only": Fails(_video(lambda e, t: str(e.tone)), 2, ("has no video stream", "--video")),
    "audio-missing": Fails(_audio(lambda e, t: f"{t}/none.wav"), 2, ("audio not found: {tmp}/none.wav",)),
    "audio-zero-length": Fails(
        _audio(lambda e, t: write(t / "z.wav", b"")), 2, ("audio {tmp}/z.wav is empty",)
    ),
    "audio-without-stream": Fails(
        _audio(lambda e, t: str(make_video(t / "mute.mp4", 0.2, audio=False))), 2, ("has no audio stream",)
    ),
    # text
    "text-string-empty": Fails(lambda e, t: ["--video", str(e.face), "--text-string", ""], 2, ("is empty",)),
    "text-file-empty": Fails(
        _script(lambda e, t: write(t / "e.txt", b"\n  \n")), 2, ("{tmp}/e.txt is empty",)
    ),
    "text-only-punctuation": Fails(
        lambda e, t: ["--video", str(e.face), "--text-string", "?! ... -- ***"], 2, ("only punctuation",)
    ),
    "text-not-utf8": Fails(
        _script(lambda e, t: write(t / "l.txt", "café crème".encode("latin-1"))),
        2,
        ("{tmp}/l.txt is not UTF-8", "offset 3", "save it as UTF-8"),
    ),
    "text-file-missing": Fails(
        _script(lambda e, t: f"{t}/no.txt"), 2, ("script file not found: {tmp}/no.txt",)
    ),
    "no-speech-given": Fails(lambda e, t: ["--video", str(e.face)], 2, ("exactly one of", "got none")),
    "text-and-audio": Fails(
        lambda e, t: [*base(e), "--text-string", "hi"],
        2,
        ("exactly one of", "--text-string and --audio"),
    ),
    # paths
    "output-is-the-input": Fails(
        _out(lambda e, t: str(e.face)), 2, ("same file as the input", "-o/--output")
    ),
    "output-is-input-via-link": Fails(
        _out(lambda e, t: symlink(e.face, t / "link.mp4")), 2, ("same file as the input",)
    ),
    "output-parent-is-a-file": Fails(
        _out(lambda e, t: write(t / "f", b"x") + "/o.mp4"), 2, ("cannot create the output folder {tmp}/f",)
    ),
    "output-folder-is-a-broken-link": Fails(
        _out(lambda e, t: symlink(t / "gone", t / "link") + "/o.mp4"),
        2,
        ("cannot create the output folder {tmp}/link ({tmp}/link is in the way: not a folder)",),
    ),
    "output-not-writable": Fails(
        _out(lambda e, t: "/proc/o.mp4"), 2, ("output folder /proc is not writable",)
    ),
    "output-is-directory": Fails(_out(lambda e, t: folder(t / "d.mp4")), 2, ("d.mp4 is a directory",)),
    "output-suffix": Fails(_out(lambda e, t: f"{t}/o.avi"), 2, ("must end in one of .mkv, .mov, .mp4",)),
    "save-audio-is-input": Fails(
        lambda e, t: [*base(e), "--save-audio", str(e.tone)],
        2,
        ("--save-audio", "is one of the input files"),
    ),
    "crf-out-of-range": Fails(lambda e, t: [*base(e), "--crf", "99"], 2, ("--crf 99", "0..51")),
    "leading-dash-unquoted": Fails(
        lambda e, t: ["--audio", str(e.tone), "--video", "-y.mp4"],
        2,
        ("argument --video: expected one argument", "--video=-name.mp4"),
    ),
    "unknown-flag": Fails(
        lambda e, t: ["--lips", "big"], 2, ("unrecognized arguments: --lips big", "--help")
    ),
    "image-without-face": Fails(
        lambda e, t: [
            "--video",
            still(t / "blank.png"),
            "--audio",
            str(e.tone),
            "--config",
            detect_config(t, 1),
        ],
        2,
        ("no face found in any of the 1 frames", "--box"),
        box=False,
    ),
    "face-index-absent": Fails(
        lambda e, t: [*base(e), "--face", "100000", "--config", detect_config(t, 0.0)],
        2,
        ("no face found", "face choice '100000'"),
        box=False,
    ),
    # weights: exit code 3
    "weights-missing": Fails(
        _w2l(lambda e, t: f"{t}/no.pth"), 3, ("not found at the given path {tmp}/no.pth",)
    ),
    "weights-truncated": Fails(
        _w2l(lambda e, t: truncated(e.wav2lip, t / "half.pth")), 3, ("{tmp}/half.pth", *CORRUPT)
    ),
    "weights-empty": Fails(
        _w2l(lambda e, t: write(t / "e.pth", b"")), 3, ("{tmp}/e.pth", "is empty", "fetch it again")
    ),
    "weights-of-detector": Fails(
        _w2l(lambda e, t: str(e.detector)),
        3,
        ("holds a RetinaFace face detector", "not the Wav2Lip generator"),
    ),
    "weights-of-gfpgan": Fails(
        _w2l(lambda e, t: str(write_official_checkpoint("gfpgan_v1_clean_512", t / "GFPGANv1.4.pth"))),
        3,
        (
            "{tmp}/GFPGANv1.4.pth holds a GFPGAN face restorer",
            "not the Wav2Lip generator",
            "pass the right file",
        ),
    ),
    "weights-old-pickle": Fails(_w2l(old_pickle), 3, ("GLOBAL argparse.Namespace", *REFUSED)),
    "weights-pickle-payload": Fails(
        _w2l(payload_checkpoint), 3, ("{tmp}/evil.pth", "GLOBAL io.open", *REFUSED)
    ),
    "weights-raw-pickle-payload": Fails(_w2l(lambda e, t: raw_pickle_payload(t)), 3, REFUSED),
    "restorer-weights-of-wav2lip": Fails(
        lambda e, t: [*base(e), "--restorer", "gfpgan", "--restorer-checkpoint", str(e.wav2lip)],
        3,
        ("holds a Wav2Lip generator", "not a face restorer", "GFPGANv1.4.pth"),
    ),
    "detector-weights-truncated": Fails(
        lambda e, t: [*base(e), "--detector-checkpoint", truncated(e.detector, t / "det.pth", 0.3)],
        3,
        ("RetinaFace", *CORRUPT),
        box=False,
    ),
}


def still(path: Path) -> str:
    """A flat grey 160x120 photo: nothing in it looks like a face."""
    import cv2

    cv2.imwrite(str(path), np.full((120, 160, 3), 90, np.uint8))
    return str(path)


@pytest.mark.parametrize("case", ERRORS.values(), ids=ERRORS.keys())
def test_bad_input_gives_one_line_error_and_no_output(env: Env, tmp_path: Path, capsys, case: Fails):
    code, lines = run_cli(env, tmp_path, case.args(env, tmp_path), capsys, box=case.box)
    assert code == case.code, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in case.says:
        assert fragment.format(tmp=tmp_path) in lines[0]
    assert_nothing_written(tmp_path, tmp_path / "out" / "result.mp4")


def test_output_folder_is_created_for_the_render_and_removed_again_if_it_fails(tmp_path: Path):
    from pipeline.output_files import output_folder

    target = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), output_folder(target):
        assert target.is_dir()
        raise RuntimeError("the render failed")
    assert not (tmp_path / "a").exists()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep.txt").write_text("not ours")
    with pytest.raises(KeyboardInterrupt), output_folder(target):
        raise KeyboardInterrupt
    assert (tmp_path / "a" / "keep.txt").exists() and not target.exists()  # only what it created goes
    with output_folder(target):
        pass
    assert target.is_dir()
    (tmp_path / "x").mkdir()
    with pytest.raises(RuntimeError), output_folder(tmp_path / "x" / "y" / ".." / "z"):
        assert (tmp_path / "x" / "z").is_dir()  # "y/.." needs no folder y
        raise RuntimeError("the render failed")
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == []


def test_output_path_is_normalised():
    from pipeline.output_files import output_path

    assert output_path("new/../o.mp4", Path("face.mp4")) == Path("o.mp4")
    assert output_path("./out//a.mp4", Path("face.mp4")) == Path("out/a.mp4")
    assert output_path(None, Path("clips/face.mp4")) == Path("results/face_lipsync.mp4")


# --- inputs that must render -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Renders:
    args: Callable[[Env, Path], list[str]]  # builds the inputs; may pass -o relative to the test folder
    frames: int | None  # output frames (None: computed from the saved speech)
    size: tuple[int, int] = (160, 120)  # output width, height
    output: str = "out/result.mp4"  # where the video lands, relative to the test folder


def _lavfi_video(path: Path, *options: str, seconds: float = 0.4, rate: int = 25) -> str:
    ffmpeg_run(
        "-f", "lavfi", "-i", f"testsrc=size=160x120:rate={rate}:duration={seconds}", *options, str(path)
    )
    return str(path)


def _tone(path: Path, seconds: float, rate: int = 16000, channels: int = 1, source: str = "sine") -> str:
    ffmpeg_run("-f", "lavfi", "-i", f"{source}=sample_rate={rate}" if source == "sine" else source,
               "-t", str(seconds), "-ac", str(channels), "-ar", str(rate), str(path))  # fmt: skip
    return str(path)


def _with_tone(make: Callable[[Env, Path], str]) -> Callable[[Env, Path], list[str]]:
    return lambda e, t: ["--video", make(e, t), "--audio", str(e.tone)]


def _speech(make: Callable[[Env, Path], str]) -> Callable[[Env, Path], list[str]]:
    return lambda e, t: ["--video", str(e.face), "--audio", make(e, t)]


def _copy(source: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, path)
    return path


def one_frame(e: Env, t: Path) -> list[str]:
    return ["--video", _lavfi_video(t / "one.mp4", "-frames:v", "1"), "--audio", _tone(t / "a.wav", 0.6)]


def rotated(e: Env, t: Path) -> str:
    """The face clip with a phone's display matrix: shown rotated by 90 degrees (120x160)."""
    ffmpeg_run("-display_rotation", "90", "-i", str(e.face), "-c", "copy", str(t / "rot.mp4"))
    assert re.search(r"rotation of -?90.00 degrees", stream_info(t / "rot.mp4"))
    return str(t / "rot.mp4")


def interlaced(e: Env, t: Path) -> str:
    weave = ["-vf", "tinterlace=mode=interleave_top", "-flags", "+ilme+ildct"]
    video = _lavfi_video(t / "i.mp4", *weave, "-c:v", "libx264", rate=50)
    assert "top first" in stream_info(Path(video))
    return video


def ten_bit(e: Env, t: Path) -> str:
    video = _lavfi_video(t / "h.mp4", "-c:v", "libx264", "-pix_fmt", "yuv420p10le")
    assert "yuv420p10le" in stream_info(Path(video))
    return video


def variable_rate(e: Env, t: Path) -> list[str]:
    jitter = ["-vf", "setpts='PTS+0.02*sin(N)/TB'", "-fps_mode", "vfr"]
    video = make_video(t / "vfr.mkv", 1.0, fps=30, extra=jitter)
    return ["--video", str(video), "--audio", _tone(t / "a.wav", 0.8)]


def unicode_paths(e: Env, t: Path) -> list[str]:
    video = _copy(e.face, t / "my videos" / "vidéo 1 ✓.mp4")
    out = t / "new folder" / "nested" / "ré 1.mp4"  # the folders do not exist yet
    return ["--video", str(video), "--audio", str(e.tone), "-o", str(out)]


def dash_paths(e: Env, t: Path) -> list[str]:
    """Relative names that look like ffmpeg options ("-y"), written as argparse needs them."""
    video, audio = _copy(e.face, t / "-y.mp4"), _copy(e.tone, t / "-i.wav")
    return [f"--video={video.name}", f"--audio={audio.name}", "--output=-out.mp4"]


def mixed_scripts(e: Env, t: Path) -> list[str]:
    return ["--video", str(e.face), "--text-string", "Hi Привет 你", "--save-audio", str(t / "speech.wav")]


RENDERS = {
    "one-frame-video": Renders(one_frame, 15),
    "odd-size-641x361": Renders(_with_tone(lambda e, t: str(make_video(t / "o.mp4", 0.2, size="641x361"))), 5,
                                (640, 360)),
    "rotated-phone-video": Renders(_with_tone(rotated), 5, (120, 160)),
    "interlaced": Renders(_with_tone(interlaced), 5),
    "10-bit": Renders(_with_tone(ten_bit), 5),
    "variable-frame-rate": Renders(variable_rate, 20),
    "silent-audio": Renders(_speech(lambda e, t: _tone(t / "s.wav", 0.4, source="anullsrc=r=16000")), 10),
    "audio-10-ms": Renders(_speech(lambda e, t: _tone(t / "short.wav", 0.01)), 1),
    "audio-5.1-48kHz": Renders(_speech(lambda e, t: _tone(t / "surround.wav", 0.32, 48000, 6)), 8),
    "audio-8kHz": Renders(_speech(lambda e, t: _tone(t / "phone.wav", 0.32, 8000)), 8),
    "audio-48kHz": Renders(_speech(lambda e, t: _tone(t / "studio.wav", 0.32, 48000)), 8),
    "text-mixed-scripts": Renders(mixed_scripts, None),
    "paths-with-spaces-and-unicode": Renders(unicode_paths, 5, output="new folder/nested/ré 1.mp4"),
    "paths-with-leading-dash": Renders(dash_paths, 5, output="-out.mp4"),
}  # fmt: skip


@pytest.mark.parametrize("case", RENDERS.values(), ids=RENDERS.keys())
def test_awkward_input_renders_a_correct_video(env: Env, tmp_path: Path, capsys, monkeypatch, case: Renders):
    monkeypatch.chdir(tmp_path)  # relative names (the leading-dash case) resolve in the test folder
    code, lines = run_cli(env, tmp_path, case.args(env, tmp_path), capsys)
    assert code == 0, lines
    assert not [line for line in lines if line.startswith("error") or "Traceback" in line]
    output = tmp_path / case.output
    assert [p.name for p in output.parent.iterdir() if p.name.startswith(".")] == []  # no temporaries
    speech = decode_audio(tmp_path / "speech.wav").duration_s if case.frames is None else None
    expected = case.frames if case.frames is not None else max(1, round(speech * 25))
    frames = read_all_frames(output)
    assert frames.shape == (expected, case.size[1], case.size[0], 3)
    info = stream_info(output)
    assert "Video: h264" in info and "yuv420p(" in info and "Audio: aac" in info and "25 fps" in info
    assert decode_audio(output).duration_s == pytest.approx(speech or expected / 25, abs=0.08)


THREE_FACES = {"0": (30, 90, 8, 48), "center": (30, 90, 60, 100), "2": (30, 90, 112, 152)}  # t, b, l, r


class ThreeFaces:
    """Test double of the face detector: the same three faces, left to right, in every frame (the
    seeded RetinaFace only finds frame-sized boxes, so it cannot show which face was chosen)."""

    precision = "fp32"

    def detect(self, frames: np.ndarray) -> list[list]:
        from pipeline.core.types import FaceBox
        from pipeline.faces.landmarks import landmarks_from_box

        boxes = [FaceBox(*box) for box in THREE_FACES.values()]
        faces = [dataclasses.replace(b, landmarks=landmarks_from_box(b), score=0.99) for b in boxes]
        return [faces] * len(frames)


def test_several_faces_center_and_index_choose_the_face(env: Env, tmp_path: Path, capsys, monkeypatch):
    import pipeline.faces.detector

    monkeypatch.setattr(pipeline.faces.detector, "load_detector", lambda *args: ThreeFaces())
    source = read_all_frames(env.face)[:5].astype(np.int16)
    for choice in ("center", "2"):
        out = tmp_path / f"{choice}.mp4"
        args = [*base(env), "--face", choice, "--nosmooth", "-o", str(out)]
        code, lines = run_cli(env, tmp_path, args, capsys, box=False)
        assert code == 0, lines
        diff = np.abs(read_all_frames(out) - source)
        for name, (top, bottom, left, right) in THREE_FACES.items():
            mouth = diff[:, (top + bottom) // 2 + 5 : bottom - 3, left + 6 : right - 6].mean()
            assert (mouth > 8) if name == choice else (mouth < 3), (choice, name, mouth)


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their mode"
)
def test_video_without_read_permission(env: Env, tmp_path: Path, capsys):
    video = Path(shutil.copy(env.face, tmp_path / "locked.mp4"))
    video.chmod(0)
    code, lines = run_cli(env, tmp_path, ["--video", str(video), "--audio", str(env.tone)], capsys)
    assert code == 2 and lines == [f"error: video {video} cannot be read (Permission denied); "
                                   "check that it is a regular file you may read"]  # fmt: skip


# --- stage level: faces that leave the frame, out of GPU memory, hour-long speech, 4K detection ----


class MirrorNet(torch.nn.Module):
    """Test double of a restoration network (GFPGAN's call signature): mirrors the aligned face."""

    def forward(self, x: torch.Tensor, return_rgb: bool = False, randomize_noise: bool = False):
        return (torch.flip(x, dims=[3]),)


class FailsAbove(torch.nn.Module):
    """Wraps a network; raises ``error`` for batches larger than ``limit`` and records batch sizes."""

    def __init__(self, inner: torch.nn.Module, limit: int, error: type[Exception] = torch.OutOfMemoryError):
        super().__init__()
        self.inner, self.limit, self.error, self.sizes = inner, limit, error, []

    def forward(self, *args, **kwargs):
        self.sizes.append(len(args[-1] if len(args) == 2 else args[0]))
        if self.sizes[-1] > self.limit:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB (test)")
        return self.inner(*args, **kwargs)


@pytest.fixture(scope="module")
def generator(env: Env) -> torch.nn.Module:
    import wav2lip

    return wav2lip.load_generator(env.wav2lip, "cpu")


def _batch(n: int, faces: list[bool], seed: int = 0):
    from pipeline.core.types import FaceBox, FrameBatch
    from pipeline.faces.landmarks import landmarks_from_box

    rng = np.random.default_rng(seed)
    plain = FaceBox(30, 110, 40, 120)
    box = dataclasses.replace(plain, landmarks=landmarks_from_box(plain))
    frames = rng.integers(0, 256, (n, 120, 160, 3), dtype=np.uint8)
    mels = rng.uniform(-4, 4, (n, 80, 16)).astype(np.float32)
    return FrameBatch(0, frames, tuple(box if f else None for f in faces), mels)


def _restore_stage(network: torch.nn.Module, batch_size: int):
    from restore.config import RestoreConfig
    from restore.restorers import FaceRestorer
    from restore.stage import FaceRestoreStage

    restorer = FaceRestorer(network, "gfpgan", torch.device("cpu"), precision="fp32")
    return FaceRestoreStage(restorer, RestoreConfig(parsing=False, batch_size=batch_size))


def test_frames_whose_face_left_pass_the_stage_chain_bit_identical(generator):
    from pipeline.config import PipelineConfig
    from pipeline.render import StageTimes
    from pipeline.stages import StageChain
    from wav2lip.config import Wav2LipConfig
    from wav2lip.inference import LipSyncer

    batch = _batch(5, [True, False, False, True, False])
    lipsync = LipSyncer(generator, Wav2LipConfig(batch_size=4), "cpu")
    models = StageChain(PipelineConfig(), lipsync, None, _restore_stage(MirrorNet(), 2))
    out = models.process(batch, StageTimes()).frames
    for i in (1, 2, 4):
        np.testing.assert_array_equal(out[i], batch.frames[i])
    for i in (0, 3):
        assert np.abs(out[i].astype(np.int16) - batch.frames[i]).mean() > 5


def test_lipsync_out_of_memory_halves_the_batch_and_matches_a_normal_run(generator):
    from wav2lip.config import Wav2LipConfig
    from wav2lip.inference import LipSyncer, lipsync_frames

    batch = _batch(7, [True] * 7)
    wrapped = FailsAbove(generator, limit=3)
    syncer = LipSyncer(wrapped, Wav2LipConfig(batch_size=8), "cpu")
    with pytest.warns(UserWarning, match="lip-sync: out of GPU memory with a batch of 7; continuing with 3"):
        first = syncer.process(batch).frames
    second = syncer.process(batch).frames  # the smaller size is kept: no second failure
    assert wrapped.sizes == [7, 3, 3, 1, 3, 3, 1] and syncer.batch_size == 3
    normal = lipsync_frames(generator, batch.frames, batch.faces, batch.mel, 3, "cpu")
    np.testing.assert_array_equal(first, normal)
    np.testing.assert_array_equal(second, normal)
    whole = lipsync_frames(generator, batch.frames, batch.faces, batch.mel, 8, "cpu")
    assert np.abs(first.astype(np.int16) - whole).max() <= 1  # float noise of another batch size


def test_lipsync_out_of_memory_at_batch_1_is_an_error_and_other_errors_pass(generator):
    from pipeline.core.errors import OutOfMemory
    from wav2lip.config import Wav2LipConfig
    from wav2lip.inference import LipSyncer

    batch = _batch(2, [True, True])
    syncer = LipSyncer(FailsAbove(generator, limit=0), Wav2LipConfig(batch_size=2), "cpu")
    with pytest.warns(UserWarning, match="continuing with 1"), pytest.raises(OutOfMemory, match="batch of 1"):
        syncer.process(batch)
    # A model failure other than an allocation is never retried or swallowed (a RuntimeError that says
    # "out of memory", as cuBLAS/cuDNN report it, is retried: tests/test_adaptive_batch.py).
    broken = FailsAbove(
        generator, limit=0, error=lambda _: RuntimeError("CUDNN_STATUS_EXECUTION_FAILED (test)")
    )
    with pytest.raises(RuntimeError, match="test"):
        LipSyncer(broken, Wav2LipConfig(batch_size=2), "cpu").process(batch)
    assert broken.sizes == [2]


def test_restoration_out_of_memory_halves_the_batch_and_matches_a_normal_run():
    batch = _batch(3, [True, True, True], seed=1)
    wrapped = FailsAbove(MirrorNet(), limit=1)
    stage = _restore_stage(wrapped, batch_size=4)
    with pytest.warns(
        UserWarning, match="face restoration: out of GPU memory with a batch of 3; continuing with 1"
    ):
        restored = stage.process(batch).frames
    assert wrapped.sizes == [3, 1, 1, 1] and stage.batches.size == 1
    np.testing.assert_array_equal(restored, _restore_stage(MirrorNet(), batch_size=1).process(batch).frames)


class NearestTwice(torch.nn.Module):
    """A stand-in x2 super-resolution network: nearest-neighbour upsampling."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def test_background_upscaling_out_of_memory_halves_the_frames_per_forward():
    from restore.upsample import BackgroundUpsampler

    frames = np.random.default_rng(4).integers(0, 256, (3, 24, 32, 3), dtype=np.uint8)
    wrapped = FailsAbove(NearestTwice(), limit=1)
    upsampler = BackgroundUpsampler(wrapped, 2, torch.device("cpu"), precision="fp32")
    warning = "background upscaling: out of GPU memory with a batch of 3; continuing with 1"
    with pytest.warns(UserWarning, match=warning):
        out = upsampler.upsample(frames, 2)
    assert wrapped.sizes == [3, 1, 1, 1] and upsampler.batches.size == 1
    assert out.shape == (3, 48, 64, 3)
    np.testing.assert_array_equal(out, frames.repeat(2, axis=1).repeat(2, axis=2))


def test_out_of_memory_at_batch_1_through_the_cli(env: Env, tmp_path: Path, capsys, monkeypatch):
    import wav2lip

    load = wav2lip.load_generator_for_inference
    monkeypatch.setattr(
        wav2lip,
        "load_generator_for_inference",
        lambda path, device, precision: FailsAbove(load(path, device, precision), 0),
    )
    code, lines = run_cli(env, tmp_path, base(env), capsys)
    assert code == 1
    assert lines[-1].startswith("error: lip-sync ran out of GPU memory even with a batch of 1")
    assert "--device cpu" in lines[-1] and all(line.startswith("warning: ") for line in lines[:-1])
    assert_nothing_written(tmp_path, tmp_path / "out" / "result.mp4")


def test_hour_of_speech_mel_windows_are_cut_per_batch():
    from pipeline.core.types import AudioClip
    from pipeline.speech import SpeechTrack
    from wav2lip.audio import mel_window

    fps, hour_frames = 25.0, 90_000
    mel = np.random.default_rng(0).standard_normal((80, 3600 * 80 + 1), dtype=np.float32)
    track = SpeechTrack(AudioClip(np.zeros(1, np.float32), 16000), mel, fps, hour_frames)
    start = time.perf_counter()
    windows = track.mel_windows(hour_frames - 40, 40)  # the last batch of the hour
    assert time.perf_counter() - start < 0.5  # cut from the spectrogram on demand, not precomputed
    assert windows.shape == (40, 80, 16) and windows.dtype == np.float32
    np.testing.assert_array_equal(windows[0], mel_window(mel, hour_frames - 40, fps))
    np.testing.assert_array_equal(windows[-1], mel[:, -16:])  # past the official count: the final window


def test_4k_detection_runs_on_a_downscaled_copy_and_maps_back(env: Env):
    from pipeline.faces.config import DetectConfig
    from pipeline.faces.detector import downscale_frames, load_detector

    detector = load_detector(DetectConfig(detect_max_side=160, score_threshold=0.0), env.detector, "cpu")
    seen, network = [], detector.network
    detector.network = lambda x: (seen.append(tuple(x.shape)), network(x))[1]
    frames = np.random.default_rng(0).integers(0, 256, (1, 2160, 3840, 3), dtype=np.uint8)
    full = detector.detect_raw(frames)[0]
    assert seen == [(1, 3, 90, 160)]
    small = detector.detect_raw(downscale_frames(frames, 160))[0]  # the same copy, at its own size
    assert len(full) > 0 and full[:, 2].max() > 160
    np.testing.assert_allclose(full[:, :4], small[:, :4] * 24.0, rtol=1e-4, atol=1e-2)
    np.testing.assert_array_equal(full[:, 4], small[:, 4])


# --- a 50,000-character script ---------------------------------------------------------------------

SCRIPTS_50K = {
    "prose": ("The quick brown fox, Dr. Smith said, jumps over the lazy dog. " * 900)[:50_000],
    "one word": "a" * 50_000,
    "dots": "word" + "." * 49_996,
    "mixed": ("Hello 你好。Привет! مرحبا… e.g. No. 5 — fine?\n\n" * 1200)[:50_000],
}


@pytest.mark.parametrize("name", SCRIPTS_50K)
def test_50k_character_script_is_validated_and_planned_fast(tmp_path: Path, name: str):
    from tts import read_script
    from tts.text import MAX_PIECE_CHARS, plan_pieces

    path = tmp_path / "script.txt"
    path.write_text(SCRIPTS_50K[name], encoding="utf-8")
    start = time.perf_counter()
    pieces = plan_pieces(read_script(path), 0.25, 0.6)
    assert time.perf_counter() - start < 1.0
    assert pieces and all(0 < len(p.text) <= MAX_PIECE_CHARS for p in pieces)


def test_50k_character_script_fails_fast_before_any_synthesis(env: Env, tmp_path: Path, capsys):
    script = tmp_path / "long.txt"
    script.write_text(SCRIPTS_50K["prose"], encoding="utf-8")
    start = time.perf_counter()
    args = ["--video", str(env.face), "--text", str(script), "--wav2lip-checkpoint", str(tmp_path / "no.pth")]
    code, lines = run_cli(env, tmp_path, args, capsys)  # weights are checked before speech is made
    assert code == 3 and "not found at the given path" in lines[0]
    script.write_text("… " * 25_000, encoding="utf-8")
    code, lines = run_cli(env, tmp_path, ["--video", str(env.face), "--text", str(script)], capsys)
    assert code == 2 and "only punctuation" in lines[0]
    assert time.perf_counter() - start < 3.0


# --- ffmpeg missing or failing ---------------------------------------------------------------------


@pytest.fixture
def ffmpeg_lookup(monkeypatch):
    """Where ffmpeg is found, patchable: the cached lookup is reset before and after the test."""
    ffmpeg.ffmpeg_exe.cache_clear()
    yield monkeypatch
    ffmpeg.ffmpeg_exe.cache_clear()


def test_ffmpeg_missing(env: Env, tmp_path: Path, capsys, ffmpeg_lookup):
    import imageio_ffmpeg

    def none_found():
        raise RuntimeError("No ffmpeg exe could be found")

    ffmpeg_lookup.setenv("PATH", folder(tmp_path / "empty_path"))
    ffmpeg_lookup.delenv("IMAGEIO_FFMPEG_EXE", raising=False)
    ffmpeg_lookup.setattr(imageio_ffmpeg, "get_ffmpeg_exe", none_found)
    code, lines = run_cli(env, tmp_path, base(env), capsys)
    assert code == 1 and lines == [
        "error: ffmpeg not found: install it (apt-get install ffmpeg) or `pip install imageio-ffmpeg`"
    ]
    assert_nothing_written(tmp_path, tmp_path / "out" / "result.mp4")


def test_ffmpeg_named_by_imageio_env_but_not_executable(env: Env, tmp_path: Path, capsys, ffmpeg_lookup):
    ffmpeg_lookup.setenv("PATH", folder(tmp_path / "empty_path"))
    ffmpeg_lookup.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "ffmpeg-gone"))
    code, lines = run_cli(env, tmp_path, base(env), capsys)
    assert code == 1 and len(lines) == 1
    assert f"ffmpeg at {tmp_path / 'ffmpeg-gone'}" in lines[0] and "IMAGEIO_FFMPEG_EXE" in lines[0]


def _broken_args(monkeypatch, name: str, old: str, new: str) -> None:
    """Make ffmpeg's own argument builder ``name`` produce a command ffmpeg rejects."""
    original = getattr(ffmpeg, name)
    monkeypatch.setattr(
        ffmpeg, name, lambda *a, **k: [new if arg == old else arg for arg in original(*a, **k)]
    )


def test_encoder_failure_reports_ffmpegs_line(env: Env, tmp_path: Path, capsys, monkeypatch):
    _broken_args(monkeypatch, "encode_args", "libx264", "no_such_encoder")
    code, lines = run_cli(env, tmp_path, base(env), capsys)
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"error: encoding {tmp_path / 'out' / 'result.mp4'} failed")
    assert "Unknown encoder 'no_such_encoder'" in lines[0]
    assert_nothing_written(tmp_path, tmp_path / "out" / "result.mp4")


def test_decoder_failure_mid_render_reports_ffmpegs_line(env: Env, tmp_path: Path, capsys, monkeypatch):
    _broken_args(monkeypatch, "decode_video_args", "rawvideo", "no_such_format")
    code, lines = run_cli(env, tmp_path, base(env), capsys)
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"error: decoding {env.face} failed: ")
    assert "Error initializing the muxer for pipe:1" in lines[0]  # ffmpeg's own words
    assert_nothing_written(tmp_path, tmp_path / "out" / "result.mp4")


# --- the exit-code and message contract ------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("speech", ["audio", "coqui"])
def test_cuda_asked_for_without_cuda_is_one_line_exit_2(env: Env, tmp_path: Path, capsys, speech: str):
    # The device is chosen in the model-loading thread; its error reaches the user like any other, also
    # when a Coqui voice asks for the device first (the Coqui package itself is never reached).
    coqui = ["--video", str(env.face), "--text-string", "hi", "--tts", "coqui"]
    args = base(env) if speech == "audio" else coqui
    code, lines = run_cli(env, tmp_path, [*args, "--device", "cuda"], capsys)
    assert code == 2
    assert lines == ["error: --device cuda was asked for, but no CUDA device is available (use --device cpu)"]
    assert_nothing_written(tmp_path, tmp_path / "out" / "result.mp4")


def test_debug_adds_the_traceback(env: Env, tmp_path: Path, capsys):
    code, lines = run_cli(env, tmp_path, ["--video", str(tmp_path / "none.mp4"), "--text-string", "hi",
                                          "--debug"], capsys)  # fmt: skip
    assert code == 2 and lines[0].startswith("Traceback") and "InputError" in "\n".join(lines)
    assert lines[-1] == f"error: video not found: {tmp_path / 'none.mp4'}"


def test_unexpected_failure_is_one_line_with_exit_1(env: Env, tmp_path: Path, capsys, monkeypatch):
    import pipeline.render

    def crash(*args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(pipeline.render, "speech_audio", crash)
    code, lines = run_cli(env, tmp_path, base(env), capsys)
    assert code == 1
    assert lines == ["error: ZeroDivisionError: division by zero (run with --debug for the traceback)"]


def test_ctrl_c_while_the_frames_are_counted_kills_the_count(env: Env, tmp_path: Path, capsys, monkeypatch):
    import pipeline.render
    from pipeline.core.media import FrameCounter

    never = tmp_path / "never.mp4"
    os.mkfifo(never)  # the count never ends on its own
    counters = []

    def start_count(config, inputs, n_output, fixed=False):
        counters.append(FrameCounter(never, 25))
        return counters[-1]

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.render, "_start_count", start_count)
    monkeypatch.setattr(pipeline.render, "read_first_frame", interrupted)
    code, lines = run_cli(env, tmp_path, base(env), capsys)
    assert code == 130 and lines == ["error: interrupted; no output was written"]
    assert len(counters) == 1 and counters[0]._process.poll() is not None  # ffmpeg killed, not orphaned
    assert_nothing_written(tmp_path, tmp_path / "out" / "result.mp4")


def test_help_returns_0(capsys):
    assert main(["--help"]) == 0
    assert "Exit codes: 0 success, 2 bad input or usage" in capsys.readouterr().out


# --- process behaviour: signals mid-render, peak memory on 4K ---------------------------------------

PROGRESS = re.compile(r"render:\s+\d+%\|[^|]*\|\s*([1-9]\d*)/\d+")  # tqdm after at least one frame


class Render:
    """``run_pipeline.py`` in a subprocess; its stderr is collected by a thread."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.process = subprocess.Popen([sys.executable, str(REPO / "run_pipeline.py"), *argv], cwd=cwd,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        self.err = b""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        while chunk := self.process.stderr.read1(4096):
            self.err += chunk

    def wait_for(self, pattern: re.Pattern, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not pattern.search(self.err.decode(errors="replace")):
            assert self.process.poll() is None, self.err.decode(errors="replace")
            assert time.monotonic() < deadline, self.err.decode(errors="replace")
            time.sleep(0.05)

    def finish(self, timeout_s: float) -> tuple[int, str]:
        code = self.process.wait(timeout=timeout_s)
        self.reader.join(timeout=5)
        return code, self.err.decode(errors="replace")


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="lists processes through /proc")
def test_ctrl_c_and_sigterm_mid_render_leave_nothing_behind(env: Env, tmp_path: Path):
    clip = make_video(tmp_path / "long.mp4", seconds=12.0)
    config = tmp_path / "small_batches.yaml"
    config.write_text("frame_batch: 4\n")
    renders = {}
    for sig in (signal.SIGINT, signal.SIGTERM):  # both at once: the two start-ups overlap
        folder = tmp_path / sig.name
        argv = ["--video", str(clip), "--audio", str(clip), "-o", str(folder / "out.mp4"), "--box", *BOX,
                "--wav2lip-checkpoint", str(env.wav2lip), "--restorer", "none", "--device", "cpu",
                "--config", str(config)]  # fmt: skip
        renders[sig] = (Render(argv, tmp_path), folder)
    for sig, (render, folder) in renders.items():
        render.wait_for(PROGRESS, timeout_s=90)
        deadline = time.monotonic() + 10
        while not list(folder.glob(".out.partial-*.mp4")):  # the encoder is writing
            assert time.monotonic() < deadline and render.process.poll() is None
            time.sleep(0.02)
        render.process.send_signal(sig)
    expected = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated (SIGTERM)"}
    for sig, (render, folder) in renders.items():
        code, err = render.finish(timeout_s=30)
        last = [line for line in re.split(r"[\r\n]+", err) if line.strip()][-1]
        assert code == 130 and last == f"error: {expected[sig]}; no output was written", err
        assert "Traceback" not in err
        assert not folder.exists()  # no output, no temporary, not even the folder the run created
    assert _processes_mentioning(str(tmp_path)) == []  # the ffmpeg decoders and encoders are gone


PEAK_RSS_PROBE = """
import json, resource, sys
import cv2, numpy, torch  # what every run imports: the baseline
import pipeline.render, wav2lip.models
from pipeline.cli import main
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
code = main(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"code": code, "growth_mib": (peak - base) / 1024}))
"""
MAX_4K_GROWTH_MIB = 900  # the 40 decoded 4K frames alone are 949 MiB; streaming holds a few at a time


def test_4k_input_renders_with_bounded_memory(env: Env, tmp_path: Path):
    uhd = {"size": "3840x2160", "source": "testsrc2", "extra": ["-preset", "ultrafast"]}
    clip = make_video(tmp_path / "uhd.mp4", seconds=1.6, **uhd)
    config = tmp_path / "fast.yaml"
    config.write_text("output:\n  preset: ultrafast\n")
    out = tmp_path / "out.mp4"
    argv = ["--video", str(clip), "--audio", str(clip), "-o", str(out), "--box", "900", "1300", "1700",
            "2100", "--wav2lip-checkpoint", str(env.wav2lip), "--restorer", "none", "--device", "cpu",
            "--quiet", "--config", str(config)]  # fmt: skip
    result = subprocess.run([sys.executable, "-c", PEAK_RSS_PROBE, *argv], cwd=REPO, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, result.stderr
    assert report["growth_mib"] < MAX_4K_GROWTH_MIB, report
    info = stream_info(out)
    assert "3840x2160" in info and "Duration: 00:00:01.6" in info


def test_nvenc_this_ffmpeg_cannot_use_is_refused_before_any_work(
    env: Env, tmp_path: Path, capsys, monkeypatch
):
    from pipeline.core import encoders

    monkeypatch.setattr(encoders, "nvenc_works", lambda: False)
    code, lines = run_cli(env, tmp_path, base(env) + ["--encoder", "nvenc"], capsys)
    assert code == 2 and len(lines) == 1  # a bad input
    assert lines[0].startswith("error: --encoder nvenc: ") and "use --encoder x264 or auto" in lines[0]
    assert_nothing_written(tmp_path, tmp_path / "out" / "result.mp4")
