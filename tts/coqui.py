"""The optional Coqui TTS engine (``pip install -r requirements-coqui.txt``; import name ``TTS``).

A model is given by its Coqui name (``tts.model_name``, fetched by Coqui's own model manager where
online) or by local files (``tts.model_path`` + ``tts.config_path``, nothing downloaded). Every
argument is checked before anything heavy is imported or loaded.

XTTS-v2 voice cloning (``tts.voice_sample`` or, with ``tts.clone_voice_from_video``, the input video's
audio) computes the voice once, the way ``Xtts.get_conditioning_latents`` does (mono at 22050 Hz,
the first ``max_ref_len`` seconds, optional peak scaling to 0.75, speaker embedding + GPT latents),
from samples already in memory, then runs ``Xtts.inference`` per piece with the model's configured
sampling settings, as ``Xtts.synthesize`` does. Other models go through ``TTS.api.TTS.tts``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ConfigError, EngineUnavailableError, InputError, LipSyncError, WeightsError
from pipeline.core.types import AudioClip
from tts.conditioning import resample
from tts.config import TTSConfig

INSTALL_HINT = "pip install -r requirements-coqui.txt"
XTTS_REFERENCE_RATE_HZ = 22050  # Hz, the rate Xtts.get_conditioning_latents loads references at
XTTS_REFERENCE_NORM_PEAK = 0.75  # full scale, Xtts' peak for references when sound_norm_refs is set
XTTS_SAMPLING_KEYS = ("temperature", "length_penalty", "repetition_penalty", "top_k", "top_p")
LISTED_NAMES = 12  # speakers/languages quoted in an error message


def check_coqui_request(cfg: TTSConfig, reference_audio: AudioClip | None) -> None:
    """Reject an incomplete or contradictory Coqui request and missing files (ConfigError/InputError)."""
    if bool(cfg.model_name) == bool(cfg.model_path):
        raise ConfigError(
            "tts engine coqui needs exactly one of tts.model_name or tts.model_path (+ config_path)"
        )
    if cfg.model_path:
        if not cfg.config_path:
            raise ConfigError("tts.model_path needs tts.config_path (the model's config.json)")
        if not Path(cfg.model_path).exists():
            raise InputError(f"Coqui model file not found: {cfg.model_path} (check tts.model_path)")
        if not Path(cfg.config_path).is_file():
            raise InputError(f"Coqui config file not found: {cfg.config_path} (check tts.config_path)")
    if cfg.voice_sample and not Path(cfg.voice_sample).is_file():
        raise InputError(f"voice sample not found: {cfg.voice_sample} (check tts.voice_sample)")
    if cfg.clone_voice_from_video:
        if cfg.voice_sample:
            raise ConfigError("give either tts.voice_sample or tts.clone_voice_from_video, not both")
        if reference_audio is None or reference_audio.samples.size == 0:
            raise InputError("tts.clone_voice_from_video is set but the input video has no audio to clone")


def import_coqui_api() -> type:
    """``TTS.api.TTS``, or EngineUnavailableError with the install command."""
    try:
        from TTS.api import TTS
    except ImportError as exc:
        raise EngineUnavailableError(
            f"Coqui TTS is not installed ({exc}); install the extra: {INSTALL_HINT}"
        ) from exc
    return TTS


def build_api(api_class: type, cfg: TTSConfig, device: str) -> Any:
    """The Coqui API object for ``cfg``'s model, moved to ``device`` (WeightsError on failure)."""
    try:
        if cfg.model_path:
            api = api_class(model_path=cfg.model_path, config_path=cfg.config_path, progress_bar=False)
        else:
            api = api_class(cfg.model_name, progress_bar=False)
        return api.to(device)
    except Exception as exc:  # Coqui raises many types; one line, the cause chained
        what = cfg.model_path or cfg.model_name
        raise WeightsError(f"Coqui could not load model {what}: {_one_line(exc)}") from exc


def load_coqui(
    cfg: TTSConfig,
    reference_audio: AudioClip | None = None,
    device: str = "cpu",
    api_class: type | None = None,
) -> CoquiSpeaker | XttsCloneSpeaker:
    """A speaker for ``cfg``'s Coqui model. ``api_class`` replaces ``TTS.api.TTS`` (tests inject fakes)."""
    check_coqui_request(cfg, reference_audio)
    reference = _reference(cfg, reference_audio)  # decoded before the heavy model load
    api = build_api(api_class or import_coqui_api(), cfg, device)
    check_language(api, cfg.language)
    if reference is not None and is_xtts(api):
        return XttsCloneSpeaker(api, cfg.language, reference)
    if reference is None:
        check_speaker(api, cfg.speaker)
    return CoquiSpeaker(api, cfg.speaker, cfg.language, reference)


def _reference(cfg: TTSConfig, reference_audio: AudioClip | None) -> AudioClip | None:
    if cfg.voice_sample:
        from pipeline.core.media import decode_audio

        return decode_audio(cfg.voice_sample, XTTS_REFERENCE_RATE_HZ)
    if cfg.clone_voice_from_video:
        return reference_audio
    return None


def is_xtts(api: Any) -> bool:
    """True when the loaded model is an XTTS model (Coqui's own test: "xtts" in the config's model)."""
    config = getattr(getattr(api.synthesizer, "tts_model", None), "config", None)
    return "xtts" in str(getattr(config, "model", "") or "")


def check_language(api: Any, language: str | None) -> None:
    """ConfigError when a multilingual model gets no/unknown language or a monolingual one gets one."""
    if not api.is_multi_lingual:
        if language:
            raise ConfigError(f"this Coqui model speaks one language: remove tts.language ({language!r})")
        return
    known = list(api.languages or [])
    if not language or (known and language not in known):
        raise ConfigError(
            f"this Coqui model needs tts.language, one of: {_listing(known)} (got {language!r})"
        )


def check_speaker(api: Any, speaker: str | None) -> None:
    """ConfigError when a multi-speaker model gets no/unknown speaker or a single-speaker one gets one."""
    if not api.is_multi_speaker:
        if speaker:
            raise ConfigError(f"this Coqui model has one speaker: remove tts.speaker ({speaker!r})")
        return
    known = list(api.speakers or [])
    if not speaker or speaker not in known:
        raise ConfigError(
            f"this Coqui model needs tts.speaker, one of: {_listing(known)} (got {speaker!r}), "
            "or a voice to clone (tts.voice_sample)"
        )


class CoquiSpeaker:
    """Says text through ``TTS.api.TTS.tts`` (one call per piece, Coqui's own sentence split off)."""

    def __init__(
        self, api: Any, speaker: str | None, language: str | None, reference: AudioClip | None
    ) -> None:
        self.api = api
        self.speaker = speaker
        self.language = language
        self._reference_dir = None
        self.speaker_wav = None
        if reference is not None:  # non-XTTS cloning models (e.g. YourTTS) read the reference from a file
            self._reference_dir = tempfile.TemporaryDirectory(prefix="lipsync-voice-")
            self.speaker_wav = _write_wav(reference, Path(self._reference_dir.name) / "reference.wav")

    def speak(self, text: str) -> AudioClip:
        """``text`` as float32 mono speech at the model's output rate."""
        wav = self.api.tts(
            text=text,
            speaker=self.speaker,
            language=self.language,
            speaker_wav=self.speaker_wav,
            split_sentences=False,
        )
        return AudioClip(_as_samples(wav), int(self.api.synthesizer.output_sample_rate))


class XttsCloneSpeaker:
    """Says text with XTTS in a voice cloned once from ``reference`` (mono speech of any rate)."""

    def __init__(self, api: Any, language: str | None, reference: AudioClip) -> None:
        self.api = api
        self.model = api.synthesizer.tts_model
        self.language = language
        self.gpt_cond_latent, self.speaker_embedding = xtts_voice(self.model, reference)

    def speak(self, text: str) -> AudioClip:
        """``text`` as float32 mono speech at XTTS' output rate (24000 Hz for XTTS-v2)."""
        config = self.model.config
        settings = {key: config[key] for key in XTTS_SAMPLING_KEYS}
        out = self.model.inference(
            text, self.language, self.gpt_cond_latent, self.speaker_embedding, **settings
        )
        return AudioClip(_as_samples(out["wav"]), int(self.api.synthesizer.output_sample_rate))


def xtts_voice(model: Any, reference: AudioClip) -> tuple[Any, Any]:
    """``(gpt_cond_latent, speaker_embedding)`` of ``reference`` for ``model`` (an ``Xtts``)."""
    import torch

    config = model.config
    samples = np.clip(
        resample(reference.samples, reference.sample_rate_hz, XTTS_REFERENCE_RATE_HZ), -1.0, 1.0
    )
    samples = samples[: XTTS_REFERENCE_RATE_HZ * int(config["max_ref_len"])]
    if config["sound_norm_refs"] and np.abs(samples).max() > 0:
        samples = samples / np.abs(samples).max() * XTTS_REFERENCE_NORM_PEAK
    audio = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None].to(model.device)
    with torch.inference_mode():
        embedding = model.get_speaker_embedding(audio, XTTS_REFERENCE_RATE_HZ)
        latent = model.get_gpt_cond_latents(
            audio,
            XTTS_REFERENCE_RATE_HZ,
            length=config["gpt_cond_len"],
            chunk_length=config["gpt_cond_chunk_len"],
        )
    return latent, embedding


def _as_samples(wav: Any) -> np.ndarray:
    """Coqui's output (list of floats, numpy array or tensor) -> float32 ``(n,)``."""
    if hasattr(wav, "detach"):
        wav = wav.detach().cpu().numpy()
    samples = np.asarray(wav, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(samples)):
        raise LipSyncError("the Coqui model produced non-finite samples (NaN/inf)")
    return samples


def _write_wav(clip: AudioClip, path: Path) -> str:
    import soundfile

    soundfile.write(path, clip.samples, clip.sample_rate_hz, subtype="PCM_16", format="WAV")
    return str(path)


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED_NAMES])
    return (
        shown + (f", ... ({len(names)} in all)" if len(names) > LISTED_NAMES else "") if names else "(none)"
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no message'}"
