"""Background upsampling with Real-ESRGAN (``RealESRGAN_x2plus.pth``) through spandrel.

Reproduces ``RealESRGANer.enhance`` as the official GFPGAN and CodeFormer tools configure it
(``pre_pad=0``, tiles of 400 input pixels with a 10-pixel overlap): RGB in ``[0, 1]``, reflect-pad to a
multiple of 2 (x2 models) or 4 (x1 models), run tile by tile, crop, clamp, ``round(x * 255)``, and a
Lanczos resize when the requested scale differs from the network's.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import spandrel
import torch
import torch.nn.functional as F

from pipeline.core.adaptive_batch import AdaptiveBatch
from pipeline.core.checkpoints import load_state_dict
from pipeline.core.devices import place_model, precision_autocast, resolve_precision
from pipeline.core.errors import WrongModelError
from pipeline.core.finite import NonFiniteFrames, nonfinite_items

TILE_SIZE = 400  # input pixels per tile side (the official tools' --bg_tile default)
TILE_PAD = 10  # input pixels of overlap around each tile (GFPGAN's inference script)
MOD_SCALE = {1: 4, 2: 2}  # network scale -> input side multiple it needs (Real-ESRGAN's mod padding)
MAX_FRAMES_PER_FORWARD = 64  # frames upsampled together (fewer after a GPU out-of-memory error)


def load_bg_upsampler(
    path: str | Path, device: str | torch.device = "cpu", precision: str = "fp32"
) -> BackgroundUpsampler:
    """Load a super-resolution checkpoint spandrel knows (e.g. ``RealESRGAN_x2plus.pth``).

    ``precision``: "auto" / "fp32" / "bf16" / "fp16", resolved against the descriptor's flags.
    ``WrongModelError`` for other models.
    """
    path = Path(path)
    state = load_state_dict(path, "background upsampler")
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError as exc:
        raise WrongModelError(
            f"{path} is not a super-resolution model spandrel knows; use RealESRGAN_x2plus.pth"
        ) from exc
    if descriptor.purpose not in ("SR", "Restoration") or descriptor.input_channels != 3:
        raise WrongModelError(
            f"{path} holds a {descriptor.architecture.name} {descriptor.purpose} model, not an RGB "
            "super-resolution network; use RealESRGAN_x2plus.pth"
        )
    model, device = place_model(descriptor.model, device)
    chosen = resolve_precision(precision, device, descriptor.supports_half, descriptor.supports_bfloat16)
    return BackgroundUpsampler(model, descriptor.scale, device, chosen)


class BackgroundUpsampler:
    """A loaded super-resolution network that upsamples whole frames."""

    def __init__(
        self,
        model: torch.nn.Module,
        scale: int,
        device: torch.device,
        precision: str = "fp32",
        tile_size: int = TILE_SIZE,
        tile_pad: int = TILE_PAD,
    ) -> None:
        self.model = model
        self.scale = scale  # the network's own factor
        self.device = device
        self.precision = precision  # "fp32" | "bf16" | "fp16", already resolved for this network
        self.tile_size = tile_size
        self.tile_pad = tile_pad
        self.batches = AdaptiveBatch(MAX_FRAMES_PER_FORWARD, "background upscaling")
        self.nonfinite = NonFiniteFrames("background upscaling")

    def upsample(self, frames: np.ndarray, outscale: int, first_frame: int = 0) -> np.ndarray:
        """``(N, H, W, 3) uint8`` BGR -> ``(N, H * outscale, W * outscale, 3) uint8`` BGR.

        Out of GPU memory, fewer frames go through the network at once (halved, down to one). A frame
        the network returns NaN or infinity for is Lanczos-upscaled instead; :attr:`nonfinite` warns
        once and lists those frames (numbered from ``first_frame``)."""
        parts = self.batches.map(
            len(frames), lambda a, b: self._upsample(frames[a:b], outscale, first_frame + a)
        )
        return np.concatenate(parts) if parts else frames[:0]

    def _upsample(self, frames: np.ndarray, outscale: int, first_frame: int) -> np.ndarray:
        _, height, width, _ = frames.shape
        inputs = frames_to_unit(frames).to(self.device)
        padded, pad_h, pad_w = mod_pad(inputs, MOD_SCALE.get(self.scale))
        with torch.inference_mode(), precision_autocast(self.device, self.precision):
            output = tiled_forward(self.model, padded, self.scale, self.tile_size, self.tile_pad)
        output = output[:, :, : height * self.scale, : width * self.scale]
        images = unit_to_frames(output)
        replaced = nonfinite_items(output)
        for i in np.flatnonzero(replaced):
            images[i] = lanczos(frames[i], self.scale)
        self.nonfinite.report(first_frame + np.flatnonzero(replaced))
        if outscale == self.scale:
            return images
        size = (width * outscale, height * outscale)
        return np.stack([cv2.resize(img, size, interpolation=cv2.INTER_LANCZOS4) for img in images])


def lanczos(frame: np.ndarray, factor: int) -> np.ndarray:
    """``(H, W, 3) uint8`` -> ``(H * factor, W * factor, 3) uint8``, Lanczos-resampled."""
    height, width = frame.shape[:2]
    return cv2.resize(frame, (width * factor, height * factor), interpolation=cv2.INTER_LANCZOS4)


def frames_to_unit(frames: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3) uint8`` BGR -> ``(N, 3, H, W) float32`` RGB in ``[0, 1]`` (``x / 255`` in float32)."""
    unit = frames[..., ::-1].astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(unit.transpose(0, 3, 1, 2)))


def unit_to_frames(output: torch.Tensor) -> np.ndarray:
    """``(N, 3, H, W)`` RGB about ``[0, 1]`` -> ``(N, H, W, 3) uint8`` BGR (clamp, ``round(x * 255)``)."""
    levels = torch.round(output.float().clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return np.ascontiguousarray(levels.permute(0, 2, 3, 1).flip(-1).cpu().numpy())


def mod_pad(x: torch.Tensor, multiple: int | None) -> tuple[torch.Tensor, int, int]:
    """Reflect-pad ``(N, C, H, W)`` on the bottom/right to multiples of ``multiple``; returns the pads."""
    if not multiple:
        return x, 0, 0
    pad_h = (multiple - x.shape[2] % multiple) % multiple
    pad_w = (multiple - x.shape[3] % multiple) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    return x, pad_h, pad_w


def tiled_forward(model: torch.nn.Module, x: torch.Tensor, scale: int, tile: int, pad: int) -> torch.Tensor:
    """Run ``model`` over ``tile``-pixel tiles of ``x`` (each with ``pad`` pixels of context) and
    assemble the ``scale``-times larger output, like ``RealESRGANer.tile_process``."""
    batch, channels, height, width = x.shape
    output = None
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            y0, x0 = max(top - pad, 0), max(left - pad, 0)
            result = model(x[:, :, y0 : min(bottom + pad, height), x0 : min(right + pad, width)])
            if output is None:
                output = result.new_zeros((batch, result.shape[1], height * scale, width * scale))
            oy, ox = (top - y0) * scale, (left - x0) * scale
            output[:, :, top * scale : bottom * scale, left * scale : right * scale] = result[
                :, :, oy : oy + (bottom - top) * scale, ox : ox + (right - left) * scale
            ]
    return output
