"""Text to speech for the lip-sync pipeline: a script in, 16 kHz mono speech out.

Engines: ``espeak`` (default; espeak-ng from the ``espeakng-loader`` wheel, offline, no model files)
and ``coqui`` (optional extra, ``pip install -r requirements-coqui.txt``; XTTS-v2 voice cloning).

Public API: :func:`synthesize`, :func:`read_script`, :func:`list_voices`, :func:`open_speaker`.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import ConfigError, InputError, TextError
from pipeline.core.types import AudioClip
from tts.assembly import Speaker, check_timing, render
from tts.conditioning import OUTPUT_SAMPLE_RATE_HZ
from tts.config import TTSConfig
from tts.espeak.engine import list_voices, open_espeak
from tts.espeak.library import VoiceInfo
from tts.text import check_speakable, plan_pieces

__all__ = ["OUTPUT_SAMPLE_RATE_HZ", "VoiceInfo", "list_voices", "open_speaker", "read_script", "synthesize"]


def synthesize(
    text: str,
    cfg: TTSConfig,
    reference_audio: AudioClip | None = None,
    progress: bool = False,
    *,
    device: str | None = None,
) -> AudioClip:
    """Speak ``text`` with ``cfg``'s engine: float32 mono samples in [-0.95, 0.95] at 16000 Hz.

    The script is split at sentence ends and blank lines; pieces are joined with ``cfg.sentence_pause_s``
    / ``cfg.paragraph_pause_s`` of silence, edge silence is cut to ``cfg.max_edge_silence_s``.
    ``reference_audio`` is the voice to clone when ``cfg.clone_voice_from_video`` is set (Coqui XTTS).
    ``device`` ("cpu", "cuda", None = CUDA when available) is used by Coqui models only. ``progress``
    shows a tqdm bar. Raises TextError (nothing to say), ConfigError/InputError (bad settings or files),
    EngineUnavailableError (engine not installed) before any synthesis starts.
    """
    check_timing(cfg)
    pieces = plan_pieces(text, cfg.sentence_pause_s, cfg.paragraph_pause_s)
    speaker = open_speaker(cfg, reference_audio, device)
    return render(speaker, pieces, cfg, progress)


def open_speaker(
    cfg: TTSConfig, reference_audio: AudioClip | None = None, device: str | None = None
) -> Speaker:
    """The loaded engine ``cfg.engine`` asks for, its settings checked (see :func:`synthesize`)."""
    if cfg.engine == "espeak":
        if cfg.voice_sample or cfg.clone_voice_from_video:
            raise ConfigError(
                "voice cloning needs tts.engine coqui with an XTTS model (espeak-ng cannot clone)"
            )
        return open_espeak(cfg.voice, cfg.speed)
    if cfg.engine == "coqui":
        from pipeline.core.devices import choose_device
        from tts.coqui import load_coqui

        return load_coqui(cfg, reference_audio, choose_device(device))
    raise ConfigError(f"tts.engine must be espeak or coqui, got {cfg.engine!r}")


def read_script(path: str | Path) -> str:
    """The text of a UTF-8 script file (a UTF-8 byte-order mark is dropped).

    Raises InputError when ``path`` is missing or a folder, TextError when it is not UTF-8 or holds
    nothing to say.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"script file not found: {path}")
    if not path.is_file():
        raise InputError(f"script {path} is not a file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TextError(
            f"script {path} is not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8 and retry"
        ) from exc
    check_speakable(text, where=f"script {path}")
    return text
