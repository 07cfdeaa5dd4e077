"""The out-of-memory back-off: both kinds of GPU allocation failure, and the size it shrinks from."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.adaptive_batch import AdaptiveBatch, is_out_of_memory
from pipeline.core.errors import OutOfMemory

CUBLAS_FAILURE = "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError(CUBLAS_FAILURE), True),
        (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True),
        (RuntimeError("CUDA driver error: out of memory"), True),
        (RuntimeError("Expected all tensors to be on the same device"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_both_kinds_of_allocation_failure_count_as_out_of_memory(error, expected):
    assert is_out_of_memory(error) is expected


def items_fitting(limit: int, error: str = CUBLAS_FAILURE):
    """A batch function that fails like cuBLAS for more than ``limit`` items; records attempted sizes."""
    sizes: list[int] = []

    def run(start: int, stop: int) -> list[int]:
        sizes.append(stop - start)
        if stop - start > limit:
            raise RuntimeError(error)
        return list(range(start, stop))

    return run, sizes


def test_a_cublas_allocation_failure_halves_the_batch_and_retries():
    batches = AdaptiveBatch(8, "test stage")
    run, sizes = items_fitting(3)
    with pytest.warns(
        UserWarning, match="test stage: out of GPU memory with a batch of 8; continuing with 4"
    ):
        parts = batches.map(10, run)
    assert [i for part in parts for i in part] == list(range(10))
    assert sizes == [8, 4, 2, 2, 2, 2, 2] and batches.size == 2


def test_other_runtime_errors_propagate_unchanged():
    run, sizes = items_fitting(0, error="Expected all tensors to be on the same device")
    with pytest.raises(RuntimeError, match="same device"):
        AdaptiveBatch(4, "test stage").map(4, run)
    assert sizes == [4]


def test_the_size_shrinks_from_the_smaller_of_the_current_size_and_the_failed_batch():
    """Another user of the same batch size (a second thread) may have shrunk it while this attempt ran:
    halving the attempted 8 would grow it back to 4."""
    batches = AdaptiveBatch(8, "test stage")

    def run(start: int, stop: int) -> int:
        if stop - start == 8:
            batches.size = 2  # shrunk elsewhere meanwhile
            raise torch.OutOfMemoryError("CUDA out of memory")
        return stop - start

    with pytest.warns(UserWarning, match="continuing with 1"):
        assert batches.map(8, run) == [1] * 8


def test_a_single_item_that_does_not_fit_is_an_error_naming_the_stage():
    run, _ = items_fitting(0)
    with pytest.warns(UserWarning), pytest.raises(OutOfMemory, match="test stage ran out of GPU memory"):
        AdaptiveBatch(2, "test stage").map(2, run)
