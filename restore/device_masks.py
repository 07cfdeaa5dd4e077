"""The parsing blend mask computed where the parser ran (the GPU), handed back as one uint8 mask per face.

:func:`restore.blend.parsing_face_mask` is the official recipe on the CPU in float64 (two 101x101
Gaussian blurs of a 512x512 map: about 60 ms per face on a CPU core). On a GPU the restored faces, their
parsing and this mask stay on the device and only the ``uint8`` mask comes down, instead of the class
map coming down, being blurred on the CPU while the GPU waits. Same steps, same kernel (OpenCV's
coefficients, OpenCV's default reflect-101 border, as one matrix per side), in float32; the mask is then
rounded to 256 levels, so it is within half a level (plus float32 rounding) of the float64 one, and a
blend with it within one grey level of the official blend.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch

from restore.blend import PARSING_BLUR_KSIZE, PARSING_BLUR_SIGMA, PARSING_BORDER, PARSING_CLASS_WEIGHTS

MASK_LEVELS = 255  # a mask of 1.0 is stored as 255


def parsing_masks_on_device(labels: torch.Tensor) -> torch.Tensor:
    """``(N, S, S)`` integer class maps (0..18) on any device -> ``(N, S, S) uint8`` masks there, ``255`` for
    a weight of 1: face classes, blurred twice, zero on a 10-pixel border (as ``parsing_face_mask``)."""
    weights = _class_weights(labels.device)
    masks = weights[labels.long()]  # (N, S, S) float32 in 0..255
    blur = _blur_matrix(masks.shape[-1], labels.device)
    for _ in range(2):
        masks = blur @ masks @ blur.T
    border = PARSING_BORDER
    masks[:, :border, :] = 0
    masks[:, -border:, :] = 0
    masks[:, :, :border] = 0
    masks[:, :, -border:] = 0
    return torch.round(masks.clamp_(0, 255)).to(torch.uint8)  # weights are 0 / 255: masks are 0..255


def mask_from_levels(mask: np.ndarray) -> np.ndarray:
    """A ``uint8`` mask of :func:`parsing_masks_on_device` as the float64 ``[0, 1]`` mask the paste takes."""
    return mask / float(MASK_LEVELS)


@functools.cache
def _blur_matrix(size: int, device: torch.device) -> torch.Tensor:
    """``(size, size)`` float32 ``B`` with ``B @ M @ B.T`` = OpenCV's Gaussian blur of ``M`` (the
    parsing kernel, reflect-101 borders folded in). A matrix product rather than a convolution: CUDA runs
    float32 matmuls in full precision by default, where cuDNN would use TF32 for the convolution."""
    coefficients = cv2.getGaussianKernel(PARSING_BLUR_KSIZE, PARSING_BLUR_SIGMA, cv2.CV_64F).ravel()
    reach = len(coefficients) // 2
    if size <= reach:
        raise ValueError(f"parsing masks need maps larger than {reach} pixels, got {size}")
    rows = np.repeat(np.arange(size), len(coefficients))
    columns = np.abs(rows + np.tile(np.arange(-reach, reach + 1), size))  # reflect-101 below 0 ...
    columns = np.where(columns >= size, 2 * (size - 1) - columns, columns)  # ... and above size - 1
    matrix = np.zeros((size, size))
    np.add.at(matrix, (rows, columns), np.tile(coefficients, size))
    return torch.from_numpy(matrix).float().to(device)


@functools.cache
def _class_weights(device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(PARSING_CLASS_WEIGHTS)).float().to(device)
