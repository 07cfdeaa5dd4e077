"""How Wav2Lip sees a face: size, value range, the mouth mask. Shared by inference and training.

Faces are 96x96 BGR crops (the order OpenCV reads, the order the released models were trained on). The
networks take them as float32 in [0, 1], channels first. The generator's input stacks a *target* copy
with its lower half (rows 48..95, mouth and chin) set to zero and an unmasked *reference* face:
channels 0-2 target, 3-5 reference. At inference the reference is the same frame; in training it is a
different frame of the same clip.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from pipeline.core.devices import upload
from wav2lip.models.wav2lip import WAV2LIP_FACE_SIZE

MASK_START_ROW = WAV2LIP_FACE_SIZE // 2  # rows from here down are hidden from the generator's target copy
PIXEL_MAX = 255.0  # uint8 full scale


def faces_to_unit(faces: np.ndarray) -> np.ndarray:
    """``(..., H, W, 3) uint8`` BGR -> ``(..., 3, H, W) float32`` in [0, 1] (channels moved first)."""
    if faces.dtype != np.uint8:
        raise TypeError(f"faces must be uint8, got {faces.dtype}")
    unit = faces.astype(np.float32) / np.float32(PIXEL_MAX)
    return np.ascontiguousarray(np.moveaxis(unit, -1, -3))


def mask_lower_half(faces: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """A copy of channels-first faces with rows ``H//2 ..`` set to 0.

    Accepts ``(N, C, H, W)`` (inference) or ``(C, T, H, W)`` / ``(N, C, T, H, W)`` (training windows):
    the second-to-last axis is always the row axis.
    """
    masked = faces.clone() if isinstance(faces, torch.Tensor) else faces.copy()
    masked[..., faces.shape[-2] // 2 :, :] = 0
    return masked


def generator_input(target: np.ndarray, reference: np.ndarray, channel_axis: int = -3) -> np.ndarray:
    """Stack the masked target and the reference along the channel axis.

    ``target`` and ``reference``: channels-first float in [0, 1] of equal shape, e.g. a batch
    ``(N, 3, 96, 96)`` (``channel_axis=-3``) or a training window ``(3, T, 96, 96)`` /
    ``(B, 3, T, 96, 96)`` (``channel_axis=-4``). Returns float32 with 6 channels: 0-2 the target with
    rows 48.. zeroed, 3-5 the reference.
    """
    if target.shape != reference.shape:
        raise ValueError(f"target {target.shape} and reference {reference.shape} differ in shape")
    if target.shape[channel_axis] != 3:
        raise ValueError(f"axis {channel_axis} of {target.shape} is not a 3-channel BGR axis")
    stacked = np.concatenate([mask_lower_half(target), reference], axis=channel_axis)
    return stacked.astype(np.float32, copy=False)


def prepare_face_inputs(face_crops: np.ndarray) -> np.ndarray:
    """The generator's face input at inference: each frame is its own reference.

    ``face_crops (N, 96, 96, 3) uint8`` BGR -> ``(N, 6, 96, 96) float32`` in [0, 1]; channels 0-2: the
    crop with rows 48..95 zeroed, 3-5: the crop itself (the official inference.py order).
    """
    if face_crops.ndim != 4 or face_crops.shape[1:] != (WAV2LIP_FACE_SIZE, WAV2LIP_FACE_SIZE, 3):
        raise ValueError(
            f"face crops must be (N, {WAV2LIP_FACE_SIZE}, {WAV2LIP_FACE_SIZE}, 3), got {face_crops.shape}"
        )
    unit = faces_to_unit(face_crops)
    return generator_input(unit, unit)


def face_input_tensor(face_crops: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """:func:`prepare_face_inputs` of ``face_crops`` as a tensor on ``device``. On CUDA the uint8 crops go
    up (pinned, non-blocking) and are converted there by :func:`pixels_to_face_inputs`, to the same
    values; on the CPU :func:`prepare_face_inputs` itself (shared memory, no copy)."""
    device = torch.device(device)
    if device.type == "cuda":
        return pixels_to_face_inputs(upload(face_crops, device))
    return torch.from_numpy(prepare_face_inputs(face_crops)).to(device)


def pixels_to_face_inputs(crops: torch.Tensor) -> torch.Tensor:
    """``(N, 96, 96, 3) uint8`` BGR crops on any device -> the generator's ``(N, 6, 96, 96) float32``
    face input there, exactly :func:`prepare_face_inputs`' numbers (the 256 levels are looked up in a
    table computed by :func:`faces_to_unit`)."""
    if crops.dtype != torch.uint8 or crops.dim() != 4 or crops.shape[-1] != 3:
        raise ValueError(f"crops must be (N, H, W, 3) uint8, got {tuple(crops.shape)} {crops.dtype}")
    unit = _unit_levels(crops.device)[crops.int()].permute(0, 3, 1, 2)
    return torch.cat([mask_lower_half(unit), unit], dim=1)


@functools.cache
def _unit_levels(device: torch.device) -> torch.Tensor:
    levels = np.arange(256, dtype=np.uint8).reshape(1, 256, 1).repeat(3, axis=2)
    return torch.from_numpy(faces_to_unit(levels)[0, 0]).to(device)


def postprocess_faces(pred: np.ndarray | torch.Tensor) -> np.ndarray:
    """Generator output ``(N, 3, 96, 96)`` float in [0, 1] -> ``(N, 96, 96, 3) uint8`` BGR.

    Scales by 255 and truncates toward zero like the official ``(pred * 255).astype(np.uint8)``
    (values are clipped to [0, 255] first so a float16 overshoot cannot wrap around).
    """
    if isinstance(pred, torch.Tensor):
        pred = pred.detach().float().cpu().numpy()
    if pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"generator output must be (N, 3, H, W), got {pred.shape}")
    scaled = np.clip(pred.astype(np.float32) * np.float32(PIXEL_MAX), 0.0, PIXEL_MAX)
    return np.ascontiguousarray(scaled.transpose(0, 2, 3, 1).astype(np.uint8))


def syncnet_face_input(faces: torch.Tensor) -> torch.Tensor:
    """Generator-style windows ``(B, 3, T, 96, 96)`` in [0, 1] -> SyncNet input ``(B, 3*T, 48, 96)``.

    Keeps the lower half of every face and stacks the T frames along channels, oldest first (the
    layout the expert was trained on: frame t occupies channels ``3t .. 3t+2``).
    """
    if faces.dim() != 5 or faces.size(1) != 3:
        raise ValueError(f"faces must be (B, 3, T, H, W), got {tuple(faces.shape)}")
    lower = faces[:, :, :, faces.size(3) // 2 :]
    return torch.cat([lower[:, :, t] for t in range(lower.size(2))], dim=1)
