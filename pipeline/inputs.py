"""Checking a run's inputs before any heavy work (pure checks plus a quick ffmpeg probe)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline import ffmpeg
from pipeline.config import PipelineConfig
from pipeline.errors import InputError

OUTPUT_SUFFIXES = {".mp4", ".mov", ".mkv"}
DEFAULT_RESULTS_DIR = Path("results")


@dataclass(frozen=True)
class RenderInputs:
    video: Path
    is_still: bool
    output: Path
    device: str
    audio: Path | None  # speech file, when not synthesising
    script: str | None  # text to synthesise, when not given audio


def check_inputs(config: PipelineConfig) -> RenderInputs:
    """Validate the config's files and choices; raise a one-line InputError on the first problem."""
    if not config.video:
        raise InputError("no face video given: pass --video FILE (a video or a photo of a face)")
    video = Path(config.video)
    info = ffmpeg.probe(video, "video")
    if not info.has_video:
        raise InputError(f"video {video} has no video stream (is it an audio file?)")
    script, audio = _speech_source(config)
    output = output_path(config.output.path, video)
    check_output(output, [video] + ([audio] if audio else []))
    return RenderInputs(video, info.is_image, output, choose_device(config.device), audio, script)


def _speech_source(config: PipelineConfig) -> tuple[str | None, Path | None]:
    given = [
        name
        for name, value in (
            ("--text", config.text),
            ("--text-string", config.text_string),
            ("--audio", config.audio),
        )
        if value
    ]
    if len(given) != 1:
        what = "none" if not given else " and ".join(given)
        raise InputError(f"give exactly one of --text FILE, --text-string TEXT or --audio FILE (got {what})")
    if config.audio:
        audio = Path(config.audio)
        if not ffmpeg.probe(audio, "audio").has_audio:
            raise InputError(f"audio {audio} has no audio stream")
        return None, audio
    if config.text:
        from tts import read_script

        return read_script(config.text), None
    return config.text_string, None


def output_path(requested: str | None, video: Path) -> Path:
    """The output file: as requested, or ``results/<video stem>_lipsync.mp4``."""
    if requested:
        return Path(requested)
    return DEFAULT_RESULTS_DIR / f"{video.stem}_lipsync.mp4"


def check_output(output: Path, inputs: list[Path]) -> None:
    """Refuse an output that overwrites an input or cannot be written; create its folder."""
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"output {output} must end in one of {', '.join(sorted(OUTPUT_SUFFIXES))}")
    if output.is_dir():
        raise InputError(f"output {output} is a directory; give a file name such as {output / 'out.mp4'}")
    for source in inputs:
        if output.resolve() == source.resolve():
            raise InputError(f"output {output} is the same file as the input; choose another -o/--output")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {output.parent}: {exc.strerror}") from exc
    if not os.access(output.parent, os.W_OK):
        raise InputError(f"output folder {output.parent} is not writable")


def choose_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA device is available (use --device cpu)")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested
