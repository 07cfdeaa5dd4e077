"""Settings of face detection and tracking (``detect:`` in configs/inference.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class DetectConfig:
    # s3fd: the official Wav2Lip preprocessing's detector (no landmarks; its official keep score is 0.5)
    model: Literal["retinaface_resnet50", "retinaface_mobile0.25", "s3fd"] = "retinaface_resnet50"
    checkpoint: str | None = None  # default: weights/<manifest file of `model`>
    detect_max_side: int = 640  # detection runs on a copy downscaled to at most this many pixels
    score_threshold: float = 0.8
    batch_size: int = 8
    smooth_window: int = 5  # frames; 1 (or nosmooth) disables box smoothing
    nosmooth: bool = False
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)  # top, bottom, left, right in pixels
    box: tuple[int, int, int, int] | None = None  # top, bottom, left, right: skip detection
    face: str | int = "largest"  # largest | center | N (index from the left)
