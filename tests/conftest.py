"""Shared fixtures: every RNG seeded, layouts of the official checkpoints, tiny media made with ffmpeg."""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

LAYOUT_DIR = Path(__file__).parent / "data" / "checkpoint_layouts"


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@contextlib.contextmanager
def exact_float32():
    """Float32 matmuls and convolutions without TF32 (cuDNN and cuBLAS use TF32 by default on Ampere
    and later, about 1e-3 relative error per layer), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(autouse=True)
def _no_tf32_in_gpu_tests(request):
    """``gpu`` tests compare float32 outputs at about 1e-3 through tens of layers: TF32 would break that
    for the wrong reason, so they run with it off."""
    context = exact_float32() if request.node.get_closest_marker("gpu") else contextlib.nullcontext()
    with context:
        yield


def load_layout(name: str) -> dict[str, dict]:
    """``{param name: {"shape": [...], "dtype": "float32"}}`` of an official checkpoint."""
    return json.loads((LAYOUT_DIR / f"{name}.json").read_text())


def seeded_state_dict(module: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> dict:
    """The module's state dict refilled with seeded random values (buffers that count stay as they are)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in module.state_dict().items():
        if key.endswith("running_var"):
            out[key] = (torch.rand(value.shape, generator=gen) + 0.5).to(value.dtype)
        elif value.dtype.is_floating_point:
            out[key] = (torch.randn(value.shape, generator=gen) * scale).to(value.dtype)
        else:
            out[key] = value.clone()
    return out
