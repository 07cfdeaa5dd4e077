"""The H.264 encoder choice (auto / x264 / nvenc) and NVENC's arguments, checked without a GPU."""

from __future__ import annotations

import re
import subprocess

import pytest

from pipeline import cli
from pipeline.config import build_config
from pipeline.core import encoders, ffmpeg
from pipeline.core.encoders import choose_encoder, lists_encoder, nvenc_probe_args
from pipeline.core.errors import InputError

ENCODERS_WITHOUT_NVENC = """Encoders:
 V..... = Video
 ------
 V....D libx264              libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 V....D hevc_nvenc           NVIDIA NVENC hevc encoder (codec hevc)
"""
ENCODERS_WITH_NVENC = ENCODERS_WITHOUT_NVENC + " V....D h264_nvenc           NVIDIA NVENC H.264 encoder\n"


def test_nvenc_args_target_constant_quality_at_the_crf_number():
    args = ffmpeg.encode_args("out.mp4", 1280, 720, 25, 18, "medium", audio_fd=5, encoder="nvenc")
    joined = " ".join(args)
    assert "-c:v h264_nvenc -preset p5 -rc vbr -cq 18 -b:v 0 -spatial-aq 1 -pix_fmt yuv420p" in joined
    assert "libx264" not in joined and "-crf" not in args
    assert "-c:a aac" in joined and "-movflags +faststart" in joined  # the rest is the x264 command's
    x264 = ffmpeg.encode_args("out.mp4", 1280, 720, 25, 18, "medium", audio_fd=5)
    assert "-c:v libx264 -preset medium -crf 18 -pix_fmt yuv420p" in " ".join(x264)
    with pytest.raises(ValueError, match="unknown encoder"):
        ffmpeg.video_codec_args("vp9", 18, "medium")


def test_this_ffmpeg_knows_every_nvenc_option_we_pass():
    """Catches a misspelt or renamed option here, before it meets a GPU."""
    listing = subprocess.run(
        [ffmpeg.ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True
    )
    if not lists_encoder(listing.stdout, "h264_nvenc"):
        pytest.skip("this ffmpeg is built without h264_nvenc")
    help_text = subprocess.run(
        [ffmpeg.ffmpeg_exe(), "-hide_banner", "-h", "encoder=h264_nvenc"], capture_output=True, text=True
    ).stdout
    options = set(re.findall(r"^\s+-([\w-]+)\s", help_text, re.MULTILINE))
    values = set(re.findall(r"^\s+(\w+)\s+-?\d+\s+E", help_text, re.MULTILINE))
    assert {"preset", "rc", "cq", "spatial-aq"} <= options
    assert {"p5", "vbr"} <= values


def test_the_encoder_listing_is_read_by_name():
    assert lists_encoder(ENCODERS_WITH_NVENC, "h264_nvenc")
    assert not lists_encoder(ENCODERS_WITHOUT_NVENC, "h264_nvenc")  # hevc_nvenc is another encoder
    assert lists_encoder(ENCODERS_WITHOUT_NVENC, "libx264")


@pytest.mark.parametrize(
    "requested, device, usable, expected",
    [
        ("auto", "cuda", True, "nvenc"),
        ("auto", "cuda", False, "x264"),
        ("auto", "cpu", True, "x264"),  # a CPU run keeps x264 even where NVENC works
        ("x264", "cuda", True, "x264"),
        ("nvenc", "cuda", True, "nvenc"),
        ("nvenc", "cpu", True, "nvenc"),  # asked for explicitly: the encoder does not need torch's GPU
    ],
)
def test_choice(requested, device, usable, expected):
    assert choose_encoder(requested, device, lambda: usable) == expected


def test_nvenc_that_cannot_be_used_is_a_one_line_error():
    with pytest.raises(InputError, match="--encoder nvenc: .* use --encoder x264 or auto"):
        choose_encoder("nvenc", "cuda", lambda: False)
    with pytest.raises(InputError, match="output.encoder must be one of auto, x264, nvenc"):
        choose_encoder("h265", "cuda", lambda: True)


def test_auto_picks_x264_where_ffmpeg_lacks_nvenc(monkeypatch):
    calls: list[list[str]] = []

    def fake_run(args, **kwargs):
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, stdout=ENCODERS_WITHOUT_NVENC, stderr="")

    monkeypatch.setattr(encoders.subprocess, "run", fake_run)
    encoders.nvenc_works.cache_clear()
    try:
        assert choose_encoder("auto", "cuda") == "x264"
    finally:
        encoders.nvenc_works.cache_clear()
    assert len(calls) == 1 and calls[0][1:] == ["-hide_banner", "-encoders"]  # no test encode tried


def test_auto_picks_x264_where_nvenc_is_listed_but_cannot_open(monkeypatch):
    """ffmpeg builds list NVENC without a driver (and an H100 has no NVENC engine): the test encode
    decides. The installed ffmpeg's real test encode is used where it lists NVENC and no GPU is here."""
    results = iter([(0, ENCODERS_WITH_NVENC), (1, "")])

    def fake_run(args, **kwargs):
        code, out = next(results)
        return subprocess.CompletedProcess(args, code, stdout=out, stderr=b"Cannot load libcuda.so.1")

    monkeypatch.setattr(encoders.subprocess, "run", fake_run)
    encoders.nvenc_works.cache_clear()
    try:
        assert choose_encoder("auto", "cuda") == "x264"
    finally:
        encoders.nvenc_works.cache_clear()


def test_the_probe_encodes_one_frame_with_the_render_options_to_nowhere():
    args = nvenc_probe_args()
    assert args[0] == ffmpeg.ffmpeg_exe() and args[-3:] == ["-f", "null", "-"]
    assert " ".join(ffmpeg.video_codec_args("nvenc", 18, "medium")) in " ".join(args)
    assert args[args.index("-frames:v") + 1] == "1"


def test_config_and_cli_take_the_encoder():
    assert build_config({}).output.encoder == "auto"
    parsed = cli.build_parser().parse_args(["--encoder", "x264"])
    assert build_config(cli.overrides_from_args(parsed)).output.encoder == "x264"
    with pytest.raises(cli.UsageError, match="--encoder: invalid choice"):
        cli.build_parser().parse_args(["--encoder", "h265"])
