"""Seeded checkpoints and synthetic faces for the restore tests (plus checks of the helpers themselves).

Seeded values are scaled by each tensor's fan-in so that a randomly filled GFPGAN stays in range: with a
fixed small scale its StyleGAN decoder overflows and every output pixel saturates, which would make
comparisons of restored faces meaningless.
"""

from __future__ import annotations

import contextlib
import math

import cv2
import numpy as np
import pytest
import torch
from facexlib.parsing.parsenet import ParseNet
from spandrel.architectures.GFPGAN import GFPGAN

from restore.parsing import FaceParser
from restore.restorers import FaceRestorer
from tests.conftest import load_layout

TINY_FACE = 64  # pixels: crop side of the small GFPGAN / ParseNet used for fast stage tests


@contextlib.contextmanager
def one_torch_thread():
    """Run forwards on one CPU thread: on a shared, busy machine two torch threads that wait for each
    other make small forwards tens of times slower and timings erratic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def seeded_tensor(name: str, shape: list[int], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """A seeded value for parameter ``name``: fan-in scaled weights, unit noise maps, positive variances."""
    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    if name.endswith("running_var"):
        return (torch.rand(shape, generator=gen) + 0.5).to(dtype)
    values = torch.randn(shape, generator=gen)
    if ".noises.noise" in name:
        return values.to(dtype)
    if len(shape) >= 2:
        fan_in = math.prod(shape[2:]) if len(shape) == 5 else math.prod(shape[1:])
        return (values / math.sqrt(fan_in)).to(dtype)
    if name.endswith("weight") and ("norm" in name or "idx_pred_layer.0" in name):
        return (1.0 + 0.05 * values).to(dtype)  # normalisation scales around 1
    return (0.05 * values).to(dtype)


def layout_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with exactly the keys, shapes and dtypes of ``tests/data/checkpoint_layouts/<name>``."""
    gen = torch.Generator().manual_seed(seed)
    layout = load_layout(name)
    return {
        key: seeded_tensor(key, spec["shape"], getattr(torch, spec["dtype"]), gen)
        for key, spec in sorted(layout.items())
    }


def placeholder_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The layout's keys and shapes as zero views of one element each (tiny files; for key-only checks)."""
    layout = load_layout(name)
    return {
        key: torch.zeros((1,) * len(spec["shape"]), dtype=getattr(torch, spec["dtype"])).expand(spec["shape"])
        for key, spec in layout.items()
    }


def seed_module(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Refill ``module``'s parameters and buffers with :func:`seeded_tensor` values (eval mode)."""
    gen = torch.Generator().manual_seed(seed)
    state = {
        key: seeded_tensor(key, list(value.shape), value.dtype, gen)
        for key, value in sorted(module.state_dict().items())
    }
    module.load_state_dict(state)
    return module.eval().requires_grad_(False)


def tiny_gfpgan(seed: int = 0) -> FaceRestorer:
    """A narrow GFPGANv1Clean (the class spandrel loads GFPGAN v1.3/v1.4 into) for 64-pixel crops."""
    model = GFPGAN(out_size=TINY_FACE, num_style_feat=64, channel_multiplier=1, narrow=0.25, num_mlp=2)
    return FaceRestorer(seed_module(model, seed), "gfpgan", torch.device("cpu"), "fp32", face_size=TINY_FACE)


def tiny_parser(seed: int = 0) -> FaceParser:
    """A small facexlib ParseNet (19 classes) for 64-pixel crops."""
    model = ParseNet(
        in_size=TINY_FACE, out_size=TINY_FACE, parsing_ch=19, base_ch=16, res_depth=2, ch_range=[8, 32]
    )
    return FaceParser(seed_module(model, seed), torch.device("cpu"), size=TINY_FACE)


def synthetic_image(height: int, width: int, seed: int = 0, sigma: float = 3.0) -> np.ndarray:
    """``(height, width, 3) uint8`` BGR smooth random texture (blurred noise, full contrast)."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return np.round(smooth * 255).astype(np.uint8)


def test_layout_state_dict_matches_layout_exactly():
    state = layout_state_dict("gfpgan_v1_clean_512")
    layout = load_layout("gfpgan_v1_clean_512")
    assert sorted(state) == sorted(layout)
    for key, spec in layout.items():
        assert list(state[key].shape) == spec["shape"]
        assert str(state[key].dtype) == f"torch.{spec['dtype']}"
    noise = state["stylegan_decoder.noises.noise0"]
    assert 0.5 < float(noise.std()) < 1.5  # unit noise maps, as StyleGAN stores them


def test_seeded_values_are_reproducible_and_seed_dependent():
    a = layout_state_dict("parsenet_512", seed=3)
    b = layout_state_dict("parsenet_512", seed=3)
    c = layout_state_dict("parsenet_512", seed=4)
    key = "body.0.conv1.conv2d.weight"
    assert torch.equal(a[key], b[key])
    assert not torch.equal(a[key], c[key])
    assert all(float(v.min()) >= 0.5 for k, v in a.items() if k.endswith("running_var"))


@pytest.mark.parametrize("name", ["wav2lip_generator", "syncnet_color_expert"])
def test_placeholder_state_dict_keeps_shapes(name):
    state = placeholder_state_dict(name)
    layout = load_layout(name)
    assert {k: list(v.shape) for k, v in state.items()} == {k: s["shape"] for k, s in layout.items()}
