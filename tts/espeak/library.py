"""ctypes binding to the espeak-ng shared library (the API of ``espeak-ng/speak_lib.h``).

The library holds process-global state (one selected voice, one set of parameters, one callback), so
an :class:`EspeakLibrary` is created once per process and every call runs under its lock. Synthesis
uses ``AUDIO_OUTPUT_SYNCHRONOUS``: ``espeak_Synth`` returns when the whole text has been rendered,
the synth callback having received the 16-bit samples block by block.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import LipSyncError

# espeak_AUDIO_OUTPUT, options and flags of speak_lib.h (API revision 12)
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000  # return -1 instead of exit() when espeak-ng-data is missing
BUFFER_MS = 0  # synth callback block length in ms; 0 = the library default (60 ms)
CHARS_UTF8 = 1
POS_CHARACTER = 1
PARAM_RATE = 1  # espeakRATE, words per minute
EE_OK = 0

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class VoiceInfo:
    """One installed espeak-ng voice: ``name`` ("English (America)"), ``identifier`` ("gmw/en-US") and
    the language codes it answers to, most preferred first (("en-us", "en"))."""

    name: str
    identifier: str
    languages: tuple[str, ...]

    def __str__(self) -> str:
        return f"{', '.join(self.languages) or self.identifier}: {self.name} ({self.identifier})"


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, UTF-8 string, NUL) pairs, ended by a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and result types of the functions used (so ctypes converts and checks them)."""
    c_int, c_uint, c_char_p, c_void_p = ctypes.c_int, ctypes.c_uint, ctypes.c_char_p, ctypes.c_void_p
    lib.espeak_Initialize.argtypes = [c_int, c_int, c_char_p, c_int]
    lib.espeak_Initialize.restype = c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [c_char_p]
    lib.espeak_SetVoiceByName.restype = c_int
    lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
    lib.espeak_SetVoiceByProperties.restype = c_int
    lib.espeak_SetParameter.argtypes = [c_int, c_int, c_int]
    lib.espeak_SetParameter.restype = c_int
    lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    lib.espeak_Synth.argtypes = [c_char_p, ctypes.c_size_t, c_uint, c_int, c_uint, c_uint, c_void_p, c_void_p]
    lib.espeak_Synth.restype = c_int


class EspeakLibrary:
    """The initialised espeak-ng library. Build it with :meth:`load`, once per process."""

    def __init__(self, lib: ctypes.CDLL, sample_rate_hz: int) -> None:
        self.sample_rate_hz = sample_rate_hz
        self._lib = lib
        self._lock = threading.Lock()
        self._blocks: list[np.ndarray] = []
        self._raised: BaseException | None = None
        self._callback = _CALLBACK(self._collect)  # kept referenced: the library calls it later
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def load(cls, library_path: str, data_parent_dir: str) -> EspeakLibrary:
        """Load ``library_path`` and initialise it with the ``espeak-ng-data`` found in ``data_parent_dir``.

        Raises OSError when the library cannot be loaded or initialised.
        """
        lib = ctypes.CDLL(library_path)
        _declare(lib)
        rate = lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, BUFFER_MS, data_parent_dir.encode(), INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise OSError(f"espeak_Initialize failed (no espeak-ng-data in {data_parent_dir}?)")
        return cls(lib, int(rate))

    def _collect(self, wav, count: int, _events) -> int:
        """The synth callback: keep a block of samples; 0 = go on, 1 = abort synthesis."""
        try:
            if wav and count > 0:
                self._blocks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
            return 0
        except BaseException as exc:  # ctypes would print and drop it (even Ctrl-C): re-raised after Synth
            self._raised = exc
            return 1

    def voices(self) -> list[VoiceInfo]:
        """Every installed voice, in the library's order."""
        with self._lock:
            return self._voices()

    def _voices(self) -> list[VoiceInfo]:
        table = self._lib.espeak_ListVoices(None)
        out, index = [], 0
        while table[index]:
            voice = table[index].contents
            out.append(VoiceInfo(_text(voice.name), _text(voice.identifier), _languages(voice.languages)))
            index += 1
        return out

    def _variants(self) -> set[str]:
        """Names (lower case) of the installed voice variants ("f3", "m1", "whisper")."""
        spec = _Voice()
        spec.languages = ctypes.cast(ctypes.c_char_p(b"variant"), ctypes.c_void_p)
        table = self._lib.espeak_ListVoices(ctypes.byref(spec))
        names, index = set(), 0
        while table[index]:
            names.add(_text(table[index].contents.identifier).rpartition("/")[2].lower())
            index += 1
        return names

    def select_voice(self, voice: str) -> bool:
        """Select ``voice``: a voice name, identifier or language code (any case) of :meth:`voices`,
        optionally with ``+variant`` (``en-gb+f3``)."""
        with self._lock:
            return self._select(voice)

    def _select(self, voice: str) -> bool:
        base, plus, variant = voice.partition("+")
        if plus:  # "en-gb+f3": a voice and a variant (f1-f5 female, m1-m8 male, ...) of voices/!v
            identifier = base_identifier(base, self._voices())
            if identifier is None or variant.strip().lower() not in self._variants():
                return False
            return self._lib.espeak_SetVoiceByName(f"{identifier}+{variant.strip()}".encode()) == EE_OK
        encoded = voice.encode("utf-8")
        if self._lib.espeak_SetVoiceByName(encoded) == EE_OK:
            return True
        # Some listed language codes ("en-gb", "fr-fr", "zh") are found only by language; unlisted codes are
        # refused here although espeak-ng would match them loosely ("en-uss" -> en), to catch typos.
        if not is_listed(voice, self._voices(), names=False):
            return False
        spec = _Voice()
        spec.languages = ctypes.cast(ctypes.c_char_p(encoded), ctypes.c_void_p)
        return self._lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) == EE_OK

    def synthesize(self, text: str, voice: str, rate_wpm: int) -> np.ndarray:
        """``int16 (n,)`` samples at :attr:`sample_rate_hz` of ``text`` said by ``voice`` at ``rate_wpm``."""
        encoded = text.encode("utf-8")
        with self._lock:
            if not self._select(voice):
                raise LipSyncError(f"espeak-ng could not select voice {voice!r}")
            self._lib.espeak_SetParameter(PARAM_RATE, int(rate_wpm), 0)
            self._blocks, self._raised = [], None
            status = self._lib.espeak_Synth(
                encoded, len(encoded) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None
            )
            blocks, self._blocks, raised, self._raised = self._blocks, [], self._raised, None
        if raised is not None:
            raise raised
        if status != EE_OK:
            raise LipSyncError(f"espeak-ng failed (espeak_Synth error {status}) on {text[:40]!r}")
        return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int16)


def is_listed(voice: str, voices: list[VoiceInfo], names: bool = True) -> bool:
    """True when ``voice`` equals (any case) a language code of ``voices`` or, with ``names``, one of
    their identifiers or names."""
    wanted = voice.strip().lower()
    for info in voices:
        candidates = (*info.languages, info.identifier, info.name) if names else info.languages
        if any(wanted == candidate.lower() for candidate in candidates):
            return True
    return False


def base_identifier(voice: str, voices: list[VoiceInfo]) -> str | None:
    """The identifier ("gmw/en") of the voice ``voice`` names: a voice whose preferred language code,
    identifier or name it is (any case), else the first that answers to it as a language code."""
    wanted = voice.strip().lower()
    for info in voices:
        if wanted in {name.lower() for name in (*info.languages[:1], info.identifier, info.name)}:
            return info.identifier
    for info in voices:
        if is_listed(wanted, [info], names=False):
            return info.identifier
    return None


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", errors="replace") if value else ""


def _languages(pointer: int | None) -> tuple[str, ...]:
    """Decode the ``languages`` field: (priority byte, NUL-terminated name) pairs, sorted by priority."""
    pairs, address = [], pointer
    while address:
        priority = ctypes.string_at(address, 1)[0]
        if priority == 0:
            break
        name = ctypes.string_at(address + 1)
        pairs.append((priority, name.decode("utf-8", errors="replace")))
        address += len(name) + 2
    return tuple(name for _, name in sorted(pairs, key=lambda pair: pair[0]))
