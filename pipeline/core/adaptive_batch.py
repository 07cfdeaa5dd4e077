"""Batch loops that survive running out of GPU memory: halve the batch and retry, down to one item.

``torch.OutOfMemoryError`` (which ``torch.cuda.OutOfMemoryError`` is) and the allocation failures cuBLAS
and cuDNN report as a plain ``RuntimeError`` ("CUDA out of memory", "CUBLAS_STATUS_ALLOC_FAILED", ...)
trigger a retry (:func:`is_out_of_memory`); any other failure propagates unchanged. The reduced size is
kept for the rest of the run, so a model that does not fit at the configured batch size pays for the
failed attempt once, not on every batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch

from pipeline.core.errors import OutOfMemory

T = TypeVar("T")

# Substrings of the RuntimeError messages CUDA libraries raise when an allocation fails.
OUT_OF_MEMORY_MESSAGES = (
    "out of memory",  # the caching allocator, cudaMalloc, cuDNN's workspace
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for ``torch.OutOfMemoryError`` and for a ``RuntimeError`` whose message names a GPU
    allocation failure (see ``OUT_OF_MEMORY_MESSAGES``)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in OUT_OF_MEMORY_MESSAGES)


class AdaptiveBatch:
    """A batch size for ``stage`` (named in warnings and errors) that halves on out-of-memory errors."""

    def __init__(self, size: int, stage: str) -> None:
        if size < 1:
            raise ValueError(f"{stage} batch size must be at least 1, got {size}")
        self.size = int(size)
        self.stage = stage

    def map(self, count: int, run: Callable[[int, int], T]) -> list[T]:
        """``[run(start, stop) for each batch]`` over items ``0 .. count-1``, in order.

        ``run`` processes items ``start .. stop-1``. When it runs out of GPU memory
        (:func:`is_out_of_memory`) the cache is emptied, :attr:`size` becomes half of the smaller of
        itself and the failed batch (a short last batch is not a reason to grow back), with a warning,
        and the same items are tried again; :class:`OutOfMemory` is raised when one item fails.
        """
        results: list[T] = []
        start = 0
        while start < count:
            stop = min(count, start + self.size)
            try:
                results.append(run(start, stop))
                start = stop
                continue
            except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError
                if not is_out_of_memory(exc):
                    raise
                if stop - start <= 1:
                    raise OutOfMemory(
                        f"{self.stage} ran out of GPU memory even with a batch of 1 ({_first_line(exc)}); "
                        "free GPU memory (close other GPU programs), use a smaller video, or run with "
                        "--device cpu"
                    ) from exc
            self._shrink(stop - start)  # outside the handler, so the failed attempt's tensors are freed
        return results

    def _shrink(self, attempted: int) -> None:
        release_cached_memory()
        self.size = max(1, min(self.size, attempted) // 2)
        warnings.warn(
            f"{self.stage}: out of GPU memory with a batch of {attempted}; continuing with {self.size}",
            stacklevel=3,
        )


def release_cached_memory() -> None:
    """Return the CUDA caching allocator's free blocks to the driver (nothing without CUDA)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
