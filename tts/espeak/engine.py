"""The default, offline speech engine: espeak-ng.

It runs the espeak-ng library shipped in the ``espeakng-loader`` wheel through ctypes (no system
package, no network, no model files). When that library cannot be loaded, the ``espeak-ng`` program
on PATH is used instead (with a warning). Neither -> :class:`EngineUnavailableError`.
"""

from __future__ import annotations

import difflib
import shutil
import threading
import warnings
from pathlib import Path
from typing import Protocol

from pipeline.core.errors import ConfigError, EngineUnavailableError
from pipeline.core.types import AudioClip
from tts.conditioning import pcm16_to_float
from tts.espeak.library import EspeakLibrary, VoiceInfo
from tts.espeak.program import EspeakProgram

RATE_MIN_WPM = 80  # espeakRATE_MINIMUM, words per minute
RATE_MAX_WPM = 450  # espeakRATE_MAXIMUM, words per minute
PROGRAM_NAMES = ("espeak-ng", "espeak")
INSTALL_HINT = "pip install espeakng-loader==0.2.4 (or: apt-get install espeak-ng)"
LIST_VOICES_HINT = "list the voices with `python -m tts`"

_LOAD_LOCK = threading.Lock()
_LOADED: dict[str, EspeakLibrary | str] = {}  # "library": the loaded library, or "error": why not


class _Backend(Protocol):
    def voices(self) -> list[VoiceInfo]: ...
    def select_voice(self, voice: str) -> bool: ...


def shared_library() -> EspeakLibrary:
    """The process-wide espeak-ng library of ``espeakng-loader`` (loaded once); OSError when unusable."""
    with _LOAD_LOCK:
        if "library" not in _LOADED and "error" not in _LOADED:
            try:
                import espeakng_loader

                data_parent = str(Path(espeakng_loader.get_data_path()).parent)
                _LOADED["library"] = EspeakLibrary.load(espeakng_loader.get_library_path(), data_parent)
            except (ImportError, OSError, RuntimeError) as exc:
                _LOADED["error"] = f"{type(exc).__name__}: {exc}"
        if "error" in _LOADED:
            raise OSError(str(_LOADED["error"]))
        library = _LOADED["library"]
        assert isinstance(library, EspeakLibrary)
        return library


def _backend() -> EspeakLibrary | EspeakProgram:
    """The library when it loads, else the espeak-ng program (with a warning), else EngineUnavailableError."""
    try:
        return shared_library()
    except OSError as exc:
        reason = str(exc)
    for name in PROGRAM_NAMES:
        found = shutil.which(name)
        if found:
            warnings.warn(
                f"espeak-ng library unavailable ({reason}); using the program {found}", stacklevel=3
            )
            return EspeakProgram(found)
    raise EngineUnavailableError(f"espeak-ng is not available ({reason}); install it: {INSTALL_HINT}")


def list_voices() -> list[VoiceInfo]:
    """The installed espeak-ng voices (``str(voice)`` reads "en-us, en: English (America) (gmw/en-US)")."""
    return _backend().voices()


class EspeakSpeaker:
    """Says text with one espeak-ng voice at one rate. Build it with :func:`open_espeak`."""

    def __init__(self, backend: EspeakLibrary | EspeakProgram, voice: str, rate_wpm: int) -> None:
        self.backend = backend
        self.voice = voice
        self.rate_wpm = rate_wpm

    def speak(self, text: str) -> AudioClip:
        """``text`` as float32 mono speech at the engine's rate (22050 Hz for espeak-ng)."""
        if isinstance(self.backend, EspeakLibrary):
            pcm, rate = self.backend.synthesize(text, self.voice, self.rate_wpm), self.backend.sample_rate_hz
        else:
            pcm, rate = self.backend.synthesize(text, self.voice, self.rate_wpm)
        return AudioClip(pcm16_to_float(pcm), rate)


def open_espeak(
    voice: str, rate_wpm: int, backend: EspeakLibrary | EspeakProgram | None = None
) -> EspeakSpeaker:
    """An :class:`EspeakSpeaker` for ``voice`` (name, identifier or language code such as "en-us").

    Raises ConfigError for a rate outside 80..450 words per minute or an unknown voice (with the
    closest known names), EngineUnavailableError when espeak-ng is not installed.
    """
    if not RATE_MIN_WPM <= rate_wpm <= RATE_MAX_WPM:
        raise ConfigError(
            f"tts.speed {rate_wpm} is outside espeak-ng's {RATE_MIN_WPM}..{RATE_MAX_WPM} words/minute"
        )
    if not voice or not voice.strip():
        raise ConfigError(f"tts.voice is empty: give an espeak-ng voice such as en-us ({LIST_VOICES_HINT})")
    backend = backend if backend is not None else _backend()
    if not backend.select_voice(voice):
        raise ConfigError(
            f"unknown espeak-ng voice {voice!r}{_suggestion(backend, voice)}; {LIST_VOICES_HINT}"
        )
    return EspeakSpeaker(backend, voice, rate_wpm)


def _suggestion(backend: _Backend, voice: str) -> str:
    names = sorted({code for v in backend.voices() for code in (*v.languages, v.identifier)})
    close = difflib.get_close_matches(voice.lower(), names, n=4, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""
