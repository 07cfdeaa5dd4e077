"""Pure functions that turn per-frame face detections into one face track for a whole video.

A *track* is a list with one entry per video frame: the :class:`~pipeline.core.types.FaceBox` that is
lip-synced in that frame, or ``None`` when that frame passes through unchanged. ``frame_size`` is
always ``(height, width)`` in pixels. Nothing here touches pixels or models, so every rule is cheap to
test by hand.

Order used by the pipeline: :func:`choose_faces` -> :func:`smooth_boxes` -> :func:`pad_boxes`
(or :func:`fixed_box_track` alone for ``--box``). A dialogue picks each speaker's face in the first frame
with faces (:func:`face_index`) and follows all of them at once (:func:`follow_faces`) before smoothing
and padding each track.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from pipeline.core.errors import ConfigError, InputError
from pipeline.core.types import FaceBox

FACE_MODES = ("largest", "center")  # or a non-negative integer: the N-th face from the left
FACE_RULES = ("left", "right", "center", "largest")  # a speaker's face, or N: the N-th from the left
FOLLOW_MIN_IOU = 0.2  # a face continues the followed track when its box overlaps the last choice this much
FOLLOW_PATIENCE_FRAMES = 10  # frames (0.4 s at 25 fps) a lost followed face may reappear before we switch


@dataclasses.dataclass(frozen=True)
class FaceTrack:
    """The face of each video frame: ``faces[i]`` is frame i's box, ``None`` if it passes through."""

    faces: tuple[FaceBox | None, ...]
    frames_without_face: int


Track = list[FaceBox | None]
Picker = Callable[[Sequence[FaceBox]], FaceBox | None]


def box_iou(a: FaceBox, b: FaceBox) -> float:
    """Intersection over union of two boxes in pixels, in [0, 1]; 0.0 when either box is empty."""
    inter_h = min(a.bottom, b.bottom) - max(a.top, b.top)
    inter_w = min(a.right, b.right) - max(a.left, b.left)
    if inter_h <= 0 or inter_w <= 0:
        return 0.0
    inter = inter_h * inter_w
    union = a.height * a.width + b.height * b.width - inter
    return inter / union if union > 0 else 0.0


def choose_faces(per_frame: Sequence[Sequence[FaceBox]], mode: str, frame_size: tuple[int, int]) -> Track:
    """One face per frame out of all detected faces (``None`` where the frame has none to offer).

    ``mode``: ``"largest"`` (biggest box area), ``"center"`` (box centre nearest the frame centre) or an
    integer string ``"N"`` (the N-th face counted from the left by box centre, 0-based). The rule picks
    the face when a track starts; afterwards the face whose box overlaps the previous choice best
    (IoU >= ``FOLLOW_MIN_IOU``) is followed, so a neighbour that is momentarily larger or nearer the
    centre does not steal the track. When the followed face is not found, the rule picks among the
    faces present for that frame, but the old face is taken back if it reappears within
    ``FOLLOW_PATIENCE_FRAMES`` frames; after that the rule's pick becomes the followed face.
    """
    pick = face_picker(mode, frame_size)
    followed: FaceBox | None = None
    lost = 0
    track: Track = []
    for faces in per_frame:
        match = _best_overlap(faces, followed)
        if match is not None:
            followed, lost = match, 0
            track.append(match)
            continue
        choice = pick(faces)
        lost += 1
        if choice is not None and (followed is None or lost > FOLLOW_PATIENCE_FRAMES):
            followed, lost = choice, 0
        track.append(choice)
    return track


def face_picker(mode: str, frame_size: tuple[int, int]) -> Picker:
    """The rule of ``mode`` as a function ``faces -> chosen face or None``; raises ConfigError."""
    mode = str(mode).strip().lower()
    if mode == "largest":
        return lambda faces: max(faces, key=lambda f: f.height * f.width, default=None)
    if mode == "center":
        centre_y, centre_x = frame_size[0] / 2.0, frame_size[1] / 2.0
        return lambda faces: min(faces, key=lambda f: _centre_distance(f, centre_y, centre_x), default=None)
    if mode.isascii() and mode.isdigit():
        index = int(mode)
        return lambda faces: _nth_from_left(faces, index)
    raise ConfigError(
        f"detect.face must be 'largest', 'center' or a face index such as '0' (from the left), got {mode!r}"
    )


def left_to_right(faces: Sequence[FaceBox]) -> list[int]:
    """Indices of ``faces`` ordered by box centre x, smallest first (ties: higher centre first, then the
    given order). This is the order of a face index ``N`` (0 = leftmost)."""
    return sorted(
        range(len(faces)), key=lambda i: (faces[i].left + faces[i].right, faces[i].top + faces[i].bottom)
    )


def face_index(faces: Sequence[FaceBox], rule: str, frame_size: tuple[int, int]) -> int | None:
    """Index into ``faces`` of the face ``rule`` picks; None when there is no such face.

    ``rule``: ``left`` / ``right`` (smallest / largest box centre x), ``center`` (box centre nearest
    the centre of the ``(height, width)`` frame), ``largest`` (biggest box area) or an integer string
    ``N`` (the N-th face in :func:`left_to_right` order, 0-based). Ties go to the face further left.
    Raises ConfigError for another rule.
    """
    order = left_to_right(faces)
    rule = str(rule).strip().lower()
    if not order and (rule in FACE_RULES or rule.isdigit()):
        return None
    if rule == "left":
        return order[0]
    if rule == "right":
        return order[-1]
    if rule == "largest":
        return max(order, key=lambda i: faces[i].height * faces[i].width)  # max keeps the first of ties
    if rule == "center":
        centre_y, centre_x = frame_size[0] / 2.0, frame_size[1] / 2.0
        return min(order, key=lambda i: _centre_distance(faces[i], centre_y, centre_x))
    if rule.isascii() and rule.isdigit():
        return order[int(rule)] if int(rule) < len(order) else None
    raise ConfigError(f"a face rule is left, right, center, largest or an index such as 0, got {rule!r}")


def follow_faces(
    per_frame: Sequence[Sequence[FaceBox]], start_frame: int, starts: Sequence[FaceBox]
) -> list[Track]:
    """One track per box in ``starts`` (faces of frame ``start_frame``), followed over all frames.

    From ``start_frame`` on, each track takes the face of the next frame whose box overlaps the track's
    last box most (IoU >= ``FOLLOW_MIN_IOU``). A face goes to at most one track, best overlaps first,
    so one track never takes over another's face. A track whose face is missing in a frame is ``None``
    there and keeps looking near its last box. Frames before ``start_frame`` are ``None``.
    """
    tracks: list[Track] = [[None] * len(per_frame) for _ in starts]
    last = list(starts)
    for frame in range(start_frame, len(per_frame)):
        faces = per_frame[frame]
        pairs = [(box_iou(face, last[t]), t, f) for t in range(len(last)) for f, face in enumerate(faces)]
        taken_tracks: set[int] = set()
        taken_faces: set[int] = set()
        for iou, t, f in sorted(pairs, key=lambda p: -p[0]):
            if iou < FOLLOW_MIN_IOU or t in taken_tracks or f in taken_faces:
                continue
            tracks[t][frame] = last[t] = faces[f]
            taken_tracks.add(t)
            taken_faces.add(f)
    return tracks


def smooth_boxes(track: Sequence[FaceBox | None], window: int) -> Track:
    """Average each box with the following ``window - 1`` boxes, as official Wav2Lip inference does.

    The official rule (``get_smoothened_boxes``): box i becomes the mean of boxes ``i .. i+window-1``;
    where fewer than ``window`` boxes follow, the mean of the last ``window`` boxes; each result is
    truncated to integers and written back in place (so the last windows see already-smoothed boxes).
    Here the rule runs separately on each *segment*: a run of frames with a box in which consecutive
    boxes overlap. ``None`` entries and jumps (a scene cut, another face) end a segment, so nothing is
    averaged across them; a segment shorter than ``window`` is averaged as a whole. Landmarks and
    scores are kept unchanged. ``window <= 1`` returns the track unchanged.
    """
    out: Track = list(track)
    if window <= 1:
        return out
    for start, stop in _segments(out):
        coords = np.array([out[i].as_tuple() for i in range(start, stop)], dtype=np.int64)
        coords = _official_smooth(coords, window)
        for offset, (top, bottom, left, right) in enumerate(coords.tolist()):
            out[start + offset] = dataclasses.replace(
                out[start + offset], top=top, bottom=bottom, left=left, right=right
            )
    return out


def pad_boxes(
    track: Sequence[FaceBox | None], pads: tuple[int, int, int, int], frame_size: tuple[int, int]
) -> Track:
    """Grow each box by ``pads`` = (top, bottom, left, right) pixels, clipped to the frame.

    Like official Wav2Lip: ``top - pad_top`` and ``left - pad_left`` are clipped at 0, ``bottom +
    pad_bottom`` at the frame height and ``right + pad_right`` at the frame width. Negative pads shrink
    the box; a box left empty raises ConfigError. Landmarks are not moved.
    """
    pad_top, pad_bottom, pad_left, pad_right = pads
    height, width = frame_size
    out: Track = []
    for index, face in enumerate(track):
        if face is None:
            out.append(None)
            continue
        top, bottom = max(0, face.top - pad_top), min(height, face.bottom + pad_bottom)
        left, right = max(0, face.left - pad_left), min(width, face.right + pad_right)
        if bottom <= top or right <= left:
            raise ConfigError(
                f"detect.pads {tuple(pads)} leave an empty face box at frame {index} "
                f"(box {face.as_tuple()}); use smaller or non-negative pads"
            )
        out.append(dataclasses.replace(face, top=top, bottom=bottom, left=left, right=right))
    return out


def fixed_box_track(box: tuple[int, int, int, int], n_frames: int, frame_size: tuple[int, int]) -> Track:
    """The same (top, bottom, left, right) box in each of ``n_frames`` frames, for ``--box``.

    The box is clipped to the frame (as slicing does in official Wav2Lip) and used as given: no
    padding, no smoothing, ``landmarks=None`` and ``score=1.0``. Raises InputError when nothing of the
    box lies inside the ``(height, width)`` frame.
    """
    height, width = frame_size
    top, bottom, left, right = (int(v) for v in box)
    clipped = FaceBox(max(0, top), min(height, bottom), max(0, left), min(width, right))
    if clipped.height <= 0 or clipped.width <= 0:
        raise InputError(
            f"--box {tuple(box)} (top, bottom, left, right) lies outside the {width}x{height} frame; "
            f"give pixel coordinates with top < bottom <= {height} and left < right <= {width}"
        )
    return [clipped] * n_frames


def _best_overlap(faces: Sequence[FaceBox], followed: FaceBox | None) -> FaceBox | None:
    if followed is None or not faces:
        return None
    best = max(faces, key=lambda f: box_iou(f, followed))
    return best if box_iou(best, followed) >= FOLLOW_MIN_IOU else None


def _centre_distance(face: FaceBox, centre_y: float, centre_x: float) -> float:
    return float(
        np.hypot((face.top + face.bottom) / 2.0 - centre_y, (face.left + face.right) / 2.0 - centre_x)
    )


def _nth_from_left(faces: Sequence[FaceBox], index: int) -> FaceBox | None:
    ordered = sorted(faces, key=lambda f: f.left + f.right)
    return ordered[index] if index < len(ordered) else None


def _segments(track: Sequence[FaceBox | None]) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of consecutive non-None boxes in which neighbours overlap."""
    segments: list[tuple[int, int]] = []
    start = None
    for i, face in enumerate(track):
        if face is None:
            if start is not None:
                segments.append((start, i))
            start = None
        elif start is None:
            start = i
        elif box_iou(track[i - 1], face) <= 0.0:
            segments.append((start, i))
            start = i
    if start is not None:
        segments.append((start, len(track)))
    return segments


def _official_smooth(coords: np.ndarray, window: int) -> np.ndarray:
    """Wav2Lip's in-place window mean on an ``(n, 4)`` int64 array (truncating, as its int array does)."""
    n = len(coords)
    for i in range(n):
        chunk = coords[i : i + window] if i + window <= n else coords[max(0, n - window) :]
        coords[i] = np.mean(chunk, axis=0)
    return coords
