"""Which input frame each output frame shows (pure functions, no I/O).

The output lasts as long as the speech. A video shorter than the speech is extended by playing it
forward, then backward, then forward again ("ping-pong", no jump cut); a longer one is cut.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


def output_frame_count(speech_duration_s: float, fps: float) -> int:
    """Frames needed to cover the speech at ``fps``: the nearest whole frame, at least one."""
    return max(1, int(round(speech_duration_s * fps)))


def source_indices(n_input: int, n_output: int) -> np.ndarray:
    """``(n_output,) int64``: the input frame shown at each output frame (ping-pong when too short)."""
    if n_input < 1:
        raise ValueError("the video has no frames")
    k = np.arange(n_output, dtype=np.int64)
    if n_input == 1:
        return np.zeros(n_output, dtype=np.int64)
    period = 2 * (n_input - 1)
    phase = k % period
    return np.where(phase < n_input, phase, period - phase)


@dataclass(frozen=True)
class Run:
    """Consecutive output frames showing input frames ``first`` .. ``last`` inclusive, in that order."""

    first: int
    last: int

    @property
    def forward(self) -> bool:
        return self.last >= self.first

    def __len__(self) -> int:
        return abs(self.last - self.first) + 1


def runs(indices: np.ndarray) -> Iterator[Run]:
    """Split a source-index sequence into maximal forward (+1) or backward (-1) runs."""
    start = 0
    n = len(indices)
    while start < n:
        end = start
        step = int(indices[start + 1] - indices[start]) if start + 1 < n else 1
        if step not in (1, -1):
            step = 1
        while end + 1 < n and indices[end + 1] - indices[end] == step:
            end += 1
        yield Run(int(indices[start]), int(indices[end]))
        start = end + 1


def backward_chunks(run: Run, chunk_frames: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` input ranges, each decoded forward then reversed, that play ``run`` backward."""
    stop = run.first + 1
    while stop > run.last:
        start = max(run.last, stop - chunk_frames)
        yield start, stop
        stop = start
