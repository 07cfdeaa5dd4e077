"""Loading seeded checkpoints in the official layouts, and equality with the official pre/post-processing.

Each 512x512 forward pass costs seconds on CPU, so every network is built once per module and each test
runs as few forwards as it can.
"""

from __future__ import annotations

import copy
import warnings

import cv2
import numpy as np
import pytest
import torch

from pipeline.core.config_io import WEIGHTS_DIR
from pipeline.core.devices import to_channels_last
from pipeline.core.errors import ConfigError, MissingWeightsError, WeightsError, WrongModelError
from restore import build_stage, load_parser, load_restorer
from restore.config import RestoreConfig
from restore.parsing import build_parsenet
from tests.conftest import load_layout
from tests.test_restore_support import (
    layout_state_dict,
    one_torch_thread,
    placeholder_state_dict,
    synthetic_image,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def official_input(face: np.ndarray) -> torch.Tensor:
    """GFPGANer.enhance / inference_codeformer.py: img2tensor(face / 255., bgr2rgb) then normalize(0.5, 0.5).

    basicsr's img2tensor casts float64 images to float32 before cv2.cvtColor (which has no float64 path).
    """
    rgb = cv2.cvtColor((face / 255.0).astype(np.float32), cv2.COLOR_BGR2RGB)
    tensor = torch.from_numpy(rgb.transpose(2, 0, 1)).float()
    tensor.sub_(torch.tensor([0.5, 0.5, 0.5])[:, None, None]).div_(
        torch.tensor([0.5, 0.5, 0.5])[:, None, None]
    )
    return tensor.unsqueeze(0)


def official_output(output: torch.Tensor) -> np.ndarray:
    """basicsr tensor2img(output, rgb2bgr=True, min_max=(-1, 1)) followed by astype('uint8')."""
    tensor = output.squeeze(0).float().detach().cpu().clamp_(-1, 1)
    tensor = (tensor - (-1)) / (1 - (-1))
    image = cv2.cvtColor(tensor.numpy().transpose(1, 2, 0), cv2.COLOR_RGB2BGR)
    return (image * 255.0).round().astype(np.uint8)


@pytest.fixture(scope="module")
def face():
    return synthetic_image(512, 512, seed=11, sigma=6.0)


@pytest.fixture(scope="module")
def gfpgan_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("gfpgan") / "GFPGANv1.4.pth"
    torch.save({"params_ema": layout_state_dict("gfpgan_v1_clean_512", seed=1)}, path)
    return path


@pytest.fixture(scope="module")
def gfpgan(gfpgan_path):
    return load_restorer(gfpgan_path)


@pytest.fixture(scope="module")
def codeformer(tmp_path_factory):
    path = tmp_path_factory.mktemp("codeformer") / "codeformer.pth"
    torch.save({"params_ema": layout_state_dict("codeformer", seed=2)}, path)
    return load_restorer(path)


@pytest.fixture(scope="module")
def parsenet_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("parsenet") / "parsing_parsenet.pth"
    torch.save(layout_state_dict("parsenet_512", seed=3), path)  # a bare state dict, like facexlib's file
    return path


def test_gfpgan_is_recognised_with_the_official_layout(gfpgan, gfpgan_path):
    assert gfpgan.kind == "gfpgan" and gfpgan.face_size == 512 and gfpgan.precision == "fp32"
    layout = load_layout("gfpgan_v1_clean_512")
    model_state = gfpgan.model.state_dict()
    assert {k: list(v.shape) for k, v in model_state.items()} == {k: s["shape"] for k, s in layout.items()}
    saved = torch.load(gfpgan_path, weights_only=True)["params_ema"]
    assert all(torch.equal(model_state[k], saved[k]) for k in saved)


def test_gfpgan_restores_like_the_official_tool_with_stored_noise(gfpgan, face):
    torch.manual_seed(123)
    ours = gfpgan.restore_aligned(face[None])
    torch.manual_seed(456)  # a different random state must not matter
    with torch.no_grad():
        output = gfpgan.model(official_input(face), return_rgb=False, randomize_noise=False)[0]
    expected = official_output(output)
    assert ours.shape == (1, 512, 512, 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours[0], expected)
    saturated = np.mean((expected == 0) | (expected == 255))
    assert saturated < 0.5, "seeded GFPGAN saturates: the comparison would be meaningless"
    assert np.abs(expected.astype(int) - face).mean() > 5


def test_codeformer_is_recognised_with_the_official_layout(codeformer):
    assert codeformer.kind == "codeformer"
    layout = load_layout("codeformer")
    shapes = {k: list(v.shape) for k, v in codeformer.model.state_dict().items()}
    assert shapes == {k: s["shape"] for k, s in layout.items()}


def test_codeformer_restores_like_the_official_tool_with_fidelity(codeformer, face):
    ours = codeformer.restore_aligned(face[None], fidelity=0.7)
    official = copy.deepcopy(codeformer.model)  # the official tool keeps the default memory layout
    for tensor in (*official.parameters(), *official.buffers()):
        tensor.data = tensor.data.contiguous()
    with torch.no_grad():
        output = official(official_input(face), weight=0.7)[0]  # official: net(x, w=0.7, adain=True)
    expected = official_output(output)
    difference = np.abs(ours[0].astype(int) - expected)
    assert difference.max() <= 1 and difference.mean() < 0.01  # channels-last sums in another order
    assert np.mean((expected == 0) | (expected == 255)) < 0.5


def test_codeformer_runs_channels_last_and_gfpgan_in_the_default_layout(codeformer, gfpgan):
    weight = codeformer.model.fuse_convs_dict["128"].encode_enc.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    convs = [p for p in gfpgan.model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous() for p in convs)


def test_to_channels_last_converts_4d_weights_and_leaves_others():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(4, 2))
    model.register_parameter("styled", torch.nn.Parameter(torch.ones(1, 8, 3, 3, 3)))  # a 5-D weight
    to_channels_last(model)
    weight = model[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert model[1].weight.is_contiguous() and model.styled.is_contiguous()


def test_fidelity_outside_unit_interval_is_rejected(codeformer, face):
    with pytest.raises(ConfigError, match="fidelity"):
        codeformer.restore_aligned(face[None], fidelity=1.5)


def test_restore_aligned_checks_shape_and_handles_empty(gfpgan):
    with pytest.raises(ValueError, match="512"):
        gfpgan.restore_aligned(np.zeros((1, 256, 256, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        gfpgan.restore_aligned(np.zeros((1, 512, 512, 3), np.float32))
    assert gfpgan.restore_aligned(np.zeros((0, 512, 512, 3), np.uint8)).shape == (0, 512, 512, 3)


def test_parsenet_checkpoint_loads(parsenet_path):
    parser = load_parser(parsenet_path)
    assert parser.size == 512
    saved = torch.load(parsenet_path, weights_only=True)
    state = parser.model.state_dict()
    assert set(state) == set(load_layout("parsenet_512"))
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    assert not parser.model.training


def _save_wav2lip_style(name: str, path) -> None:
    state = {f"module.{k}": v for k, v in placeholder_state_dict(name).items()}
    torch.save({"state_dict": state, "optimizer": {}, "global_step": 0, "global_epoch": 0}, path)


@pytest.mark.parametrize(
    ("layout", "named"),
    [
        ("wav2lip_generator", "Wav2Lip generator"),
        ("syncnet_color_expert", "SyncNet"),
        ("wav2lip_disc_qual", "visual-quality discriminator"),
        ("s3fd", "S3FD"),
        ("retinaface_resnet50", "RetinaFace"),
        ("parsenet_512", "ParseNet"),
    ],
)
def test_other_project_checkpoints_are_wrong_models(tmp_path, layout, named):
    path = tmp_path / "model.pth"
    if layout.startswith(("wav2lip", "syncnet")):
        _save_wav2lip_style(layout, path)
    else:
        torch.save(placeholder_state_dict(layout), path)
    with pytest.raises(WrongModelError, match=named) as info:
        load_restorer(path)
    assert info.value.exit_code == 3
    assert "\n" not in str(info.value)


def test_super_resolution_checkpoint_is_a_wrong_model(tmp_path):
    from tests.test_restore_upsample import realesrgan_state_dict

    path = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": realesrgan_state_dict()}, path)
    with pytest.raises(WrongModelError, match="ESRGAN"):
        load_restorer(path)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(MissingWeightsError):
        load_restorer(tmp_path / "GFPGANv1.4.pth")
    bad = tmp_path / "codeformer.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError):
        load_restorer(bad)


def test_parser_rejects_a_restorer_checkpoint(gfpgan_path):
    with pytest.raises(WrongModelError, match="ParseNet"):
        load_parser(gfpgan_path)


def test_restoreformer_is_recognised(tmp_path):
    from spandrel.architectures.RestoreFormer import RestoreFormer

    path = tmp_path / "RestoreFormer.pth"
    shapes = {k: v.shape for k, v in RestoreFormer().state_dict().items()}
    torch.save({"params_ema": {k: torch.zeros((1,) * len(s)).expand(s) for k, s in shapes.items()}}, path)
    assert load_restorer(path).kind == "restoreformer"


def test_build_stage_checks_the_configured_restorer(gfpgan_path, parsenet_path):
    with pytest.raises(WrongModelError, match="restore.restorer is codeformer"):
        build_stage(RestoreConfig(restorer="codeformer"), gfpgan_path)
    with pytest.raises(ConfigError):
        build_stage(RestoreConfig(restorer="none"), gfpgan_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stage = build_stage(RestoreConfig(parsing=True, upscale=2, bg_upsampler="realesrgan"), gfpgan_path)
    messages = " | ".join(str(w.message) for w in caught)
    assert "parsing_parsenet.pth" in messages and "Lanczos" in messages
    assert stage.parser is None and stage.bg_upsampler is None and stage.output_size(640, 360) == (1280, 720)
    stage = build_stage(RestoreConfig(parsing=True), gfpgan_path, parsenet_path)
    assert stage.parser is not None


def test_parsenet_builder_matches_layout():
    shapes = {k: list(v.shape) for k, v in build_parsenet().state_dict().items()}
    assert shapes == {k: s["shape"] for k, s in load_layout("parsenet_512").items()}


REAL_GFPGAN = WEIGHTS_DIR / "GFPGANv1.4.pth"
REAL_CODEFORMER = WEIGHTS_DIR / "codeformer.pth"


@pytest.mark.real_weights
@pytest.mark.skipif(not REAL_GFPGAN.is_file(), reason="needs weights/GFPGANv1.4.pth")
def test_real_gfpgan_is_deterministic(face):
    restorer = load_restorer(REAL_GFPGAN)
    assert set(restorer.model.state_dict()) == set(load_layout("gfpgan_v1_clean_512"))
    torch.manual_seed(1)
    first = restorer.restore_aligned(face[None])
    torch.manual_seed(2)
    np.testing.assert_array_equal(restorer.restore_aligned(face[None]), first)


@pytest.mark.real_weights
@pytest.mark.skipif(not REAL_CODEFORMER.is_file(), reason="needs weights/codeformer.pth")
def test_real_codeformer_loads(face):
    restorer = load_restorer(REAL_CODEFORMER)
    assert restorer.kind == "codeformer"
    assert set(restorer.model.state_dict()) == set(load_layout("codeformer"))
    assert restorer.restore_aligned(face[None], fidelity=1.0).shape == (1, 512, 512, 3)


REAL_PARSENET = WEIGHTS_DIR / "parsing_parsenet.pth"
REAL_REALESRGAN = WEIGHTS_DIR / "RealESRGAN_x2plus.pth"


@pytest.mark.real_weights
@pytest.mark.skipif(not REAL_PARSENET.is_file(), reason="needs weights/parsing_parsenet.pth")
def test_real_parsenet_loads(face):
    parser = load_parser(REAL_PARSENET)
    assert set(parser.model.state_dict()) == set(load_layout("parsenet_512"))
    assert parser.parse(face[None]).shape == (1, 512, 512)


@pytest.mark.real_weights
@pytest.mark.skipif(not REAL_REALESRGAN.is_file(), reason="needs weights/RealESRGAN_x2plus.pth")
def test_real_realesrgan_loads():
    from restore import load_bg_upsampler

    upsampler = load_bg_upsampler(REAL_REALESRGAN)
    assert upsampler.scale == 2
    frame = synthetic_image(24, 30, seed=1)
    assert upsampler.upsample(frame[None], 2).shape == (1, 48, 60, 3)
