"""Pure conversions between aligned face crops and the tensors the restoration networks take.

They reproduce, value for value, the pre- and post-processing of the official tools
(GFPGAN's ``GFPGANer.enhance`` and CodeFormer's ``inference_codeformer.py``, both built on basicsr's
``img2tensor`` / ``tensor2img``):

- in: BGR -> RGB, ``uint8 / 255.`` computed in float64 then stored as float32, then
  ``(x - 0.5) / 0.5`` in float32, giving ``[-1, 1]``;
- out: clamp to ``[-1, 1]``, ``(x + 1) / 2``, ``* 255.0``, round half to even, ``uint8``, RGB -> BGR.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from pipeline.core.devices import upload
from pipeline.core.finite import nonfinite_items

RESTORE_FACE_SIZE = 512  # pixels: side of the FFHQ-aligned crops GFPGAN and CodeFormer restore
NORM_MEAN = 0.5  # per channel, applied after scaling to [0, 1]
NORM_STD = 0.5


def check_faces(faces: np.ndarray, size: int | None = RESTORE_FACE_SIZE) -> None:
    """Raise ``ValueError`` unless ``faces`` is ``(N, size, size, 3) uint8`` (any square size if ``None``)."""
    if not isinstance(faces, np.ndarray) or faces.dtype != np.uint8:
        raise ValueError(f"faces must be a uint8 numpy array, got {getattr(faces, 'dtype', type(faces))}")
    side = faces.shape[1] if size is None and faces.ndim == 4 else size
    if faces.ndim != 4 or faces.shape[1:] != (side, side, 3):
        raise ValueError(f"faces must have shape (N, {side or 'S'}, {side or 'S'}, 3), got {faces.shape}")


def faces_to_tensor(faces: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3) uint8`` BGR crops -> ``(N, 3, H, W) float32`` RGB in ``[-1, 1]`` (CPU)."""
    unit = (faces[..., ::-1].astype(np.float64) / 255.0).astype(np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(unit.transpose(0, 3, 1, 2)))
    return (tensor - NORM_MEAN) / NORM_STD


def faces_to_device(faces: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """:func:`faces_to_tensor` of ``faces`` on ``device``. On CUDA the uint8 pixels go up (pinned,
    non-blocking) and are converted there by :func:`pixels_to_tensor`, to the same values; on the CPU
    :func:`faces_to_tensor` itself."""
    device = torch.device(device)
    if device.type == "cuda":
        return pixels_to_tensor(upload(faces, device))
    return faces_to_tensor(faces).to(device)


def pixels_to_tensor(pixels: torch.Tensor) -> torch.Tensor:
    """``(N, H, W, 3) uint8`` BGR on any device -> ``(N, 3, H, W) float32`` RGB in ``[-1, 1]`` there.

    Exactly :func:`faces_to_tensor`'s numbers: each of the 256 levels is looked up in a table made by
    :func:`faces_to_tensor` itself (device arithmetic such as CUDA's division by a multiplied reciprocal
    could differ in the last bit).
    """
    return _restore_levels(pixels.device)[pixels.flip(-1).int()].permute(0, 3, 1, 2)


@functools.cache
def _restore_levels(device: torch.device) -> torch.Tensor:
    grey_ramp = np.repeat(np.arange(256, dtype=np.uint8).reshape(1, 1, 256, 1), 3, axis=3)
    return faces_to_tensor(grey_ramp)[0, 0, 0].to(device)


def tensor_to_faces(output: torch.Tensor) -> np.ndarray:
    """``(N, 3, H, W)`` RGB network output in about ``[-1, 1]`` -> ``(N, H, W, 3) uint8`` BGR.

    Works on any device; the result is a CPU numpy array.
    """
    return np.ascontiguousarray(tensor_to_pixels(output).cpu().numpy())


def tensor_to_pixels(output: torch.Tensor) -> torch.Tensor:
    """:func:`tensor_to_faces` without leaving the device: ``(N, H, W, 3) uint8`` BGR where ``output`` is."""
    unit = (output.float().clamp(-1.0, 1.0) + 1.0) / 2.0
    levels = torch.round(unit * 255.0).to(torch.uint8)
    return levels.permute(0, 2, 3, 1).flip(-1)


def output_to_pixels(output: torch.Tensor, inputs: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """:func:`tensor_to_pixels` of ``output``, where an item holding NaN or infinity (which ``clamp``
    passes and the ``uint8`` cast makes black) is replaced by its input crop ``inputs[i]``.

    Returns ``(pixels (N, H, W, 3) uint8 BGR on output's device, replaced (N,) bool numpy)``.
    """
    pixels = tensor_to_pixels(output)
    replaced = nonfinite_items(output)
    if replaced.any():
        pixels[torch.from_numpy(replaced).to(pixels.device)] = torch.from_numpy(inputs[replaced]).to(
            pixels.device
        )
    return pixels, replaced
