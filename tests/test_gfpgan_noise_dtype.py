"""GFPGAN under bf16 autocast: the noise injection is cast to the compute type, so every StyleConv
output stays bf16 (not promoted to float32 by the float32 noise maps, strengths and biases), the result
stays within a grey level of fp32, and going back to fp32 gives the checkpoint's exact output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.devices import cpu_has_native_bf16
from restore.restorers import FaceRestorer, load_restorer
from tests.test_restore_support import TINY_FACE, layout_state_dict, one_torch_thread, tiny_gfpgan
from tests.test_restore_support import synthetic_image as smooth_image

GREY_LEVEL_MEAN = 1.0  # the bound: bf16 output within one grey level (mean) of fp32


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def style_conv_output_dtypes(restorer: FaceRestorer, faces: np.ndarray) -> tuple[np.ndarray, set]:
    decoder = restorer.model.stylegan_decoder
    seen: list[torch.dtype] = []
    hooks = [
        conv.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
        for conv in [decoder.style_conv1, *decoder.style_convs]
    ]
    try:
        restored = restorer.restore_aligned(faces)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == 1 + len(decoder.style_convs)
    return restored, set(seen)


def _mean_levels(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def test_style_convs_run_in_bf16_and_fp32_comes_back_exactly():
    restorer = tiny_gfpgan(seed=7)
    faces = np.stack([smooth_image(TINY_FACE, TINY_FACE, seed=s, sigma=2.0) for s in range(2)])
    fp32, fp32_types = style_conv_output_dtypes(restorer, faces)
    assert fp32_types == {torch.float32}
    restorer.precision = "bf16"
    assert restorer.model.stylegan_decoder.noises.noise0.dtype == torch.bfloat16
    bf16, bf16_types = style_conv_output_dtypes(restorer, faces)
    assert bf16_types == {torch.bfloat16}
    assert 0 < _mean_levels(bf16, fp32) <= GREY_LEVEL_MEAN
    restorer.precision = "fp32"
    again, _ = style_conv_output_dtypes(restorer, faces)
    np.testing.assert_array_equal(again, fp32)  # the checkpoint's float32 noise, not a bf16 round trip


def test_only_the_gfpgan_kind_casts_the_decoder_noise():
    restorer = tiny_gfpgan(seed=1)
    other = FaceRestorer(restorer.model, "restoreformer", restorer.device, "bf16", TINY_FACE)
    assert other.model.stylegan_decoder.noises.noise0.dtype == torch.float32  # only GFPGAN casts


@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_native_bf16(), reason="no native bf16: emulated bf16 GFPGAN is minutes")
def test_gfpgan_512_loaded_for_bf16_is_within_a_grey_level_of_fp32(tmp_path):
    """The official 512-pixel layout, one face; about 20 s on 2 busy CPU cores with native bf16."""
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": layout_state_dict("gfpgan_v1_clean_512", seed=1)}, path)
    face = smooth_image(512, 512, seed=3)[None]
    fp32 = load_restorer(path, "cpu", "fp32").restore_aligned(face)
    bf16_restorer = load_restorer(path, "cpu", "bf16")
    bf16, types = style_conv_output_dtypes(bf16_restorer, face)
    assert types == {torch.bfloat16}
    assert _mean_levels(bf16, fp32) <= GREY_LEVEL_MEAN


def test_the_cast_reaches_the_buffers_after_the_model_has_moved():
    """``Module.to()`` replaces buffers by new tensors: the cast must find the model's current ones."""
    restorer = tiny_gfpgan(seed=2)
    restorer.model.to(torch.float64).to(torch.float32)  # new buffer objects, as a move to a GPU makes
    restorer.precision = "bf16"
    decoder = restorer.model.stylegan_decoder
    assert {buffer.dtype for buffer in decoder.noises.buffers()} == {torch.bfloat16}
    assert decoder.style_convs[0].bias.dtype == torch.bfloat16
    assert decoder.style_convs[0].modulated_conv.weight.dtype == torch.float32  # autocast casts per call
