"""Non-finite network outputs (NaN, inf): which items hold them, and one warning per stage.

A float16 overflow turns a face into NaN, which ``clamp`` passes and a ``uint8`` cast turns into black.
The stages find such items, keep the input pixels for them and say so once, with the frame numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch


def nonfinite_items(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(N, ...)`` values on any device -> ``(N,) bool`` numpy array, True where an item holds any NaN
    or infinity."""
    if isinstance(values, np.ndarray):
        return ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    return (~torch.isfinite(values.reshape(len(values), -1)).all(dim=1)).cpu().numpy()


class NonFiniteFrames:
    """The frames whose ``stage`` output was non-finite and replaced by its input.

    :meth:`report` warns the first time (naming those frames) and collects every frame number in
    :attr:`frames`; later reports add to the list without repeating the warning.
    """

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.frames: list[int] = []

    def report(self, frame_numbers: Sequence[int] | np.ndarray) -> None:
        numbers = [int(n) for n in frame_numbers]
        if not numbers:
            return
        if not self.frames:
            warnings.warn(
                f"{self.stage}: the network returned NaN or infinite values for frame(s) "
                f"{_listing(numbers)}; they keep their input pixels there (usually a float16 overflow: "
                "float32 avoids it). Later frames with the same problem are not warned about again.",
                stacklevel=3,
            )
        self.frames.extend(numbers)


def _listing(numbers: list[int], shown: int = 10) -> str:
    head = ", ".join(str(n) for n in numbers[:shown])
    return head if len(numbers) <= shown else f"{head} and {len(numbers) - shown} more"
