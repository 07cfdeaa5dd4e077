"""uint8 uploads: frames and faces go to the networks as uint8 and are converted where the network runs.

The device-side conversions give exactly the numbers of the CPU pre-processing (checked here on the CPU
for every level); on CUDA the pixels go through pinned memory without blocking (the ``gpu`` tests).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.devices import upload
from restore.convert import faces_to_device, faces_to_tensor, pixels_to_tensor
from tests.test_restore_support import one_torch_thread
from wav2lip.face_input import face_input_tensor, pixels_to_face_inputs, prepare_face_inputs
from wav2lip.inference import forward_generator, prepare_mel_inputs
from wav2lip.models import Wav2Lip

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def every_level_crops(n: int, size: int) -> np.ndarray:
    """``(n, size, size, 3) uint8`` random pixels in which each of the 256 levels occurs in each channel."""
    crops = np.random.default_rng(5).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    first = crops[0].reshape(-1, 3)  # a view: the first 256 pixels of crop 0 become a grey ramp
    first[:256] = np.arange(256, dtype=np.uint8)[:, None]
    return crops


def test_restore_pixels_convert_to_exactly_the_cpu_numbers():
    faces = every_level_crops(3, 32)
    expected = faces_to_tensor(faces)
    converted = pixels_to_tensor(torch.from_numpy(faces))
    assert converted.dtype == torch.float32 and converted.shape == (3, 3, 32, 32)
    assert torch.equal(converted, expected)
    assert torch.equal(faces_to_device(faces, "cpu"), expected)  # the CPU keeps the float64 route


def test_wav2lip_pixels_convert_to_exactly_the_cpu_numbers():
    crops = every_level_crops(4, 96)
    expected = torch.from_numpy(prepare_face_inputs(crops))
    converted = pixels_to_face_inputs(torch.from_numpy(crops))
    assert converted.shape == (4, 6, 96, 96)
    assert torch.equal(converted, expected)
    assert torch.equal(face_input_tensor(crops, "cpu"), expected)
    with pytest.raises(ValueError, match="uint8"):
        pixels_to_face_inputs(torch.zeros(1, 96, 96, 3))


def test_upload_on_the_cpu_shares_the_array():
    pixels = np.zeros((2, 4, 4, 3), np.uint8)
    tensor = upload(pixels, "cpu")
    pixels[0, 0, 0, 0] = 7
    assert tensor.dtype == torch.uint8 and int(tensor[0, 0, 0, 0]) == 7


def test_generator_gives_the_same_output_from_crops_and_from_prepared_inputs():
    torch.manual_seed(3)
    model = Wav2Lip().eval()
    crops = every_level_crops(3, 96)
    mels = prepare_mel_inputs(np.random.default_rng(1).uniform(-4, 4, (3, 80, 16)).astype(np.float32))
    with one_torch_thread():
        from_crops = forward_generator(model, crops, mels, 2, "cpu")
        from_inputs = forward_generator(model, prepare_face_inputs(crops), mels, 2, "cpu")
    np.testing.assert_array_equal(from_crops, from_inputs)


@pytest.mark.gpu
@CUDA
def test_cuda_upload_is_pinned_non_blocking_and_exact():
    faces = every_level_crops(2, 64)
    on_gpu = faces_to_device(faces, "cuda")
    faces[:] = 0  # the staging copy was taken before upload returned: changing the array is safe
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float32
    assert torch.equal(on_gpu.cpu(), faces_to_tensor(every_level_crops(2, 64)))
    crops = every_level_crops(3, 96)
    assert torch.equal(face_input_tensor(crops, "cuda").cpu(), torch.from_numpy(prepare_face_inputs(crops)))


@pytest.mark.gpu
@CUDA
def test_cuda_upload_goes_through_pinned_memory(monkeypatch):
    pinned: list[bool] = []
    real_to = torch.Tensor.to

    def recording_to(self, *args, **kwargs):
        if self.device.type == "cpu" and kwargs.get("non_blocking"):
            pinned.append(self.is_pinned())
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    tensor = upload(np.zeros((2, 8, 8, 3), np.uint8), "cuda")
    assert pinned == [True] and tensor.device.type == "cuda" and tensor.dtype == torch.uint8
