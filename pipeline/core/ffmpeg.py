"""ffmpeg: finding the binary, building argument lists, probing inputs.

Argument lists come from small pure functions (unit-tested without running ffmpeg). Paths are always
passed as ``file:<absolute path>`` so that a name like ``-y.mp4`` or ``a:b.mp4`` is never read as an
option or a protocol. There is no ffprobe in the imageio-ffmpeg wheel, so probing reads the stream lines
ffmpeg prints about its input.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import FFmpegError, InputError
from pipeline.core.file_memo import FileMemo

SPEECH_SAMPLE_RATE_HZ = 16000
AUDIO_BITRATE = "128k"
# Deinterlaces only frames flagged as interlaced; progressive input passes through untouched.
DEINTERLACE_FILTER = "bwdif=mode=send_frame:deint=interlaced"
# H.264 with yuv420p needs even dimensions: crop a trailing odd row/column.
EVEN_CROP_FILTER = "crop=trunc(iw/2)*2:trunc(ih/2)*2:0:0"
# Lower-case words that mark an ffmpeg stderr line as reporting a failure.
STDERR_ERROR_WORDS = ("error", "invalid", "no such", "unknown", "not found", "unsupported", "denied")
NVENC_ENCODER = "h264_nvenc"
NVENC_PRESET = "p5"  # p1 fastest .. p7 best quality (ffmpeg >= 4.3, NVIDIA Video Codec SDK >= 10)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary: one on PATH, else the one bundled with imageio-ffmpeg."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        found = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise FFmpegError(
            "ffmpeg not found: install it (apt-get install ffmpeg) or `pip install imageio-ffmpeg`"
        ) from exc
    if not (os.path.isfile(found) and os.access(found, os.X_OK)):  # IMAGEIO_FFMPEG_EXE is not checked
        raise FFmpegError(
            f"ffmpeg at {found} (from IMAGEIO_FFMPEG_EXE or imageio-ffmpeg) is not an executable file; "
            "fix IMAGEIO_FFMPEG_EXE or install ffmpeg (apt-get install ffmpeg)"
        )
    return found


def ffmpeg_version() -> str:
    out = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def file_arg(path: str | Path) -> str:
    """An ffmpeg input/output argument that cannot be mistaken for an option or a protocol."""
    return "file:" + str(Path(path).resolve())


def essential_stderr(stderr: bytes | str, limit: int = 300) -> str:
    """The telling part of ffmpeg's stderr, one line of at most ``limit`` characters.

    ffmpeg names the cause first ("Unknown encoder 'x'") and the consequence last ("Error opening
    output files: Encoder not found"): both are kept when they differ. Without error lines, the last
    non-empty line.
    """
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if any(word in ln.lower() for word in STDERR_ERROR_WORDS)]
    if not errors:
        return (lines or ["(no message)"])[-1][:limit]
    first, last = errors[0], errors[-1]
    return (first if first == last else f"{first} ({last})")[:limit]


# --- argument builders (pure) --------------------------------------------------------------------


def video_filter_chain(fps: float) -> str:
    """Filters applied to every decoded video: deinterlace, even size, constant ``fps``, BGR."""
    return f"{DEINTERLACE_FILTER},{EVEN_CROP_FILTER},fps={fps:g},format=bgr24"


def decode_video_args(
    path: str | Path,
    fps: float,
    start_frame: int = 0,
    max_frames: int | None = None,
    seek_frame: int = 0,
) -> list[str]:
    """Decode ``path`` to raw BGR24 frames on stdout at ``fps`` (rotation metadata honoured).

    ``start_frame``/``max_frames`` select frames of the constant-rate stream exactly (``trim`` counts
    frames after the ``fps`` filter, so the selection matches a full decode frame for frame, at the
    cost of decoding everything before it). ``seek_frame`` instead jumps near frame ``seek_frame``
    with an input seek: fast, but the first frame may be off by one or two for sources that are not
    at ``fps`` (callers verify the alignment).
    """
    chain = video_filter_chain(fps)
    if start_frame > 0:
        chain = chain.replace(
            ",format=bgr24", f",trim=start_frame={start_frame},setpts=PTS-STARTPTS,format=bgr24"
        )
    args = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error"]
    if seek_frame > 0:
        args += ["-ss", f"{seek_frame / fps:.6f}"]
    args += ["-i", file_arg(path)]
    args += ["-map", "0:v:0", "-an", "-sn", "-dn", "-vf", chain]
    if max_frames is not None:
        args += ["-frames:v", str(max_frames)]
    return args + ["-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"]


def count_frames_args(path: str | Path, fps: float, max_frames: int | None = None) -> list[str]:
    """Decode through the standard chain but emit one grey byte per frame (for counting frames)."""
    chain = video_filter_chain(fps).replace(",format=bgr24", ",scale=1:1,format=gray")
    args = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", file_arg(path)]
    args += ["-map", "0:v:0", "-an", "-sn", "-dn", "-vf", chain]
    if max_frames is not None:
        args += ["-frames:v", str(max_frames)]
    return args + ["-f", "rawvideo", "pipe:1"]


def first_frame_args(path: str | Path, fps: float) -> list[str]:
    """Decode only the first frame, as a BMP image on stdout (its header gives the true frame size)."""
    args = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", file_arg(path)]
    return args + [
        "-map",
        "0:v:0",
        "-vf",
        video_filter_chain(fps),
        "-frames:v",
        "1",
        "-c:v",
        "bmp",
        "-f",
        "image2pipe",
        "pipe:1",
    ]


def decode_audio_args(path: str | Path, sample_rate_hz: int = SPEECH_SAMPLE_RATE_HZ) -> list[str]:
    """Decode the first audio stream of ``path`` to mono float32 little-endian samples on stdout."""
    args = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", file_arg(path)]
    # rematrix_maxval=1 makes the stereo downmix the plain mean (L + R) / 2, as librosa (and so the
    # official Wav2Lip features) computes it; ffmpeg's default would be 3 dB louder.
    resample = f"aresample={sample_rate_hz}:rematrix_maxval=1"
    return args + [
        "-map",
        "0:a:0",
        "-vn",
        "-af",
        resample,
        "-ac",
        "1",
        "-ar",
        str(sample_rate_hz),
        "-f",
        "f32le",
        "pipe:1",
    ]


def encode_args(
    output: str | Path,
    width: int,
    height: int,
    fps: float,
    crf: int,
    preset: str = "medium",
    audio_fd: int | None = None,
    sample_rate_hz: int = SPEECH_SAMPLE_RATE_HZ,
    encoder: str = "x264",
) -> list[str]:
    """Encode raw BGR24 frames from stdin to H.264 yuv420p, muxed with float32 mono audio read from
    file descriptor ``audio_fd`` (AAC), in one ffmpeg process; ``+faststart`` for streaming playback.
    ``encoder``: "x264" or "nvenc" (:func:`video_codec_args`)."""
    args = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    args += [
        "-f",
        "rawvideo",
        "-pix_fmt",
        "bgr24",
        "-s",
        f"{width}x{height}",
        "-r",
        f"{fps:g}",
        "-i",
        "pipe:0",
    ]
    if audio_fd is not None:
        args += ["-f", "f32le", "-ar", str(sample_rate_hz), "-ac", "1", "-i", f"pipe:{audio_fd}"]
    args += ["-map", "0:v:0"]
    if audio_fd is not None:
        args += ["-map", "1:a:0", "-c:a", "aac", "-b:a", AUDIO_BITRATE]
    args += video_codec_args(encoder, crf, preset)
    args += ["-movflags", "+faststart"]
    return args + ["-f", muxer_for(output), file_arg(output)]


def video_codec_args(encoder: str, crf: int, preset: str) -> list[str]:
    """ffmpeg's video codec options for ``encoder`` ("x264" or "nvenc") at quality ``crf``; ``preset`` is
    x264's (NVENC uses :data:`NVENC_PRESET`; the quality mapping is explained in
    :mod:`pipeline.core.encoders`). Output is yuv420p H.264 either way."""
    if encoder == "x264":
        return ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
    if encoder == "nvenc":
        return [
            "-c:v", NVENC_ENCODER, "-preset", NVENC_PRESET, "-rc", "vbr", "-cq", str(crf), "-b:v", "0",
            "-spatial-aq", "1", "-pix_fmt", "yuv420p",
        ]  # fmt: skip
    raise ValueError(f"unknown encoder {encoder!r}")


def muxer_for(output: str | Path) -> str:
    suffix = Path(output).suffix.lower()
    return {".mkv": "matroska", ".mov": "mov", ".webm": "webm"}.get(suffix, "mp4")


def probe_args(path: str | Path) -> list[str]:
    return [ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", file_arg(path)]


# --- probing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaInfo:
    """What ffmpeg says about an input file."""

    path: Path
    has_video: bool
    has_audio: bool
    duration_s: float | None
    is_image: bool
    audio_sample_rate_hz: int | None = None  # of the first audio stream, when ffmpeg names it


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM = re.compile(r"Stream #\d+:\d+.*?: (Video|Audio): (.*)")
_SAMPLE_RATE = re.compile(r"(\d+) Hz")


def parse_probe(path: Path, stderr: str) -> MediaInfo:
    """Interpret the banner ``ffmpeg -i`` prints about ``path`` (pure; attached cover art is no video)."""
    video = audio = False
    rate = None
    for kind, rest in _STREAM.findall(stderr):
        if kind == "Video" and "attached pic" not in rest:
            video = True
        elif kind == "Audio" and not audio:
            audio = True
            found = _SAMPLE_RATE.search(rest)
            rate = int(found.group(1)) if found else None
    match = _DURATION.search(stderr)
    duration = None
    if match:
        h, m, s = match.groups()
        duration = int(h) * 3600 + int(m) * 60 + float(s)
    is_image = video and (path.suffix.lower() in IMAGE_SUFFIXES or _image_demuxer(stderr))
    return MediaInfo(path, video, audio, duration, is_image, rate)


_INPUT_LINE = re.compile(r"^Input #0, (.+?), from ", re.MULTILINE)


def _image_demuxer(stderr: str) -> bool:
    """Whether ffmpeg opened the input with an image demuxer (``image2``, ``png_pipe``, ...). Only the
    demuxer names of the ``Input #0`` line are read: the path and metadata may contain anything."""
    match = _INPUT_LINE.search(stderr)
    names = match.group(1).split(",") if match else []
    return any(name.strip() == "image2" or name.strip().endswith("_pipe") for name in names)


# What ffmpeg said about each input, kept while the file is unchanged (a batch probes one face video
# for every job; ffmpeg's start costs 30-80 ms a time on 2 busy cores).
_PROBED = FileMemo()


def probe(path: str | Path, role: str = "input") -> MediaInfo:
    """Check that ``path`` is a readable media file and describe it; one-line InputError otherwise."""
    path = Path(path)
    check_readable_file(path, role)
    info = _PROBED.get(path, lambda: _probe_with_ffmpeg(path, role))
    return dataclasses.replace(info, path=path)


def _probe_with_ffmpeg(path: Path, role: str) -> MediaInfo:
    result = subprocess.run(probe_args(path), capture_output=True, check=False)
    stderr = result.stderr.decode("utf-8", "replace")
    if "Input #0" not in stderr:
        raise InputError(
            f"{role} {path} is not a media file ffmpeg can read ({essential_stderr(stderr)}); "
            "give a video, photo or audio file"
        )
    return parse_probe(path, stderr)


def check_readable_file(path: Path, role: str) -> None:
    if not path.exists():
        raise InputError(f"{role} not found: {path}")
    if path.is_dir():
        raise InputError(f"{role} is a directory, expected a file: {path}")
    if not path.is_file():  # opening a FIFO would block; sockets and devices are no media files
        raise InputError(f"{role} {path} is not a regular file (a pipe, socket or device); save it to a file")
    try:
        with open(path, "rb") as handle:
            empty = not handle.read(1)
    except OSError as exc:
        raise InputError(
            f"{role} {path} cannot be read ({exc.strerror}); check that it is a regular file you may read"
        ) from exc
    if empty:
        raise InputError(f"{role} {path} is empty (0 bytes); give the complete file (was a copy cut short?)")


# ---------------------------------------------------------------- encoder settings

X264_CRF_RANGE = (0, 51)  # constant rate factor of 8-bit libx264: 0 lossless .. 51 worst
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)


def check_encoder_settings(crf: int, preset: str) -> None:
    """The H.264 settings, checked before any work (libx264 would refuse them only at the end)."""
    low, high = X264_CRF_RANGE
    if not low <= crf <= high:
        raise InputError(
            f"--crf {crf} is outside libx264's {low}..{high} (lower is better; 18 is the default)"
        )
    if preset not in X264_PRESETS:
        raise InputError(f"output.preset {preset!r} is not a libx264 preset: {', '.join(X264_PRESETS)}")
