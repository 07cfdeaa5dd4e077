"""Short media made with ffmpeg's lavfi sources, for tests (no files shipped)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from pipeline.core.ffmpeg import ffmpeg_exe


def lavfi_command(*sources: str) -> list[str]:
    """The start of an ffmpeg command reading each ``source`` (a lavfi graph such as ``sine=...``)."""
    args = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y"]
    for source in sources:
        args += ["-f", "lavfi", "-i", source]
    return args


def make_video(
    path: Path,
    seconds: float = 1.0,
    fps: float = 25,
    size: str = "160x120",
    audio: bool = True,
    extra: list[str] | None = None,
    source: str = "testsrc",
) -> Path:
    """A ``testsrc`` clip (with a 440 Hz tone when ``audio``) written to ``path``."""
    sources = [f"{source}=size={size}:rate={fps}:duration={seconds}"]
    if audio:
        sources.append(f"sine=frequency=440:duration={seconds}")
    args = lavfi_command(*sources) + (["-c:a", "aac", "-shortest"] if audio else [])
    args += ["-c:v", "libx264", "-pix_fmt", "yuv444p" if _odd(size) else "yuv420p", *(extra or []), str(path)]
    subprocess.run(args, check=True)
    return path


def make_tone(
    path: Path, seconds: float = 1.0, frequency: float = 440, rate: int = 44100, channels: int = 1
) -> Path:
    """A sine tone of ``channels`` identical channels written to ``path``."""
    source = f"sine=frequency={frequency}:duration={seconds}:sample_rate={rate}"
    subprocess.run(lavfi_command(source) + ["-ac", str(channels), str(path)], check=True)
    return path


def read_all_frames(path: Path) -> np.ndarray:
    """Every frame of ``path`` as ``(N, H, W, 3) uint8`` BGR (for tests only: holds the whole clip)."""
    from pipeline.core.media import FrameSize, VideoReader, read_first_frame

    first = read_first_frame(path, 25)
    size = FrameSize(first.shape[1], first.shape[0])
    with VideoReader(path, size, 25, 64) as reader:
        return np.concatenate(list(reader))


def stream_info(path: Path) -> str:
    """ffmpeg's description of ``path`` (its stream and duration lines)."""
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return result.stderr


def _odd(size: str) -> bool:
    w, h = (int(v) for v in size.split("x"))
    return w % 2 == 1 or h % 2 == 1
