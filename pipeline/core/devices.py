"""Device helpers shared by every model wrapper, and the one rule that turns ``--device`` into a device."""

from __future__ import annotations

import contextlib

import torch

from pipeline.core.errors import ConfigError, DeviceUnavailableError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def choose_device(requested: str | None) -> str:
    """The device a ``--device`` value means: "cpu" or "cuda". ``auto`` (or None) is CUDA when torch can
    use a GPU, else the CPU; ``cuda`` without a usable GPU is a DeviceUnavailableError (exit 2)."""
    if requested in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested not in DEVICE_CHOICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            "--device cuda was asked for, but no CUDA device is available (use --device cpu)"
        )
    return requested


def place_model(
    model: torch.nn.Module, device: torch.device | str, half: bool | None
) -> tuple[torch.nn.Module, torch.device, bool]:
    """``model`` frozen in eval mode on ``device``; ``half=None`` means float16 on CUDA only."""
    device = torch.device(device)
    half = device.type == "cuda" if half is None else half
    return model.eval().requires_grad_(False).to(device), device, half


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its 4-D weights stored channels-last, in place (``Module.to(memory_format=...)``
    refuses the 5-D weights some networks hold). oneDNN and cuDNN convolve fastest in this layout."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.dim() == 4:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return model


def batch_size_for(
    device: torch.device | str, requested: int | None, cuda_default: int, cpu_default: int, setting: str
) -> int:
    """``requested`` when set (at least 1, else ConfigError naming ``setting``), else the default for the
    kind of ``device``."""
    if requested is None:
        return cuda_default if torch.device(device).type == "cuda" else cpu_default
    if requested < 1:
        raise ConfigError(f"{setting} must be at least 1, got {requested}")
    return requested


def float16_autocast(device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager:
    """float16 autocast on a CUDA ``device`` when ``enabled``; a no-op context elsewhere (the CPU runs
    float32, as the official tools do)."""
    if enabled and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
