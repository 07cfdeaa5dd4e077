"""Device helpers shared by every model wrapper, and the one rule that turns ``--device`` into a device."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from pipeline.core.device_names import check_device_name
from pipeline.core.errors import ConfigError, DeviceUnavailableError

NVIDIA_DEVICE_FILE = Path("/dev/nvidia0")  # exists when the NVIDIA kernel driver has found a GPU
TORCH_INSTALL_URL = "https://pytorch.org/get-started/locally/"
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # autocast compute type; fp32: none
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # /proc/cpuinfo flags of native bf16 arithmetic


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
            f"--device {requested} was asked for, but no CUDA device is available"
            + (f": {unusable}" if unusable else " (use --device cpu)")
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


def upload(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """``array`` as a tensor on ``device``: on CUDA copied through pinned (page-locked) memory with
    ``non_blocking=True``, so the copy is a DMA that overlaps the host's next work; elsewhere the array's
    own memory, shared, no copy.

    Callers upload uint8 pixels (a quarter of float32's bytes) and convert on the device. Safe to let
    ``array`` change afterwards: the pinned staging copy is taken before this returns, and torch keeps
    that buffer until the copy has finished.
    """
    device = torch.device(device)
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def configure_backends(device: torch.device | str) -> None:
    """Backend settings for the networks on ``device``, set once where the device is chosen.

    ``cudnn.benchmark`` is on for CUDA: the render calls each network with fixed shapes (96x96 lip-sync
    crops, 512x512 restorer crops, one detection size per video, a few batch sizes), so cuDNN's one-off
    search for the fastest convolution per shape pays back within the first batches. Off otherwise
    (the CPU has no cuDNN; a previous CUDA run in this process does not leak into it).
    """
    torch.backends.cudnn.benchmark = torch.device(device).type == "cuda"


def use_cpu_threads(count: int) -> None:
    """``count`` compute threads for the CPU work of the calling thread's networks. Torch's OpenMP keeps
    the count per thread, so each batch worker sets its share of the cores in its own thread."""
    torch.set_num_threads(max(1, int(count)))
