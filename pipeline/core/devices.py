"""Device helpers shared by every model wrapper, and the one rule that turns ``--device`` into a device."""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from pathlib import Path

import torch

from pipeline.core.device_names import check_device_name
from pipeline.core.errors import ConfigError, DeviceUnavailableError

NVIDIA_DEVICE_FILE = Path("/dev/nvidia0")  # exists when the NVIDIA kernel driver has found a GPU
TORCH_INSTALL_URL = "https://pytorch.org/get-started/locally/"


def choose_device(requested: str | None) -> str:
    """The device a ``--device`` value means: "cpu", "cuda" or "cuda:N".

    ``auto`` (or None) is CUDA when torch can use a GPU, else the CPU (with a warning when an NVIDIA GPU
    is present but torch cannot use it). ``cuda`` / ``cuda:N`` without a usable GPU, or with ``N`` beyond
    the GPUs this process sees (``CUDA_VISIBLE_DEVICES`` renumbers them from 0), is a
    DeviceUnavailableError (exit 2).
    """
    requested = "auto" if requested is None else check_device_name(requested)
    if requested == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        unusable = unusable_gpu_message()
        if requested == "auto":
            if unusable:
                warnings.warn(f"running on the CPU (much slower): {unusable}", stacklevel=2)
            return "cpu"
        raise DeviceUnavailableError(
            f"--device {requested} was asked for, but no CUDA device is available: "
            + (unusable or "use --device cpu")
        )
    if requested == "auto":
        return "cuda"
    index = torch.device(requested).index
    if index is not None and index >= torch.cuda.device_count():
        raise DeviceUnavailableError(
            f"--device {requested}: this process sees {torch.cuda.device_count()} GPU(s), cuda:0 .. "
            f"cuda:{torch.cuda.device_count() - 1} (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')} numbers the visible GPUs from 0)"
        )
    return requested


def nvidia_gpu_evidence() -> str | None:
    """What shows an NVIDIA GPU on this machine (its device file, or ``nvidia-smi``), else None."""
    if NVIDIA_DEVICE_FILE.exists():
        return str(NVIDIA_DEVICE_FILE)
    return shutil.which("nvidia-smi")


def unusable_gpu_message() -> str | None:
    """Why torch cannot use the NVIDIA GPU that is present (None when there is none to use): usually a
    CPU-only torch, or a CUDA build newer than the installed driver supports."""
    evidence = nvidia_gpu_evidence()
    if evidence is None:
        return None
    built = torch.version.cuda
    build = f"a CUDA {built} build" if built else "a CPU-only build"
    return (
        f"an NVIDIA GPU is present ({evidence}) but torch {torch.__version__} is {build} that cannot use "
        "it here. Run nvidia-smi: its 'CUDA Version' is the newest CUDA the installed driver supports; "
        "update the driver, or install a torch built for that CUDA version or older (e.g. pip install "
        f"torch --index-url https://download.pytorch.org/whl/cu126; see {TORCH_INSTALL_URL} and the "
        "README's troubleshooting section)"
    )


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
