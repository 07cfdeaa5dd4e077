"""Settings of the lip-sync stage (``wav2lip:`` in configs/inference.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Wav2LipConfig:
    checkpoint: str | None = None  # default: weights/wav2lip_gan.pth
    batch_size: int | None = None  # None: 128 on CUDA, 16 on CPU
    paste: Literal["feather", "hard"] = "feather"
    feather_px: int = 6  # width of the soft seam of the feathered paste, in 96x96 face pixels
    # Pauses in the speech longer than this many seconds show the original mouth (0: never hold).
    hold_silence: float = 0.25
