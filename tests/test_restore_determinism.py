"""GFPGAN restoration does not depend on the random state, on repetition or on the batch it is in.

A narrow 64-pixel GFPGANv1Clean (the class spandrel loads v1.3/v1.4 into, same forward path) keeps these
tests fast; the 512 official-layout checkpoint is compared with the official tool in test_restore_models.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restore.convert import faces_to_tensor, tensor_to_faces
from tests.test_restore_support import TINY_FACE, one_torch_thread, synthetic_image, tiny_gfpgan


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


# CPU convolution kernels may accumulate in another order for another batch size (GFPGAN's modulated
# convolutions are grouped per sample): at most one grey level on a small share of pixels.
BATCH_TOLERANCE_LEVELS = 1
BATCH_TOLERANCE_SHARE = 1e-3


@pytest.fixture(scope="module")
def restorer():
    return tiny_gfpgan(seed=7)


@pytest.fixture(scope="module")
def faces():
    return np.stack([synthetic_image(TINY_FACE, TINY_FACE, seed=s, sigma=2.0) for s in range(4)])


def test_same_face_twice_is_identical_whatever_the_random_state(restorer, faces):
    torch.manual_seed(1)
    first = restorer.restore_aligned(faces[:1])
    torch.manual_seed(2)
    torch.rand(1000)
    second = restorer.restore_aligned(faces[:1])
    np.testing.assert_array_equal(first, second)


def test_batch_of_four_equals_four_batches_of_one(restorer, faces):
    together = restorer.restore_aligned(faces)
    singles = np.concatenate([restorer.restore_aligned(faces[i : i + 1]) for i in range(4)])
    assert together.shape == (4, TINY_FACE, TINY_FACE, 3)
    diff = np.abs(together.astype(int) - singles)
    assert diff.max() <= BATCH_TOLERANCE_LEVELS
    assert np.mean(diff > 0) <= BATCH_TOLERANCE_SHARE
    assert not np.array_equal(together[0], together[1])  # different faces give different results


def test_random_noise_would_flicker(restorer, faces):
    """Control: the official randomize_noise=True changes the output, so the tests above can fail."""
    x = faces_to_tensor(faces[:1])
    with torch.no_grad():
        a = tensor_to_faces(restorer.model(x, return_rgb=False, randomize_noise=True)[0])
        b = tensor_to_faces(restorer.model(x, return_rgb=False, randomize_noise=True)[0])
        fixed = tensor_to_faces(restorer.model(x, return_rgb=False, randomize_noise=False)[0])
    assert np.abs(a.astype(int) - b).max() > 2
    np.testing.assert_array_equal(fixed, restorer.restore_aligned(faces[:1]))


def test_gfpgan_ignores_fidelity(restorer, faces):
    np.testing.assert_array_equal(
        restorer.restore_aligned(faces[:1], fidelity=0.0), restorer.restore_aligned(faces[:1], fidelity=1.0)
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_float16_is_deterministic_and_close_to_cpu(faces):
    cpu = tiny_gfpgan(seed=7)
    gpu = tiny_gfpgan(seed=7)
    gpu.model.to("cuda")
    gpu.device, gpu.precision = torch.device("cuda"), "bf16"
    first = gpu.restore_aligned(faces)
    torch.manual_seed(3)
    np.testing.assert_array_equal(gpu.restore_aligned(faces), first)
    diff = np.abs(first.astype(int) - cpu.restore_aligned(faces))
    assert np.mean(diff) < 2.0 and np.percentile(diff, 99) <= 8
