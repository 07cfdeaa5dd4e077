"""Which H.264 encoder writes the output: libx264 on the CPU, or NVIDIA's NVENC when a GPU renders.

x264 ``medium`` at CRF 18 encodes 720p at roughly 100-200 frames/s on a few cores, which caps a GPU
render; NVENC encodes on the GPU's own video engine. ``auto`` picks NVENC only for a CUDA run whose
ffmpeg lists ``h264_nvenc`` and can open it (a one-frame test encode: ffmpeg builds list NVENC without
a driver, and data-centre GPUs such as the A100, H100 and H200 have no NVENC engine at all).

Quality: x264 CRF 18 is matched with NVENC's constant-quality mode, ``-rc vbr -cq 18 -b:v 0`` (``-b:v 0``
lifts the default bitrate cap so the quality target alone decides), preset ``p5`` (slow, good quality;
still several hundred 720p frames/s) and spatial adaptive quantisation (x264 adapts the quantiser by
default; without it NVENC spends too few bits on flat skin). ``-cq`` and ``-crf`` sit on the same
H.264 quantiser scale and CQ N with AQ is usually close to CRF N; it is kept at the same number (not
CRF + 1) to err towards quality, a somewhat larger file. Not measured here: no GPU was at hand.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable

from pipeline.core.errors import InputError
from pipeline.core.ffmpeg import NVENC_ENCODER, ffmpeg_exe, video_codec_args

ENCODER_CHOICES = ("auto", "x264", "nvenc")
NVENC_PROBE_SECONDS = 20  # a one-frame test encode takes well under a second where NVENC works


def choose_encoder(requested: str, device_type: str, nvenc_usable: Callable[[], bool] | None = None) -> str:
    """The encoder ("x264" or "nvenc") for ``requested`` ("auto" / "x264" / "nvenc") in a run on a device
    of ``device_type`` ("cpu" / "cuda").

    ``auto``: NVENC for a CUDA run where ``nvenc_usable()`` (default :func:`nvenc_works`), else x264.
    ``nvenc`` where it cannot be used is an InputError that says why and what to use instead.
    """
    check_encoder_choice(requested)
    usable = nvenc_works if nvenc_usable is None else nvenc_usable
    if requested == "x264":
        return "x264"
    if requested == "auto":
        return "nvenc" if device_type == "cuda" and usable() else "x264"
    if not usable():
        raise InputError(
            f"--encoder nvenc: this ffmpeg ({ffmpeg_exe()}) cannot encode with {NVENC_ENCODER} here (not "
            "built in, no NVIDIA driver, or a GPU without an NVENC engine such as the A100/H100); use "
            "--encoder x264 or auto"
        )
    return "nvenc"


def check_encoder_choice(requested: str) -> None:
    if requested not in ENCODER_CHOICES:
        raise InputError(f"output.encoder must be one of {', '.join(ENCODER_CHOICES)}, got {requested!r}")


def lists_encoder(encoders_output: str, name: str) -> bool:
    """Whether ``ffmpeg -hide_banner -encoders`` output lists the encoder ``name``."""
    return any(line.split()[1:2] == [name] for line in encoders_output.splitlines() if line.strip())


def nvenc_probe_args() -> list[str]:
    """A one-frame 256x256 test encode with the NVENC options the render would use, to nowhere."""
    return [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error",
        "-f", "lavfi", "-i", "color=c=gray:s=256x256:d=0.04", "-frames:v", "1",
        *video_codec_args("nvenc", 18, "medium"), "-f", "null", "-",
    ]  # fmt: skip


@functools.cache
def nvenc_works() -> bool:
    """ffmpeg lists ``h264_nvenc`` and a one-frame test encode with it succeeds (cached per process)."""
    try:
        listing = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30
        )
        if not lists_encoder(listing.stdout, NVENC_ENCODER):
            return False
        probe = subprocess.run(nvenc_probe_args(), capture_output=True, timeout=NVENC_PROBE_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0
