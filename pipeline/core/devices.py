"""Device helpers shared by every model wrapper, and the one rule that turns ``--device`` into a device."""

from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path

import torch

from pipeline.core.errors import ConfigError, DeviceUnavailableError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # autocast compute type; fp32: none
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # /proc/cpuinfo flags of native bf16 arithmetic


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


def place_model(model: torch.nn.Module, device: torch.device | str) -> tuple[torch.nn.Module, torch.device]:
    """``model`` frozen in eval mode on ``device`` (its weights stay float32; autocast picks the compute
    type, see :func:`precision_autocast`)."""
    device = torch.device(device)
    return model.eval().requires_grad_(False).to(device), device


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


@functools.cache
def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16 in ``cpuinfo``'s flags) and
    torch's oneDNN can use it. Without them bf16 autocast still runs, emulated and slower than float32."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()}
    return bool(flags & CPU_BF16_FLAGS)


def resolve_precision(
    requested: str, device: torch.device | str, supports_half: bool = True, supports_bfloat16: bool = True
) -> str:
    """The precision ("fp32", "bf16" or "fp16") a network runs in on ``device``.

    ``auto``: on CUDA bf16 where the GPU and the architecture support it, else fp16 where the
    architecture does (``supports_half``), else fp32; on the CPU bf16 when it is native
    (:func:`cpu_has_native_bf16`) and supported, else fp32. An explicit choice the architecture does not
    support falls back (fp16 -> bf16 -> fp32) with a warning; fp16 on a CPU runs (emulated, slow).
    """
    if requested not in PRECISION_CHOICES:
        raise ConfigError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {requested!r}")
    device = torch.device(device)
    if requested == "auto":
        if device.type == "cuda":
            if supports_bfloat16 and torch.cuda.is_bf16_supported():
                return "bf16"
            return "fp16" if supports_half else "fp32"
        return "bf16" if device.type == "cpu" and supports_bfloat16 and cpu_has_native_bf16() else "fp32"
    supported = {"fp32": True, "bf16": supports_bfloat16, "fp16": supports_half}
    if supported[requested]:
        return requested
    chosen = "bf16" if requested == "fp16" and supports_bfloat16 else "fp32"
    warnings.warn(
        f"precision {requested} is not supported by this network; it runs in {chosen}", stacklevel=2
    )
    return chosen


def precision_autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to ``precision`` ("bf16" / "fp16", as :func:`resolve_precision` returns) on ``device``;
    a no-op context for "fp32" (weights stay float32 either way, so outputs come back float32-castable)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=PRECISION_DTYPES[precision])


def float16_autocast(device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager:
    """float16 autocast on a CUDA ``device`` when ``enabled`` (training's ``amp``); a no-op elsewhere."""
    on_cuda = enabled and torch.device(device).type == "cuda"
    return precision_autocast(device, "fp16" if on_cuda else "fp32")
