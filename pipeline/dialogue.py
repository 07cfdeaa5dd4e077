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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.errors import InputError, NoFaceError
from pipeline.core.types import FaceBox
from pipeline.faces.config import DetectConfig
from pipeline.faces.tracking import FACE_RULES, face_index, follow_faces, pad_boxes, smooth_boxes

FACE_POSITIONS = FACE_RULES  # or N: the N-th face from the left by box centre (0 = leftmost)
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

    @property
    def value(self) -> str:
        """The spec as written after ``--speaker-face A=``: ``left``, ``1``, ``box:T,B,L,R``."""
        if self.box is not None:
            return "box:" + ",".join(map(str, self.box))
        return self.position if self.position is not None else str(self.index)

    def describe(self) -> str:
        if self.box is not None:
            return "box " + ",".join(map(str, self.box))
        return self.position if self.position is not None else f"face {self.index} from the left"


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

    @property
    def fixed(self) -> bool:
        """True when every speaker's face is a fixed box (no detection needed)."""
        return all(spec.box is not None for spec in self.faces.values())


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
        return DialoguePlan(specs, voice_values, segments=tuple(cues))
    turns = parse_tagged_script(script or "")
    specs = check_speakers([Segment(s, 0, 1) for s, _ in turns], face_values, "the script")
    return DialoguePlan(specs, voice_values, turns=tuple(turns))


def faces_need_detection(faces: tuple[str, ...] | list[str]) -> bool:
    """Whether any ``SPEAKER=FACE`` value picks its face by position or index (not a fixed ``box:``)."""
    return any(not value.partition("=")[2].strip().lower().startswith("box:") for value in faces)


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


def speaker_faces(
    segments: list[Segment], fps: float, source: np.ndarray, tracks: dict[str, Sequence[FaceBox | None]]
) -> list[FaceBox | None]:
    """The face of each output frame: the speaking speaker's face in the input frame ``source[i]`` that
    output frame ``i`` shows (``tracks[speaker][input frame]``), None between segments."""
    speakers = frame_speakers(segments, fps, len(source))
    return [None if s is None else tracks[s][int(i)] for s, i in zip(speakers, source)]


def fixed_tracks(plan: DialoguePlan, n_frames: int) -> dict[str, list[FaceBox | None]]:
    """The track of each speaker with a fixed ``box:`` face: that box in each of ``n_frames`` frames."""
    return {s: [FaceBox(*spec.box)] * n_frames for s, spec in plan.faces.items() if spec.box is not None}


@dataclass(frozen=True)
class SpeakerFaces:
    """Where each speaker's face is: ``tracks[speaker][input frame]``, and for a face found by the
    detector, the box its rule picked (``picked``) in input frame ``first_frame``."""

    tracks: dict[str, Sequence[FaceBox | None]]
    picked: dict[str, FaceBox] = field(default_factory=dict)
    first_frame: int = 0

    def describe(self, speaker: str, spec: FaceSpec) -> str:
        box = self.picked.get(speaker)
        if box is None:
            return spec.describe()
        return f"{spec.describe()}: box {','.join(map(str, box.as_tuple()))} in frame {self.first_frame}"


def pick_speaker_faces(
    plan: DialoguePlan, per_frame: Sequence[Sequence[FaceBox]], frame_size: tuple[int, int]
) -> tuple[int, dict[str, FaceBox]]:
    """The first input frame with faces and the face each position / index speaker gets there.

    Raises a one-line InputError (exit code 2) when no frame has a face, when a speaker's rule finds no
    face (index 3 of two faces) or when two speakers pick the same face.
    """
    detected = {s: spec for s, spec in plan.faces.items() if spec.box is None}
    first = next((i for i, faces in enumerate(per_frame) if faces), None)
    if first is None:
        speaker, spec = next(iter(detected.items()))
        raise NoFaceError(
            f"--speaker-face {speaker}={spec.value}: face not found: no face in any of the "
            f"{len(per_frame)} frames; use a video with visible faces or give box:TOP,BOTTOM,LEFT,RIGHT"
        )
    faces, picked, owner = per_frame[first], {}, {}
    for speaker, spec in detected.items():
        index = face_index(faces, spec.value, frame_size)
        if index is None:
            raise NoFaceError(
                f"--speaker-face {speaker}={spec.value}: face not found: frame {first} (the first with "
                f"faces) has {len(faces)} face{'s' if len(faces) > 1 else ''} (index 0 to {len(faces) - 1} "
                "from the left)"
            )
        if index in owner:
            box = ",".join(map(str, faces[index].as_tuple()))
            raise InputError(
                f"--speaker-face {owner[index]} and {speaker} both pick the face at box {box} in frame "
                f"{first}; give each speaker its own face"
            )
        owner[index], picked[speaker] = speaker, faces[index]
    return first, picked


def follow_speaker_faces(
    plan: DialoguePlan,
    per_frame: Sequence[Sequence[FaceBox]],
    detect: DetectConfig,
    frame_size: tuple[int, int],
) -> SpeakerFaces:
    """Each speaker's face track over the detected input frames: the face its rule picks in the first
    frame with faces, followed by overlap (:func:`~pipeline.faces.tracking.follow_faces`), then smoothed
    and padded like a one-face track; fixed ``box:`` faces as given."""
    first, picked = pick_speaker_faces(plan, per_frame, frame_size)
    window = 1 if detect.nosmooth else detect.smooth_window
    followed = follow_faces(per_frame, first, list(picked.values()))
    tracks: dict[str, Sequence[FaceBox | None]] = fixed_tracks(plan, len(per_frame))
    for speaker, track in zip(picked, followed):
        tracks[speaker] = pad_boxes(smooth_boxes(track, window), detect.pads, frame_size)
    return SpeakerFaces(tracks, picked, first)


def format_segments(
    plan: DialoguePlan, segments: list[Segment], faces: SpeakerFaces | None = None
) -> list[str]:
    """Summary lines: per speaker, the face (and the box a position picked), segments and seconds."""
    faces = faces or SpeakerFaces({})
    lines = []
    for speaker, spec in plan.faces.items():
        own = [s for s in segments if s.speaker == speaker]
        spans = ", ".join(f"{s.start_s:.2f}-{s.end_s:.2f}" for s in own)
        seconds = sum(s.seconds for s in own)
        face = faces.describe(speaker, spec)
        lines.append(f"speaker {speaker} ({face}): {seconds:.2f} s in {len(own)} segments: {spans}")
    return lines
