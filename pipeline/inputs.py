"""Checking a run's inputs before any heavy work (pure checks plus a quick ffmpeg probe)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.core import ffmpeg
from pipeline.core.encoders import check_encoder_choice, choose_encoder
from pipeline.core.errors import InputError
from pipeline.core.ffmpeg import check_encoder_settings
from pipeline.output_files import check_output, check_save_audio, output_path


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
    if config.wav2lip.hold_silence < 0:
        raise InputError(f"--hold-silence must be >= 0 seconds, got {config.wav2lip.hold_silence}")
    output = output_path(config.output.path, video)
    sources = [video] + ([audio] if audio else [])
    check_output(output, sources)
    if config.output.save_audio:
        check_save_audio(Path(config.output.save_audio), sources)
    check_encoder_settings(config.output.crf, config.output.preset)
    check_encoder_choice(config.output.encoder)
    if config.output.encoder == "nvenc":
        choose_encoder("nvenc", "cuda")  # an NVENC this ffmpeg cannot use is reported before any work
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
