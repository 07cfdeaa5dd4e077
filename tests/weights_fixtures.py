"""Seeded checkpoints in the official layouts, written by the tests themselves (no downloads).

Each state dict is built from ``tests/data/checkpoint_layouts/<name>.json`` — the exact names, shapes and
dtypes of the official file — and filled with seeded random values, then wrapped as the official file is.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import load_layout

# How each official file wraps its state dict.
WRAPPERS = {
    "wav2lip_generator": lambda sd: {
        "state_dict": {"module." + k: v for k, v in sd.items()},
        "optimizer": {},
        "global_step": 0,
        "global_epoch": 0,
    },
    "syncnet_color_expert": lambda sd: {
        "state_dict": sd,
        "optimizer": {},
        "global_step": 0,
        "global_epoch": 0,
    },
    "wav2lip_disc_qual": lambda sd: {"state_dict": sd, "optimizer": {}, "global_step": 0, "global_epoch": 0},
    "gfpgan_v1_clean_512": lambda sd: {"params_ema": sd},
    "codeformer": lambda sd: {"params_ema": sd},
    "retinaface_resnet50": lambda sd: sd,
    "parsenet_512": lambda sd: sd,
    "s3fd": lambda sd: sd,
}


def seeded_layout_state_dict(layout_name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the official keys/shapes/dtypes of ``layout_name`` and seeded values.

    Weight matrices/kernels get a standard deviation of 1/sqrt(fan-in) so activations stay finite and
    of order one through deep networks (as after a real initialisation); norms start near identity.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, spec in load_layout(layout_name).items():
        shape, dtype = tuple(spec["shape"]), getattr(torch, spec["dtype"])
        if not dtype.is_floating_point:
            out[key] = torch.zeros(shape, dtype=dtype)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith("running_mean") or key.endswith(".bias"):
            out[key] = torch.randn(shape, generator=gen) * 0.01
        elif key.endswith(".weight") and len(shape) == 1:  # norm scales
            out[key] = 1.0 + torch.randn(shape, generator=gen) * 0.01
        else:
            fan_in = max(1, int(torch.tensor(shape[-3:] if len(shape) == 5 else shape[1:]).prod()))
            out[key] = torch.randn(shape, generator=gen) / fan_in**0.5
    return out


def write_official_checkpoint(layout_name: str, path: Path, seed: int = 0) -> Path:
    """Save a seeded checkpoint exactly as the official ``layout_name`` file is wrapped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(WRAPPERS[layout_name](seeded_layout_state_dict(layout_name, seed)), path)
    return path
