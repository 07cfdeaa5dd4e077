"""The speech that drives the lips: synthesised or decoded, with its mel windows per video frame, and
where it pauses (the mouth is held still there).

Voice activity is found by energy, not a library: 10 ms frames whose RMS level is within
``VAD_RANGE_DB`` of the loud end of the speech (and above ``VAD_FLOOR_DBFS``) are voiced, and each voiced
frame keeps ``VAD_HANGOVER_S`` after it voiced so that word endings and short stops do not count as
pauses. Our speech is clean (synthesised, or a dubbing track), where energy separates speech from
silence reliably; a model VAD (webrtcvad, Silero) would add a dependency, or torch work before the
models load, for noisy recordings we do not target. Raise ``--hold-silence`` for noisy audio.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import timeline
from pipeline.config import PipelineConfig
from pipeline.core.errors import AudioError, InputError
from pipeline.core.ffmpeg import SPEECH_SAMPLE_RATE_HZ
from pipeline.core.media import load_speech
from pipeline.core.types import AudioClip
from pipeline.dialogue import DialoguePlan, join_turns
from pipeline.inputs import RenderInputs
from tts.config import TTSConfig

VAD_FRAME_S = 0.010  # seconds of audio per voice-activity decision
VAD_RANGE_DB = 35.0  # voiced: within this many dB of the 99th-percentile frame level
VAD_FLOOR_DBFS = -50.0  # never voiced below this RMS level
VAD_HANGOVER_S = 0.10  # a voiced frame keeps the next 0.1 s voiced (word endings, stop consonants)
HOLD_FADE_FRAMES = 2  # video frames of cross-fade at each edge of a held pause


@dataclass(frozen=True)
class SpeechTrack:
    """16 kHz mono speech, its ``(80, T)`` mel spectrogram and the output frame count it implies.

    ``mouth_weight (frame_count,) float32`` in [0, 1]: how much of the generated mouth each output frame
    shows (0 in held pauses, ramps at their edges; all 1 without ``--hold-silence``).
    """

    audio: AudioClip
    mel: np.ndarray
    fps: float
    frame_count: int
    mouth_weight: np.ndarray | None = None

    def mel_windows(self, start: int, count: int) -> np.ndarray:
        """``(count, 80, 16) float32``: the mel windows of output frames ``start`` .. ``start+count-1``."""
        from wav2lip.audio import mel_window, mel_window_count

        # Past the official window count, every window is the final one (clamped to the end of the mel).
        last = mel_window_count(self.mel.shape[1], self.fps) - 1
        return np.stack([mel_window(self.mel, min(i, last), self.fps) for i in range(start, start + count)])

    def mouth_weights(self, start: int, count: int) -> np.ndarray | None:
        """``(count,) float32`` mouth weights of output frames ``start`` .. ``start+count-1``, or None."""
        return None if self.mouth_weight is None else self.mouth_weight[start : start + count]


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


def speech_track(audio: AudioClip, fps: float, hold_silence_s: float = 0.0) -> SpeechTrack:
    """``audio`` with its mel spectrogram, the number of ``fps`` video frames it lasts and, with
    ``hold_silence_s > 0``, the mouth weights that hold pauses longer than that still."""
    from wav2lip.audio import melspectrogram

    mel = melspectrogram(audio.samples)
    count = timeline.output_frame_count(audio.duration_s, fps)
    weight = None
    if hold_silence_s > 0:
        weight = hold_weights(voiced_frames(audio, fps, count), round(hold_silence_s * fps))
    return SpeechTrack(audio, mel, fps, count, weight)


def voiced_frames(audio: AudioClip, fps: float, count: int) -> np.ndarray:
    """``(count,) bool``: whether any voiced 10 ms of ``audio`` falls in each ``fps`` video frame."""
    hop = max(1, round(VAD_FRAME_S * audio.sample_rate_hz))
    n = len(audio.samples) // hop
    if n == 0:
        return np.ones(count, bool)
    rms = np.sqrt(np.mean(np.square(audio.samples[: n * hop].reshape(n, hop), dtype=np.float64), axis=1))
    level = 20 * np.log10(np.maximum(rms, 1e-10))
    voiced = level > max(VAD_FLOOR_DBFS, float(np.percentile(level, 99)) - VAD_RANGE_DB)
    hangover = round(VAD_HANGOVER_S / VAD_FRAME_S)
    kept = np.convolve(voiced.astype(np.int32), np.ones(hangover + 1, np.int32))[:n] > 0
    # The video frame of each 10 ms piece; pieces past the last frame belong to it.
    owner = np.minimum((np.arange(n) * VAD_FRAME_S * fps).astype(np.int64), count - 1)
    result = np.zeros(count, bool)
    result[owner[kept]] = True
    result[np.bincount(owner, minlength=count) == 0] = True  # frames with no audio under them: not held
    return result


def hold_weights(voiced: np.ndarray, min_frames: int) -> np.ndarray:
    """``(N,) float32`` mouth weights: 0 over unvoiced runs of more than ``min_frames`` frames, rising
    to 1 over ``HOLD_FADE_FRAMES`` at each edge inside the run (1/3, 2/3 for 2 frames); 1 elsewhere."""
    weight = np.ones(len(voiced), np.float32)
    edges = np.flatnonzero(np.diff(np.concatenate([[1], voiced.astype(np.int8), [1]])))
    for start, stop in zip(edges[::2], edges[1::2]):
        if stop - start <= min_frames:
            continue
        weight[start:stop] = 0.0
        fade = min(HOLD_FADE_FRAMES, (stop - start) // 2)
        ramp = np.arange(fade, 0, -1, dtype=np.float32) / (HOLD_FADE_FRAMES + 1)
        weight[start : start + fade] = ramp  # 2/3, 1/3 into the pause
        weight[stop - fade : stop] = ramp[::-1]  # 1/3, 2/3 out of it
    return weight


def _speech_audio(
    config: PipelineConfig, inputs: RenderInputs, resolve_device: Callable[[], str]
) -> AudioClip:
    if inputs.audio is not None:
        return load_speech(inputs.audio)  # soxr resampling, as wav2lip.audio.load_wav
    import tts

    reference = None
    if config.tts.clone_voice_from_video:
        reference = load_speech(inputs.video)
    assert inputs.script is not None
    device = resolve_device() if config.tts.engine == "coqui" else None
    return tts.synthesize(
        inputs.script, config.tts, reference_audio=reference, progress=not config.quiet, device=device
    )


def dialogue_audio(
    plan: DialoguePlan, config: PipelineConfig, inputs: RenderInputs
) -> tuple[AudioClip, list]:
    """The speech of a dialogue and its segments: the given recording cut by its cues, or each turn of
    the tagged script synthesised in its speaker's voice (espeak voice / Coqui speaker) and joined."""
    if plan.segments:
        return speech_audio(config, inputs), list(plan.segments)
    import tts

    clips, rate = [], SPEECH_SAMPLE_RATE_HZ
    for speaker, text in plan.turns:
        cfg = speaker_tts_config(config.tts, speaker, plan.voices.get(speaker))
        clip = tts.synthesize(text, cfg, device="cpu" if config.tts.engine == "coqui" else None)
        clips.append((speaker, text, clip.samples))
        rate = clip.sample_rate_hz
    samples, segments = join_turns(clips, rate)
    return AudioClip(samples, rate), segments


VOICE_SAMPLE_PREFIX = "sample:"  # --speaker-voice A=sample:FILE: clone the voice of a recording (Coqui XTTS)


def speaker_tts_config(base: TTSConfig, speaker: str, voice: str | None) -> TTSConfig:
    """The TTS settings of one speaker: ``voice`` is an espeak voice, a Coqui speaker name, or
    ``sample:FILE``, a recording whose voice Coqui XTTS clones (one-line error with espeak or a missing
    file)."""
    if not voice:
        return base
    if not voice.startswith(VOICE_SAMPLE_PREFIX):
        return dataclasses.replace(base, **{"speaker" if base.engine == "coqui" else "voice": voice})
    sample = Path(voice.removeprefix(VOICE_SAMPLE_PREFIX))
    if base.engine != "coqui":
        raise InputError(
            f"--speaker-voice {speaker}={voice}: cloning a voice from a recording needs --tts coqui "
            "(with an XTTS model); espeak takes a voice name such as en-gb+f3"
        )
    if not sample.is_file():
        raise InputError(f"--speaker-voice {speaker}={voice}: no such recording {sample}")
    return dataclasses.replace(base, voice_sample=str(sample))


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
