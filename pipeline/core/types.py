"""Data types that flow between stages.

Conventions used everywhere in the project:
- frames are ``(N, H, W, 3) uint8`` arrays in **BGR** channel order (OpenCV's order, the order the
  official Wav2Lip, GFPGAN and CodeFormer tools use);
- boxes are ``(top, bottom, left, right)`` integer pixel coordinates with bottom/right exclusive;
- landmarks are five ``(x, y)`` points: left eye, right eye, nose, left mouth corner, right mouth corner
  (RetinaFace order, the order the FFHQ alignment template expects);
- audio is float32 mono in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class StageClock(Protocol):
    """Where a stage reports the wall-clock seconds it spent (``pipeline.render.StageTimes``)."""

    def add(self, stage: str, seconds: float) -> None: ...


@dataclass(frozen=True)
class AudioClip:
    """Mono speech: ``samples`` float32 of shape ``(n,)``, ``sample_rate_hz`` samples per second."""

    samples: np.ndarray
    sample_rate_hz: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sample_rate_hz)


@dataclass(frozen=True)
class FaceBox:
    """One face in one frame: crop box and (when detected) the five landmarks in frame pixels."""

    top: int
    bottom: int
    left: int
    right: int
    landmarks: np.ndarray | None = None  # (5, 2) float32, x then y
    score: float = 1.0

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.top, self.bottom, self.left, self.right)


@dataclass(frozen=True)
class FrameBatch:
    """A run of consecutive output frames and what the video stages know about them.

    ``frames``: ``(N, H, W, 3) uint8`` BGR; ``faces[i]`` is the chosen face of frame i or ``None`` when
    no face was found (that frame passes through unchanged); ``mel[i]`` is the ``(80, 16)`` float32 mel
    window that drives frame i. ``start_index`` is the index of ``frames[0]`` in the output video.
    ``mouth_weight[i]`` in [0, 1] is how much of the generated mouth frame i shows (0: the original
    pixels, in a held silence); ``None`` means 1 for every frame.
    """

    start_index: int
    frames: np.ndarray
    faces: tuple[FaceBox | None, ...]
    mel: np.ndarray = field(repr=False)  # (N, 80, 16) float32
    mouth_weight: np.ndarray | None = field(default=None, repr=False)  # (N,) float32 in [0, 1]

    def __len__(self) -> int:
        return len(self.frames)

    def with_frames(self, frames: np.ndarray) -> "FrameBatch":
        return FrameBatch(self.start_index, frames, self.faces, self.mel, self.mouth_weight)
