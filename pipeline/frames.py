"""The input video as a stream of frames in output order, in bounded batches.

Forward runs are one sequential decode; backward runs (the "pong" of a ping-pong extension) decode
bounded chunks forward and reverse each in memory, so no more than one chunk is ever held. A still
image (one frame) is decoded once and repeated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pipeline import timeline
from pipeline.media import FrameSize, VideoReader

BACKWARD_CHUNK_BYTES = 256 << 20  # upper bound on frames held to play a stretch backward


def iter_input_frames(
    path: Path, size: FrameSize, fps: float, batch_size: int, max_frames: int | None
) -> Iterator[np.ndarray]:
    """The first ``max_frames`` input frames in order, ``(n, H, W, 3) uint8`` BGR batches."""
    with VideoReader(path, size, fps, batch_size, 0, max_frames) as reader:
        yield from reader


def iter_output_frames(
    path: Path,
    size: FrameSize,
    fps: float,
    indices: np.ndarray,
    batch_size: int,
    still: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """Frames ``indices[0], indices[1], ...`` of the input, re-batched to ``batch_size``."""
    if still is not None:
        yield from _repeat_still(still, len(indices), batch_size)
        return
    chunk_frames = max(batch_size, BACKWARD_CHUNK_BYTES // size.frame_bytes)
    pieces = (_run_frames(path, size, fps, run, batch_size, chunk_frames) for run in timeline.runs(indices))
    yield from rebatch((batch for piece in pieces for batch in piece), batch_size)


def _run_frames(
    path: Path, size: FrameSize, fps: float, run: timeline.Run, batch_size: int, chunk_frames: int
) -> Iterator[np.ndarray]:
    if run.forward:
        with VideoReader(path, size, fps, batch_size, run.first, len(run)) as reader:
            yield from reader
        return
    for start, stop in timeline.backward_chunks(run, chunk_frames):
        with VideoReader(path, size, fps, chunk_frames, start, stop - start) as reader:
            chunk = np.concatenate(list(reader)) if stop > start else None
        if chunk is not None:
            yield chunk[::-1]


def _repeat_still(frame: np.ndarray, count: int, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, count, batch_size):
        yield np.repeat(frame[None], min(batch_size, count - start), axis=0)


def rebatch(batches: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Regroup a stream of frame arrays into arrays of exactly ``batch_size`` (the last may be shorter)."""
    pending: list[np.ndarray] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += len(batch)
        while held >= batch_size:
            joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield joined[:batch_size]
            rest = joined[batch_size:]
            pending, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield np.concatenate(pending) if len(pending) > 1 else pending[0]
