"""The speech that drives the lips: synthesised or decoded, with its mel windows per video frame."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import timeline
from pipeline.config import PipelineConfig
from pipeline.errors import AudioError, InputError
from pipeline.inputs import RenderInputs
from pipeline.media import decode_audio
from pipeline.types import AudioClip


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


def prepare_speech(config: PipelineConfig, inputs: RenderInputs) -> SpeechTrack:
    audio = _speech_audio(config, inputs)
    if audio.samples.size == 0:
        raise AudioError("the speech is empty: nothing to lip-sync to")
    from wav2lip.audio import melspectrogram

    mel = melspectrogram(audio.samples)
    frames = timeline.output_frame_count(audio.duration_s, config.output.fps)
    return SpeechTrack(audio, mel, config.output.fps, frames)


def _speech_audio(config: PipelineConfig, inputs: RenderInputs) -> AudioClip:
    if inputs.audio is not None:
        return decode_audio(inputs.audio)
    import tts

    reference = None
    if config.tts.clone_voice_from_video:
        reference = decode_audio(inputs.video)
    assert inputs.script is not None
    return tts.synthesize(
        inputs.script, config.tts, reference_audio=reference, progress=not config.quiet, device=inputs.device
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
