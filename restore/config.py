"""Settings of face restoration (``restore:`` in configs/inference.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class RestoreConfig:
    restorer: Literal["gfpgan", "codeformer", "none"] = "gfpgan"
    checkpoint: str | None = None  # default: weights/GFPGANv1.4.pth or weights/codeformer.pth
    fidelity: float = 0.5  # CodeFormer w in [0, 1]; ~1.0 is steadier on video
    batch_size: int | None = None  # faces per forward pass; None: 8 on CUDA, 1 on CPU
    upscale: Literal[1, 2, 4] = 1
    bg_upsampler: Literal["realesrgan"] | None = None
    parsing: bool = True  # use parsing_parsenet.pth for the blend mask when present
    landmark_smooth_window: int = 5
    # torch, or auto / openvino: GFPGAN on the CPU runs on OpenVINO (opt-in until a crash seen once in the
    # test suite with OpenVINO loaded in the same process is understood)
    backend: Literal["auto", "torch", "openvino"] = "torch"
