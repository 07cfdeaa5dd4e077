"""The input video as a stream of frames in output order, in bounded batches.

Forward runs are one sequential decode; backward runs (the "pong" of a ping-pong extension) decode
bounded chunks forward and reverse each in memory, so no more than one chunk is ever held. A clip short
enough to fit in ``LOOP_CACHE_BYTES`` that has to loop is decoded once and played from memory (a 2 s
clip under an hour of speech would otherwise start ffmpeg thousands of times). A still image (one
frame) is decoded once and repeated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pipeline import timeline
from pipeline.core.media import FrameSize, VideoReader

BACKWARD_CHUNK_BYTES = 128 << 20  # upper bound on frames held to play a stretch backward
LOOP_CACHE_BYTES = 256 << 20  # a looping clip up to this size is decoded once and kept in memory
SEEK_MARGIN_FRAMES = 4  # how far an input seek may land from the exact frame (sources not at 25 fps)
SEEK_CHECK_FRAMES = 3  # frames compared to accept a seek's alignment


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
    n_input = int(indices.max()) + 1 if len(indices) else 0
    loops = len(indices) > n_input
    if loops and n_input * size.frame_bytes <= LOOP_CACHE_BYTES:
        clip = decode_frames(path, size, fps, 0, n_input)
        for start in range(0, len(indices), batch_size):
            yield clip[indices[start : start + batch_size]]
        return
    chunk_frames = max(batch_size, BACKWARD_CHUNK_BYTES // size.frame_bytes)
    pieces = (_run_frames(path, size, fps, run, batch_size, chunk_frames) for run in timeline.runs(indices))
    yield from rebatch((batch for piece in pieces for batch in piece), batch_size)


def decode_frames(
    path: Path, size: FrameSize, fps: float, start: int, count: int, seek_frame: int = 0
) -> np.ndarray:
    """Frames ``start`` .. ``start+count-1`` as one ``(n, H, W, 3) uint8`` array (n <= count); with
    ``seek_frame`` (and ``start`` 0), about ``count`` frames from an input seek near that frame."""
    out = np.empty((count, size.height, size.width, 3), np.uint8)
    filled = 0
    with VideoReader(path, size, fps, max(1, min(count, 16)), start, count, seek_frame) as reader:
        for batch in reader:
            out[filled : filled + len(batch)] = batch
            filled += len(batch)
    return out[:filled]


def _run_frames(
    path: Path, size: FrameSize, fps: float, run: timeline.Run, batch_size: int, chunk_frames: int
) -> Iterator[np.ndarray]:
    if run.forward:
        with VideoReader(path, size, fps, batch_size, run.first, len(run)) as reader:
            yield from reader
        return
    after: np.ndarray | None = None  # the first frames of the chunk played just before
    for start, stop in timeline.backward_chunks(run, chunk_frames):
        chunk = None if after is None else _seek_chunk(path, size, fps, start, stop, after)
        if chunk is None:  # exact, but decodes everything before ``start``
            chunk = decode_frames(path, size, fps, start, stop - start)
        if len(chunk):
            after = chunk[:SEEK_CHECK_FRAMES].copy()
            yield chunk[::-1]


def _seek_chunk(
    path: Path, size: FrameSize, fps: float, start: int, stop: int, after: np.ndarray
) -> np.ndarray | None:
    """Frames ``start .. stop-1`` decoded from an input seek instead of from the first frame.

    An input seek can land a frame or two off the exact frame numbering (sources not at ``fps``), so
    the decode runs on past ``stop`` and is accepted only where its frames from ``stop`` on equal
    ``after`` (frames ``stop ..`` already decoded exactly); otherwise None and the caller decodes
    exactly. This keeps playing a long clip backward linear in its length, not quadratic.
    """
    seek = max(0, start - SEEK_MARGIN_FRAMES)
    count = stop + len(after) + SEEK_MARGIN_FRAMES - seek
    decoded = decode_frames(path, size, fps, 0, count, seek_frame=seek)
    expected = stop - seek
    for shift in sorted(range(-SEEK_MARGIN_FRAMES, SEEK_MARGIN_FRAMES + 1), key=abs):
        at = expected + shift
        if at - (stop - start) < 0 or at + len(after) > len(decoded):
            continue
        if np.array_equal(decoded[at : at + len(after)], after):
            return decoded[at - (stop - start) : at]
    return None


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
