"""The speech that drives the lips: synthesised or decoded, with its mel windows per video frame."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import timeline
from pipeline.config import PipelineConfig
from pipeline.core.errors import AudioError, InputError
from pipeline.core.media import decode_audio
from pipeline.core.types import AudioClip
from pipeline.inputs import RenderInputs


@dataclass(frozen=True)
class SpeechTrack:
    """16 kHz mono speech, its ``(80, T)`` mel spectrogram and the output frame count it implies."""

    audio: AudioClip
    mel: np.ndarray
    fps: float
    frame_count: int

    def mel_windows(self, start: int, count: int) -> np.ndarray:
        """``(count, 80, 16) float32``: the mel windows of output frames ``start`` .. ``start+count-1``."""
        from wav2lip.audio import mel_window, mel_window_count

        # Past the official window count, every window is the final one (clamped to the end of the mel).
        last = mel_window_count(self.mel.shape[1], self.fps) - 1
        return np.stack([mel_window(self.mel, min(i, last), self.fps) for i in range(start, start + count)])


def speech_audio(
    config: PipelineConfig, inputs: RenderInputs, resolve_device: Callable[[], str] = lambda: "cpu"
) -> AudioClip:
    """The 16 kHz mono speech: the given recording decoded, or the script synthesised.

    ``resolve_device`` is called only when a Coqui voice needs the device (the render passes the
    model-loading thread's answer, which may still be on its way). Raises AudioError when it is empty.
    """
    audio = _speech_audio(config, inputs, resolve_device)
    if audio.samples.size == 0:
        raise AudioError("the speech is empty: nothing to lip-sync to")
    return audio


def speech_track(audio: AudioClip, fps: float) -> SpeechTrack:
    """``audio`` with its mel spectrogram and the number of ``fps`` video frames it lasts."""
    from wav2lip.audio import melspectrogram

    mel = melspectrogram(audio.samples)
    return SpeechTrack(audio, mel, fps, timeline.output_frame_count(audio.duration_s, fps))


def _speech_audio(
    config: PipelineConfig, inputs: RenderInputs, resolve_device: Callable[[], str]
) -> AudioClip:
    if inputs.audio is not None:
        return decode_audio(inputs.audio)
    import tts

    reference = None
    if config.tts.clone_voice_from_video:
        reference = decode_audio(inputs.video)
    assert inputs.script is not None
    device = resolve_device() if config.tts.engine == "coqui" else None
    return tts.synthesize(
        inputs.script, config.tts, reference_audio=reference, progress=not config.quiet, device=device
    )


def save_wav(audio: AudioClip, path: Path) -> Path:
    """Write ``audio`` as 16-bit PCM WAV (via a temporary name, renamed when complete)."""
    import soundfile

    if path.suffix.lower() != ".wav":
        raise InputError(f"--save-audio {path} must end in .wav")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.partial")
    soundfile.write(temp, audio.samples, audio.sample_rate_hz, subtype="PCM_16", format="WAV")
    temp.replace(path)
    return path
