"""The parsing blend mask computed where the parser ran (the GPU), handed back as one uint8 mask per face.

:func:`restore.blend.parsing_face_mask` is the official recipe on the CPU in float64 (two 101x101
Gaussian blurs of a 512x512 map: about 60 ms per face on a CPU core). On a GPU the restored faces, their
parsing and this mask stay on the device and only the ``uint8`` mask comes down, instead of the class
map coming down, being blurred on the CPU while the GPU waits. Same steps, same kernel (OpenCV's
coefficients, OpenCV's default reflect-101 border), in float32; the mask is then rounded to 256 levels,
so it is within half a level (plus float32 rounding) of the float64 one, and a blend with it within one
grey level of the official blend.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from restore.blend import PARSING_BLUR_KSIZE, PARSING_BLUR_SIGMA, PARSING_BORDER, PARSING_CLASS_WEIGHTS

MASK_LEVELS = 255  # a mask of 1.0 is stored as 255


def parsing_masks_on_device(labels: torch.Tensor) -> torch.Tensor:
    """``(N, S, S)`` integer class maps (0..18) on any device -> ``(N, S, S) uint8`` masks there, ``255`` for
    a weight of 1: face classes, blurred twice, zero on a 10-pixel border (as ``parsing_face_mask``)."""
    weights = _class_weights(labels.device)
    masks = weights[labels.long()].unsqueeze(1)  # (N, 1, S, S) float32 in 0..255
    kernel = _gaussian_kernel(labels.device)
    masks = _blur(_blur(masks, kernel), kernel)[:, 0]
    border = PARSING_BORDER
    masks[:, :border, :] = 0
    masks[:, -border:, :] = 0
    masks[:, :, :border] = 0
    masks[:, :, -border:] = 0
    return torch.round(masks.clamp_(0, 255)).to(torch.uint8)  # weights are 0 / 255: masks are 0..255


def mask_from_levels(mask: np.ndarray) -> np.ndarray:
    """A ``uint8`` mask of :func:`parsing_masks_on_device` as the float64 ``[0, 1]`` mask the paste takes."""
    return mask / float(MASK_LEVELS)


def _blur(masks: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, 1, H, W)`` with reflect-101 borders (OpenCV's default)."""
    reach = kernel.numel() // 2
    padded = F.pad(masks, (reach, reach, reach, reach), mode="reflect")  # torch's reflect is reflect-101
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(rows, kernel.view(1, 1, -1, 1))


@functools.cache
def _gaussian_kernel(device: torch.device) -> torch.Tensor:
    coefficients = cv2.getGaussianKernel(PARSING_BLUR_KSIZE, PARSING_BLUR_SIGMA, cv2.CV_64F).ravel()
    return torch.from_numpy(coefficients).float().to(device)


@functools.cache
def _class_weights(device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(PARSING_CLASS_WEIGHTS)).float().to(device)
