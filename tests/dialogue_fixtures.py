"""Shared pieces of the dialogue render tests: a recorded two-voice dialogue with its SRT cues, the
summary's segment times, and the checks on the output's face regions and audio track."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np

import tts
from pipeline.core.media import decode_audio
from tests.pitch import median_f0
from tts.conditioning import voiced_bounds
from tts.config import TTSConfig

RATE_HZ = 16000
FPS = 25.0
VOICES = {"A": "en-us", "B": "en-gb+f3"}  # espeak-ng: a low (about 100 Hz) and a high (about 195 Hz) voice
TURNS = (("A", "Hello there, how are you?"), ("B", "Fine, thanks."))


def write_dialogue(folder: Path, turns=TURNS, gap_s: float = 0.4) -> tuple[Path, Path, list[tuple]]:
    """``dialogue.wav`` (each turn in its speaker's espeak voice, ``gap_s`` of silence between turns)
    and ``dialogue.srt`` (``A: text`` cues on whole milliseconds); returns both paths and the cues as
    ``(speaker, start_s, end_s)``."""
    parts, cues, at_ms = [], [], 0
    for speaker, text in turns:
        clip = tts.synthesize(text, replace(TTSConfig(), voice=VOICES[speaker]))
        assert clip.sample_rate_hz == RATE_HZ
        length_ms = -(-len(clip.samples) * 1000 // RATE_HZ)  # rounded up: the cue covers the whole turn
        samples = np.zeros(length_ms * RATE_HZ // 1000, np.float32)
        samples[: len(clip.samples)] = clip.samples
        parts += [np.zeros(at_ms * RATE_HZ // 1000 - sum(map(len, parts)), np.float32), samples]
        cues.append((speaker, at_ms / 1000, (at_ms + length_ms) / 1000, text))
        at_ms += length_ms + round(gap_s * 1000)
    import soundfile

    wav, srt = folder / "dialogue.wav", folder / "dialogue.srt"
    soundfile.write(wav, np.concatenate(parts), RATE_HZ, subtype="FLOAT")
    blocks = [f"{n}\n{_stamp(start)} --> {_stamp(end)}\n{s}: {text}\n" for n, (s, start, end, text) in
              enumerate(cues, 1)]  # fmt: skip
    srt.write_text("\n".join(blocks))
    return wav, srt, [cue[:3] for cue in cues]


def _stamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def summary_segments(summary: str) -> list[tuple[str, float, float]]:
    """``(speaker, start_s, end_s)`` of every segment the run summary lists, in time order."""
    found = []
    for speaker, spans in re.findall(
        r"^speaker (\w+) \(.*?\): [\d.]+ s in \d+ segments: (.*)$", summary, re.M
    ):
        found += [(speaker, float(a), float(b)) for a, b in re.findall(r"(\d+\.\d+)-(\d+\.\d+)", spans)]
    return sorted(found, key=lambda seg: seg[1])


def mouth_diff(frames: np.ndarray, expected: np.ndarray, face: tuple[int, int, int, int]) -> np.ndarray:
    """Per frame, the mean absolute difference in the lower middle of ``face`` (top, bottom, left, right)."""
    top, bottom, left, right = face
    inset = (right - left) // 7
    lower = (slice(None), slice((top + bottom) // 2 + 5, bottom - 5), slice(left + inset, right - inset))
    return np.abs(frames[lower].astype(np.int16) - expected[lower]).mean(axis=(1, 2, 3))


def check_each_speaker_moves_only_their_face(
    frames, expected, faces: dict, segments, noise: float = 2.5
) -> None:
    """In each segment (two frames in from its edges, past the cross-fade) the speaker's mouth region
    changed and every other face's region equals the input within encoding noise (a mean absolute
    difference under ``noise``)."""
    for speaker, start_s, end_s in segments:
        inside = slice(int(start_s * FPS) + 2, int(end_s * FPS) - 1)
        for other, face in faces.items():
            diff = mouth_diff(frames, expected, face)[inside]
            if other == speaker:
                assert diff.min() > 8, (speaker, other, diff.min())
            else:
                assert diff.max() < noise, (speaker, other, diff.max())


def check_voices_in_order(video: Path, segments, low: str = "A", high: str = "B") -> None:
    """The audio track of ``video`` holds, in each summary segment, speech whose start and end lie
    within a frame of the segment's, in the ``low`` speaker's voice at a clearly lower pitch than every
    ``high`` segment."""
    audio = decode_audio(video).samples
    pitches = {}
    for number, (speaker, start_s, end_s) in enumerate(segments):
        margin = round(0.15 * RATE_HZ)  # less than half the gap between turns
        offset = max(0, round(start_s * RATE_HZ) - margin)
        part = audio[offset : round(end_s * RATE_HZ) + margin]
        bounds = voiced_bounds(part, RATE_HZ)
        assert bounds is not None, (speaker, start_s)
        voiced_start, voiced_end = ((offset + b) / RATE_HZ for b in bounds)
        assert abs(voiced_start - start_s) <= 1 / FPS and abs(voiced_end - end_s) <= 1 / FPS, (
            speaker, (start_s, end_s), (voiced_start, voiced_end))  # fmt: skip
        pitches[number] = (
            speaker,
            median_f0(audio[round(start_s * RATE_HZ) : round(end_s * RATE_HZ)], RATE_HZ),
        )
    lows = [f0 for s, f0 in pitches.values() if s == low]
    highs = [f0 for s, f0 in pitches.values() if s == high]
    assert lows and highs and max(lows) < 0.75 * min(highs), pitches
