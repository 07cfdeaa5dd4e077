"""A dialogue plan: who speaks when, and which face is theirs.

Made from a tagged script (``[A] Hello`` / ``[B] Fine.``; a bare line continues the last speaker) or from
timed cues (``.srt``, ``.vtt`` or ``.json``) of a pre-recorded dialogue whose text starts ``A: ...`` or,
in JSON, carries a ``speaker`` field. Every check here is pure and runs before any heavy work: cues out of
order or overlapping, a speaker without a face, a face spec that cannot be read are one-line
:class:`~pipeline.core.errors.InputError` (exit code 2).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import InputError

FACE_POSITIONS = ("left", "right", "center", "largest")
_TAG = re.compile(r"^\s*\[([A-Za-z0-9_-]+)\]\s*(.*)$")
_CUE_SPEAKER = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*:\s*(.*)$", re.S)
_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")


@dataclass(frozen=True)
class Segment:
    """One speaker's turn: ``start_s`` .. ``end_s`` seconds of the speech, and what is said."""

    speaker: str
    start_s: float
    end_s: float
    text: str = ""

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class FaceSpec:
    """Which face is a speaker's: a position (left, right, center, largest), an index, or a fixed box."""

    position: str | None = None
    index: int | None = None
    box: tuple[int, int, int, int] | None = None  # top, bottom, left, right

    def describe(self) -> str:
        if self.box is not None:
            return "box " + ",".join(map(str, self.box))
        return self.position if self.position is not None else f"face {self.index}"


def parse_tagged_script(text: str) -> list[tuple[str, str]]:
    """``(speaker, text)`` turns of a script with ``[A] ...`` tags; bare lines continue the last speaker.

    Consecutive lines of one speaker are joined into one turn; blank lines are dropped.
    """
    turns: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        match = _TAG.match(line)
        speaker, words = (match.group(1), match.group(2)) if match else (None, line.strip())
        if speaker is None:
            if not words:
                continue
            if not turns:
                raise InputError(f"script line {number} has no speaker: start the script with a tag like [A]")
            speaker = turns[-1][0]
        if turns and turns[-1][0] == speaker:
            turns[-1] = (speaker, f"{turns[-1][1]} {words}".strip())
        else:
            turns.append((speaker, words))
    return [turn for turn in turns if turn[1]]


def parse_assignments(values: list[str] | tuple[str, ...], flag: str) -> dict[str, str]:
    """``["A=en-us", "B=en-gb+f3"]`` -> ``{"A": "en-us", "B": "en-gb+f3"}``; one-line error otherwise."""
    result: dict[str, str] = {}
    for value in values:
        speaker, sep, what = value.partition("=")
        if not sep or not speaker.strip() or not what.strip():
            raise InputError(f"{flag} {value!r} must be SPEAKER=VALUE, e.g. {flag} A=left")
        if speaker.strip() in result:
            raise InputError(f"{flag} names speaker {speaker.strip()} twice")
        result[speaker.strip()] = what.strip()
    return result


def parse_face_spec(speaker: str, spec: str) -> FaceSpec:
    """``left|right|center|largest|N|box:T,B,L,R`` -> :class:`FaceSpec`."""
    spec = spec.strip().lower()
    if spec in FACE_POSITIONS:
        return FaceSpec(position=spec)
    if spec.isdigit():
        return FaceSpec(index=int(spec))
    if spec.startswith("box:"):
        parts = spec[4:].split(",")
        if len(parts) == 4 and all(p.strip().isdigit() for p in parts):
            top, bottom, left, right = (int(p) for p in parts)
            if bottom > top and right > left:
                return FaceSpec(box=(top, bottom, left, right))
    raise InputError(
        f"--speaker-face {speaker}={spec}: use left, right, center, largest, a face index or "
        "box:TOP,BOTTOM,LEFT,RIGHT (bottom > top, right > left)"
    )


def read_segments(path: Path) -> list[Segment]:
    """The cues of ``path`` (.srt, .vtt or .json) as segments, checked to be in order and not overlapping."""
    if not path.is_file():
        raise InputError(f"segments file not found: {path}")
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    if suffix == ".json":
        segments = _json_segments(text, path)
    elif suffix in (".srt", ".vtt"):
        segments = _subtitle_segments(text, path)
    else:
        raise InputError(f"--segments {path}: use a .srt, .vtt or .json file")
    if not segments:
        raise InputError(f"--segments {path} holds no cues")
    check_segments(segments, str(path))
    return segments


def check_segments(segments: list[Segment], where: str) -> None:
    """Raise when a segment is empty, out of order or overlaps the one before it."""
    for number, (before, segment) in enumerate(zip([None, *segments], segments), 1):
        if segment.end_s <= segment.start_s:
            raise InputError(f"{where}: cue {number} ends at {segment.end_s:.3f} s, not after its start")
        if before is not None and segment.start_s < before.start_s:
            raise InputError(f"{where}: cue {number} starts before cue {number - 1}; sort the cues by time")
        if before is not None and segment.start_s < before.end_s:
            raise InputError(
                f"{where}: cue {number} ({segment.start_s:.3f} s) overlaps cue {number - 1} "
                f"(ends {before.end_s:.3f} s); one speaker at a time"
            )


def check_speakers(segments: list[Segment], faces: dict[str, str], where: str) -> dict[str, FaceSpec]:
    """The face spec of every speaker in ``segments``; raises for a speaker without ``--speaker-face``."""
    for segment in segments:
        if segment.speaker not in faces:
            known = ", ".join(sorted(faces)) or "none"
            raise InputError(
                f"{where}: unknown speaker {segment.speaker!r} (speakers with a face: {known}); "
                f"add --speaker-face {segment.speaker}=left|right|..."
            )
    return {speaker: parse_face_spec(speaker, spec) for speaker, spec in faces.items()}


def frame_speakers(segments: list[Segment], fps: float, count: int) -> list[str | None]:
    """The speaker of each of ``count`` output frames (the one whose segment holds the frame's centre),
    ``None`` between segments."""
    centres = (np.arange(count) + 0.5) / fps
    result: list[str | None] = [None] * count
    for segment in segments:
        for i in np.flatnonzero((centres >= segment.start_s) & (centres < segment.end_s)):
            result[int(i)] = segment.speaker
    return result


def _json_segments(text: str, path: Path) -> list[Segment]:
    try:
        cues = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--segments {path} is not valid JSON: {exc.msg} (line {exc.lineno})") from exc
    cues = cues.get("segments") if isinstance(cues, dict) else cues
    if not isinstance(cues, list):
        raise InputError(f"--segments {path}: expected a list of {{speaker, start, end, text}} cues")
    segments = []
    for number, cue in enumerate(cues, 1):
        try:
            segments.append(
                Segment(str(cue["speaker"]), float(cue["start"]), float(cue["end"]), cue.get("text", ""))
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(
                f"--segments {path}: cue {number} needs speaker, start and end (seconds)"
            ) from exc
    return segments


def _subtitle_segments(text: str, path: Path) -> list[Segment]:
    segments = []
    for number, block in enumerate(re.split(r"\n\s*\n", text.replace("\r\n", "\n")), 1):
        lines = [line for line in block.strip().splitlines() if line.strip()]
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            continue  # the WEBVTT header, a NOTE, a bare number
        start, _, end = lines[timing].partition("-->")
        words = " ".join(lines[timing + 1 :])
        match = _CUE_SPEAKER.match(words)
        if match is None:
            raise InputError(f"--segments {path}: cue {number} has no speaker; write its text as 'A: ...'")
        segments.append(Segment(match.group(1), _seconds(start, path), _seconds(end, path), match.group(2)))
    return segments


def _seconds(stamp: str, path: Path) -> float:
    match = _TIME.search(stamp)
    if match is None:
        raise InputError(f"--segments {path}: cannot read the time {stamp.strip()!r} (use 00:00:01,500)")
    hours, minutes, seconds, fraction = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(fraction.ljust(3, "0")) / 1000


DIALOGUE_GAP_S = 0.3  # seconds of silence between two synthesised turns


@dataclass(frozen=True)
class DialoguePlan:
    """Who speaks: ``turns`` to synthesise (a tagged script) or ``segments`` of a given recording."""

    faces: dict[str, FaceSpec]
    voices: dict[str, str]
    turns: tuple[tuple[str, str], ...] = ()
    segments: tuple[Segment, ...] = ()


def plan_dialogue(faces: tuple[str, ...], voices: tuple[str, ...], segments: str | None, script: str | None,
                  has_audio: bool) -> DialoguePlan | None:  # fmt: skip
    """The checked plan of a dialogue run (``--speaker-face`` given), or None for a one-face run."""
    if not faces:
        if segments or voices:
            raise InputError("--segments and --speaker-voice need a face per speaker: --speaker-face A=...")
        return None
    face_values = parse_assignments(faces, "--speaker-face")
    voice_values = parse_assignments(voices, "--speaker-voice")
    if has_audio:
        if not segments:
            raise InputError(
                "a dialogue --audio needs --segments FILE (.srt, .vtt or .json) saying who speaks when"
            )
        cues = read_segments(Path(segments))
        specs = check_speakers(cues, face_values, segments)
        return _only_boxes(DialoguePlan(specs, voice_values, segments=tuple(cues)))
    turns = parse_tagged_script(script or "")
    specs = check_speakers([Segment(s, 0, 1) for s, _ in turns], face_values, "the script")
    return _only_boxes(DialoguePlan(specs, voice_values, turns=tuple(turns)))


def _only_boxes(plan: DialoguePlan) -> DialoguePlan:
    for speaker, spec in plan.faces.items():
        if spec.box is None:
            raise InputError(
                f"--speaker-face {speaker}={spec.describe()}: this version follows fixed faces only; "
                "give box:TOP,BOTTOM,LEFT,RIGHT"
            )
    return plan


def join_turns(clips: list[tuple[str, str, np.ndarray]], rate: int) -> tuple[np.ndarray, list[Segment]]:
    """Concatenate ``(speaker, text, samples)`` turns with ``DIALOGUE_GAP_S`` of silence between them;
    returns the samples and each turn's segment in seconds of the result."""
    gap = np.zeros(round(DIALOGUE_GAP_S * rate), np.float32)
    parts, segments, at = [], [], 0
    for number, (speaker, text, samples) in enumerate(clips):
        if number:
            parts.append(gap)
            at += len(gap)
        segments.append(Segment(speaker, at / rate, (at + len(samples)) / rate, text))
        parts.append(samples.astype(np.float32))
        at += len(samples)
    return np.concatenate(parts) if parts else np.zeros(0, np.float32), segments


def speaker_boxes(plan: DialoguePlan, segments: list[Segment], fps: float, count: int) -> list:
    """The face box of each output frame: the speaking speaker's box, None between segments."""
    from pipeline.core.types import FaceBox

    boxes = {speaker: FaceBox(*spec.box) for speaker, spec in plan.faces.items() if spec.box}
    return [boxes[s] if s is not None else None for s in frame_speakers(segments, fps, count)]


def format_segments(plan: DialoguePlan, segments: list[Segment]) -> list[str]:
    """Summary lines: per speaker, the face, the segments and the seconds spoken."""
    lines = []
    for speaker, spec in plan.faces.items():
        own = [s for s in segments if s.speaker == speaker]
        spans = ", ".join(f"{s.start_s:.2f}-{s.end_s:.2f}" for s in own)
        seconds = sum(s.seconds for s in own)
        lines.append(
            f"speaker {speaker} ({spec.describe()}): {seconds:.2f} s in {len(own)} segments: {spans}"
        )
    return lines
