"""The ``espeak-ng`` program as a fallback engine (argument lists only, text on stdin, WAV on stdout)."""

from __future__ import annotations

import re
import struct
import subprocess

import numpy as np

from pipeline.core.errors import LipSyncError
from tts.espeak.library import VoiceInfo, is_listed

PROGRAM_TIMEOUT_S = 120  # seconds allowed for one call of the espeak-ng program
INPUT_UTF8 = "1"  # espeak-ng -b: input text encoding 1 = UTF-8
WAV_FORMAT_PCM = 1
_OTHER_LANGUAGE = re.compile(r"\(([^\s()]+) \d+\)")


class EspeakProgram:
    """Runs the espeak-ng executable at ``executable`` (a path or a name on PATH)."""

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self._voices: list[VoiceInfo] | None = None

    def _run(self, args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                [self.executable, *args],
                input=stdin,
                capture_output=True,
                timeout=PROGRAM_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LipSyncError(f"the espeak-ng program {self.executable} could not run: {exc}") from exc

    def voices(self) -> list[VoiceInfo]:
        """The voices ``espeak-ng --voices`` lists (read once)."""
        if self._voices is None:
            done = self._run(["--voices"])
            if done.returncode != 0:
                raise LipSyncError(f"`{self.executable} --voices` failed: {_first_line(done.stderr)}")
            self._voices = parse_voice_table(done.stdout.decode("utf-8", errors="replace"))
        return self._voices

    def select_voice(self, voice: str) -> bool:
        """True when ``voice`` (optionally ``+variant``) is listed and the program accepts it.

        The program alone would also accept near misses ("en-uss" -> en); those are refused.
        """
        if not is_listed(voice.split("+")[0], self.voices()):
            return False
        return self._run(["-q", "-v", voice, "a"]).returncode == 0

    def synthesize(self, text: str, voice: str, rate_wpm: int) -> tuple[np.ndarray, int]:
        """``(int16 samples (n,), sample rate Hz)`` of ``text`` said by ``voice`` at ``rate_wpm``."""
        args = ["--stdout", "-b", INPUT_UTF8, "-v", voice, "-s", str(int(rate_wpm)), "--stdin"]
        done = self._run(args, stdin=text.encode("utf-8"))
        if done.returncode != 0:
            raise LipSyncError(
                f"the espeak-ng program failed (exit {done.returncode}): {_first_line(done.stderr)}"
            )
        return parse_wav_pcm16(done.stdout)


def parse_voice_table(listing: str) -> list[VoiceInfo]:
    """Parse ``espeak-ng --voices``: ``Pty Language Age/Gender VoiceName File Other-Languages`` rows."""
    voices = []
    for line in listing.splitlines()[1:]:
        fields = line.split(maxsplit=5)
        if len(fields) >= 5 and fields[0].isdigit():
            others = _OTHER_LANGUAGE.findall(fields[5]) if len(fields) > 5 else []
            voices.append(VoiceInfo(fields[3].replace("_", " "), fields[4], (fields[1], *others)))
    return voices


def parse_wav_pcm16(data: bytes) -> tuple[np.ndarray, int]:
    """``(int16 mono samples, rate Hz)`` of a RIFF/WAVE 16-bit PCM byte string.

    Tolerates the placeholder sizes a program writes when streaming to a pipe (RIFF and data sizes
    larger than the bytes present): the data chunk then runs to the end of ``data``.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise LipSyncError("the espeak-ng program did not write a WAV stream")
    offset, fmt = 12, None
    while offset + 8 <= len(data):
        chunk_id, size = data[offset : offset + 4], struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        body = data[offset + 8 : offset + 8 + size]
        if chunk_id == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif chunk_id == b"data":
            return _pcm16_samples(fmt, body)
        offset += 8 + size + (size & 1)
    raise LipSyncError("the espeak-ng program wrote a WAV stream without audio data")


def _pcm16_samples(fmt: tuple[int, ...] | None, body: bytes) -> tuple[np.ndarray, int]:
    if fmt is None or fmt[0] != WAV_FORMAT_PCM or fmt[5] != 16:
        raise LipSyncError(f"the espeak-ng program wrote an unsupported WAV format {fmt}")
    channels, rate = fmt[1], fmt[2]
    usable = len(body) - len(body) % (2 * channels)
    samples = np.frombuffer(body[:usable], dtype="<i2").astype(np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return samples, int(rate)


def _first_line(stderr: bytes) -> str:
    text = stderr.decode("utf-8", errors="replace").strip()
    return text.splitlines()[0] if text else "no message"
