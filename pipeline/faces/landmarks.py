"""Landmark geometry of a face track: the five points restoration aligns on, estimated for a fixed box
and smoothed over time."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from pipeline.core.types import FaceBox
from pipeline.faces.tracking import FaceTrack, box_iou


def prepare_landmarks(track: FaceTrack, window: int) -> FaceTrack:
    """Give every face landmarks for restoration and smooth them over each run of consecutive faces.

    A fixed ``--box`` has no detected landmarks: they are placed where a frontal face's eyes, nose and
    mouth corners sit in such a box (a warning says restoration is approximate then).
    """
    faces = list(track.faces)
    if any(face is not None and face.landmarks is None for face in faces):
        warnings.warn("no detected landmarks (--box): restoration aligns on estimated ones", stacklevel=2)
        faces = [
            None
            if f is None
            else (f if f.landmarks is not None else replace(f, landmarks=landmarks_from_box(f)))
            for f in faces
        ]
    for start, stop in _face_runs(faces):
        points = np.stack([faces[i].landmarks for i in range(start, stop)]).astype(np.float32)
        smoothed = smooth_landmarks(points, window)
        for offset, i in enumerate(range(start, stop)):
            faces[i] = replace(faces[i], landmarks=smoothed[offset])
    return replace(track, faces=tuple(faces))


# Where eyes, nose tip and mouth corners sit in a face box, as fractions of its width and height.
BOX_LANDMARK_FRACTIONS = np.array(
    [[0.31, 0.40], [0.69, 0.40], [0.50, 0.58], [0.35, 0.76], [0.65, 0.76]], np.float32
)


def landmarks_from_box(face: FaceBox) -> np.ndarray:
    """``(5, 2) float32`` estimated landmarks of a frontal face filling ``face``'s box."""
    scale = np.array([face.width, face.height], np.float32)
    return BOX_LANDMARK_FRACTIONS * scale + np.array([face.left, face.top], np.float32)


def _face_runs(faces: list[FaceBox | None]) -> list[tuple[int, int]]:
    """``[start, stop)`` runs of consecutive faces; a box that does not overlap the one before (another
    speaker's face in a dialogue) starts a new run, so landmarks are never averaged across two faces."""
    runs, start = [], None
    for i, face in enumerate(faces + [None]):
        jump = face is not None and start is not None and box_iou(faces[i - 1], face) <= 0.0
        if start is not None and (face is None or jump):
            runs.append((start, i))
            start = None
        if face is not None and start is None:
            start = i
    return runs


def smooth_landmarks(landmarks_seq: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of landmarks over time, to steady the alignment (less flicker).

    ``landmarks_seq``: ``(N, 5, 2)`` float frame pixels of consecutive frames; rows that are all NaN (no
    face) are ignored by their neighbours and stay NaN. ``window``: frames averaged, centred on each frame
    (an even window is widened by one; near the ends only the frames that exist are averaged; ``<= 1``
    returns a copy). Returns ``(N, 5, 2) float32``.
    """
    points = np.asarray(landmarks_seq, dtype=np.float64)
    if points.ndim != 3 or points.shape[1:] != (5, 2):
        raise ValueError(f"landmarks_seq must have shape (N, 5, 2), got {points.shape}")
    if window <= 1 or len(points) == 0:
        return points.astype(np.float32)
    valid = np.all(np.isfinite(points), axis=(1, 2))
    filled = np.where(valid[:, None, None], points, 0.0)
    half = window // 2
    sums = _window_sums(filled, half)
    counts = _window_sums(valid.astype(np.float64), half)
    out = np.full_like(points, np.nan)
    out[valid] = sums[valid] / counts[valid][:, None, None]
    return out.astype(np.float32)


def _window_sums(values: np.ndarray, half: int) -> np.ndarray:
    """Sum of ``values[i - half : i + half + 1]`` along axis 0, clipped at both ends."""
    cumulative = np.concatenate([np.zeros_like(values[:1]), np.cumsum(values, axis=0)])
    n = len(values)
    upper = np.minimum(np.arange(n) + half + 1, n)
    lower = np.maximum(np.arange(n) - half, 0)
    return cumulative[upper] - cumulative[lower]
