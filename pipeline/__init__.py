"""Orchestration, media I/O, face tracking, weights and CLI logic.

``pipeline.run(config)`` renders one lip-synced video; it is the Python API behind
``run_pipeline.py``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# OpenMP threads that spin while waiting starve the ffmpeg encoder and decoder running beside the
# models (measured on 2 cores: lip-sync of a 10 s 720p clip 18 s spinning, 10 s passive). It only takes
# effect if set before torch is first imported; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig


def run(config: "PipelineConfig", **options: Any) -> Any:
    """Render the video described by ``config``; returns a :class:`pipeline.render.RunSummary`.

    ``options`` go to :func:`pipeline.render.run_pipeline` (``models``: a
    :class:`pipeline.model_cache.ModelCache` kept between renders; ``progress``: a callback)."""
    from pipeline.render import run_pipeline

    _return_freed_frames_to_the_system()
    return run_pipeline(config, **options)


# glibc serves allocations above MMAP_THRESHOLD_BYTES with mmap, so a freed batch of frames goes back to
# the system at once instead of staying in a thread's heap (its default threshold grows to 32 MiB, after
# which frame batches pile up in the heaps: measured 1.56 GB peak for a 720p render, 1.35 GB with 1 MiB).
# Below it the heap serves the networks' activations, and keeps up to TRIM_THRESHOLD_BYTES of freed heap
# instead of returning it: with 1 MiB and no trim margin every forward pass mapped its activations
# afresh (1.5 million page faults and 4.8 s of kernel time in a 10 s 720p render on 2 cores; 0.85
# million and 2.8 s with these values, for 70 MB more).
MMAP_THRESHOLD_BYTES = 8 << 20
TRIM_THRESHOLD_BYTES = 64 << 20
_M_MMAP_THRESHOLD = -3  # mallopt parameter numbers in glibc's malloc.h
_M_TRIM_THRESHOLD = -1


def _return_freed_frames_to_the_system() -> None:
    import ctypes
    import sys

    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    except (OSError, AttributeError):  # not glibc (e.g. musl): keep the allocator's defaults
        pass
