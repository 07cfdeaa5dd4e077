"""``precision``: how auto is resolved per network and device, and bf16 staying within a grey level of fp32.

bf16 autocast runs on any CPU in torch (emulated, slower, where the CPU has no native bf16), so the
closeness tests run everywhere on small seeded networks; the seeded-model and conformance tests elsewhere
keep running fp32 (the library default).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pipeline.core.devices as devices
from pipeline.core.devices import precision_autocast, resolve_precision
from pipeline.core.errors import ConfigError
from pipeline.faces.config import DetectConfig
from pipeline.faces.detector import FaceDetector, downscale_frames, load_detector
from restore.restorers import load_restorer
from restore.upsample import load_bg_upsampler
from tests.test_faces import calibrated_retinaface, save_official_layout, synthetic_image
from tests.test_restore_support import TINY_FACE, layout_state_dict, one_torch_thread, tiny_gfpgan
from tests.test_restore_support import synthetic_image as smooth_image
from tests.test_restore_upsample import realesrgan_state_dict
from tests.test_wav2lip_models import fan_in_state_dict
from wav2lip.face_input import postprocess_faces, prepare_face_inputs
from wav2lip.inference import forward_generator, prepare_mel_inputs
from wav2lip.models import Wav2Lip

GREY_LEVEL_MEAN = 1.0  # the bound: bf16 output within one grey level (mean) of fp32


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def _mean_levels(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


# ---------------------------------------------------------------- resolving


def test_cpu_bf16_is_detected_from_the_cpuinfo_flags(tmp_path):
    with_amx = tmp_path / "amx"
    with_amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_bf16 amx_tile\n")
    plain = tmp_path / "plain"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    assert devices.cpu_has_native_bf16(with_amx) is torch.backends.mkldnn.is_available()
    assert devices.cpu_has_native_bf16(plain) is False
    assert devices.cpu_has_native_bf16(tmp_path / "absent") is False


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_the_cpu_is_bf16_only_where_native(monkeypatch, native):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("auto", "cpu", supports_bfloat16=False) == "fp32"


def test_auto_on_cuda_prefers_bf16_then_fp16_where_the_architecture_allows(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("auto", "cuda", supports_bfloat16=False) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("auto", "cuda", supports_half=False) == "fp32"


def test_fp16_where_the_architecture_does_not_support_it_falls_back_with_a_warning():
    with pytest.warns(UserWarning, match="runs in bf16"):
        assert resolve_precision("fp16", "cpu", supports_half=False) == "bf16"
    with pytest.warns(UserWarning, match="runs in fp32"):
        assert resolve_precision("bf16", "cpu", supports_bfloat16=False) == "fp32"
    assert resolve_precision("fp32", "cpu", False, False) == "fp32"
    with pytest.raises(ConfigError, match="precision must be one of"):
        resolve_precision("int8", "cpu")


def test_autocast_runs_the_resolved_type_and_fp32_is_untouched():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 8, 8)
    with precision_autocast("cpu", "bf16"):
        assert conv(x).dtype == torch.bfloat16
    with precision_autocast("cpu", "fp32"):
        assert conv(x).dtype == torch.float32


def test_restorers_honour_spandrels_flags(tmp_path):
    """GFPGAN and CodeFormer do not support float16 (black blotches, flicker): fp16 becomes bf16."""
    path = tmp_path / "GFPGANv1.4.pth"
    torch.save({"params_ema": layout_state_dict("gfpgan_v1_clean_512", seed=1)}, path)
    assert load_restorer(path).precision == "fp32"
    with pytest.warns(UserWarning, match="runs in bf16"):
        assert load_restorer(path, "cpu", "fp16").precision == "bf16"
    esrgan = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": realesrgan_state_dict()}, esrgan)
    assert load_bg_upsampler(esrgan, "cpu", "fp16").precision == "fp16"  # RRDBNet supports half


# ---------------------------------------------------------------- bf16 close to fp32, per network


def test_generator_bf16_is_within_a_grey_level_of_fp32():
    model = Wav2Lip()
    model.load_state_dict(fan_in_state_dict(model, seed=1))
    model.eval()
    crops = np.stack([smooth_image(96, 96, seed=s) for s in range(4)])
    mels = prepare_mel_inputs(np.random.default_rng(0).uniform(-4, 4, (4, 80, 16)).astype(np.float32))
    faces = prepare_face_inputs(crops)
    fp32 = postprocess_faces(forward_generator(model, faces, mels, 4, "cpu", "fp32"))
    bf16 = postprocess_faces(forward_generator(model, faces, mels, 4, "cpu", "bf16"))
    assert _mean_levels(bf16, fp32) <= GREY_LEVEL_MEAN


def test_detector_bf16_scores_and_boxes_are_close_to_fp32(tmp_path):
    path = save_official_layout(calibrated_retinaface("mobile0.25"), tmp_path / "mobile.pth")
    config = DetectConfig(model="retinaface_mobile0.25")
    fp32 = load_detector(config, path, "cpu")
    bf16 = FaceDetector(fp32.network, fp32.anchor_cfg, config, "cpu", "bf16")
    small = downscale_frames(np.stack([synthetic_image(s) for s in (20, 21)]), config.detect_max_side)
    loc32, scores32, _ = fp32._forward(small)
    loc16, scores16, _ = bf16._forward(small)
    # Seeded weights put the scores near 0.5, where bf16's 8-bit mantissa moves them most (about 0.02
    # measured); box offsets are in units of the prior's size.
    assert float((scores16 - scores32).abs().mean()) <= 0.05
    assert float((loc16 - loc32).abs().mean()) <= 0.15  # 0.07 measured on these random weights


def test_gfpgan_bf16_is_within_a_grey_level_of_fp32():
    restorer = tiny_gfpgan(seed=7)
    faces = np.stack([smooth_image(TINY_FACE, TINY_FACE, seed=s, sigma=2.0) for s in range(2)])
    fp32 = restorer.restore_aligned(faces)
    restorer.precision = "bf16"
    assert _mean_levels(restorer.restore_aligned(faces), fp32) <= GREY_LEVEL_MEAN


# CodeFormer: tests/test_codeformer_stages.py (a real face crop, where the code choice matters).


def test_realesrgan_bf16_is_within_a_grey_level_of_fp32(tmp_path):
    path = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": realesrgan_state_dict()}, path)
    upsampler = load_bg_upsampler(path)
    frames = np.stack([smooth_image(40, 48, seed=s, sigma=2.0) for s in range(2)])
    fp32 = upsampler.upsample(frames, 2)
    upsampler.precision = "bf16"
    assert _mean_levels(upsampler.upsample(frames, 2), fp32) <= GREY_LEVEL_MEAN
