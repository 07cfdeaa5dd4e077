"""Checking a run's inputs before any heavy work (pure checks plus a quick ffmpeg probe)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline import ffmpeg
from pipeline.config import PipelineConfig
from pipeline.errors import InputError

OUTPUT_SUFFIXES = {".mp4", ".mov", ".mkv"}
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
DEFAULT_RESULTS_DIR = Path("results")


@dataclass(frozen=True)
class RenderInputs:
    video: Path
    is_still: bool
    output: Path
    audio: Path | None  # speech file, when not synthesising
    script: str | None  # text to synthesise, when not given audio


def check_inputs(config: PipelineConfig) -> RenderInputs:
    """Validate the config's files and choices; raise a one-line InputError on the first problem."""
    if not config.video:
        raise InputError("no face video given: pass --video FILE (a video or a photo of a face)")
    video = Path(config.video)
    info = ffmpeg.probe(video, "video")
    if not info.has_video:
        raise InputError(
            f"video {video} has no video stream (an audio file?); pass a face video or photo with --video"
        )
    script, audio = _speech_source(config)
    output = output_path(config.output.path, video)
    sources = [video] + ([audio] if audio else [])
    check_output(output, sources)
    if config.output.save_audio:
        check_save_audio(Path(config.output.save_audio), sources)
    check_encoder_settings(config.output.crf, config.output.preset)
    return RenderInputs(video, info.is_image, output, audio, script)


def _speech_source(config: PipelineConfig) -> tuple[str | None, Path | None]:
    given = [
        name
        for name, value in (
            ("--text", config.text),
            ("--text-string", config.text_string),
            ("--audio", config.audio),
        )
        if value is not None
    ]
    if len(given) != 1:
        what = "none" if not given else " and ".join(given)
        raise InputError(f"give exactly one of --text FILE, --text-string TEXT or --audio FILE (got {what})")
    if config.audio is not None:
        audio = Path(config.audio)
        if not ffmpeg.probe(audio, "audio").has_audio:
            raise InputError(f"audio {audio} has no audio stream; pass a speech recording with --audio")
        return None, audio
    if config.text is not None:
        from tts import read_script

        return read_script(config.text), None
    from tts.text import check_speakable

    check_speakable(config.text_string, where="the --text-string script")
    return config.text_string, None


def output_path(requested: str | None, video: Path) -> Path:
    """The output file: as requested, or ``results/<video stem>_lipsync.mp4``."""
    if requested:
        return Path(os.path.normpath(requested))  # "new/../o.mp4" is "o.mp4", without a folder "new"
    return DEFAULT_RESULTS_DIR / f"{video.stem}_lipsync.mp4"


def check_output(output: Path, inputs: list[Path]) -> None:
    """Refuse an output that overwrites an input or cannot be written. Its folder is not created here
    (the render creates it when it starts writing: see :func:`output_folder`)."""
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"output {output} must end in one of {', '.join(sorted(OUTPUT_SUFFIXES))}")
    if output.is_dir():
        raise InputError(f"output {output} is a directory; give a file name such as {output / 'out.mp4'}")
    for source in inputs:
        if output.resolve() == source.resolve():
            raise InputError(f"output {output} is the same file as the input; choose another -o/--output")
    existing = nearest_existing_folder(output.parent)
    if not existing.is_dir():
        raise _folder_error(output.parent, f"{existing} is in the way: not a folder")
    check_writable_folder(existing, output)


def nearest_existing_folder(folder: Path) -> Path:
    """``folder`` itself or its closest ancestor that is there (a file or a broken link in the way
    counts: the caller refuses it)."""
    folder = Path(os.path.abspath(folder))  # "new/.." names the working folder, not a folder to create
    for candidate in (folder, *folder.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(folder.anchor)  # not reached: the root of an absolute path is always there


@contextlib.contextmanager
def output_folder(folder: Path) -> Iterator[None]:
    """Make sure ``folder`` exists for the render; if the render fails, remove again the folders made
    here (only those this run created, and only while empty), so that a failed run leaves no trace."""
    created = _make_folders(Path(os.path.abspath(folder)))
    try:
        yield
    except BaseException:
        for made in reversed(created):  # deepest first
            try:
                made.rmdir()
            except OSError:
                break
        raise


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents one level at a time; the ones this call created,
    outermost first (a folder another run creates at the same moment is not counted as ours)."""
    missing = [p for p in (folder, *folder.parents) if not p.is_dir()]
    created = []
    for path in reversed(missing):
        try:
            path.mkdir()
            created.append(path)
        except FileExistsError:
            if not path.is_dir():
                raise _folder_error(folder, f"{path} is in the way: not a folder") from None
        except OSError as exc:
            raise _folder_error(folder, exc.strerror) from exc
    return created


def _folder_error(folder: Path, why: str | None) -> InputError:
    return InputError(
        f"cannot create the output folder {folder} ({why}); choose an -o/--output inside a folder you can "
        "write to"
    )


def check_writable_folder(folder: Path, output: Path) -> None:
    """Create and delete a hidden probe file in ``folder``: permissions alone do not tell (root,
    read-only mounts, /proc), and finding out only when the encoder opens the file wastes the run."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{output.stem}.partial-probe-"):
            pass
    except OSError as exc:
        raise InputError(
            f"output folder {folder} is not writable ({exc.strerror}); choose another -o/--output"
        ) from exc


def check_save_audio(path: Path, sources: list[Path]) -> None:
    """``--save-audio`` must be a ``.wav`` path that is none of the input files."""
    if path.suffix.lower() != ".wav":
        raise InputError(f"--save-audio {path} must end in .wav")
    if any(path.resolve() == source.resolve() for source in sources):
        raise InputError(f"--save-audio {path} is one of the input files; choose another file name")


def check_encoder_settings(crf: int, preset: str) -> None:
    """The H.264 settings, checked before any work (libx264 would refuse them only at the end)."""
    low, high = X264_CRF_RANGE
    if not low <= crf <= high:
        raise InputError(
            f"--crf {crf} is outside libx264's {low}..{high} (lower is better; 18 is the default)"
        )
    if preset not in X264_PRESETS:
        raise InputError(f"output.preset {preset!r} is not a libx264 preset: {', '.join(X264_PRESETS)}")


def choose_device(requested: str) -> str:
    """The device for ``--device``: "cpu" or "cuda" (auto: CUDA when available). It imports torch
    (about a second), so the render calls it in the model-loading thread, beside its ffmpeg work."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA device is available (use --device cpu)")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested
