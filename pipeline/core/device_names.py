"""The ``--device`` values every command accepts, checked without importing torch (the CLI stays fast).

``auto``, ``cpu``, ``cuda`` or ``cuda:N``. ``N`` counts the GPUs this process can see: with
``CUDA_VISIBLE_DEVICES=2,3`` the process sees two GPUs, physical GPU 2 as ``cuda:0`` and 3 as ``cuda:1``.
"""

from __future__ import annotations

import argparse
import re

from pipeline.core.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")  # plus "cuda:N"
DEVICE_HELP = "auto, cpu, cuda or cuda:N (N among the GPUs CUDA_VISIBLE_DEVICES leaves visible)"
_CUDA_INDEX = re.compile(r"cuda:(\d+)")


def check_device_name(value: object, setting: str = "device") -> str:
    """``value`` when it is a device name this project accepts, else a ConfigError naming ``setting``."""
    if isinstance(value, str) and (value in DEVICE_CHOICES or _CUDA_INDEX.fullmatch(value)):
        return value
    raise ConfigError(f"{setting} must be auto, cpu, cuda or cuda:N (N = 0, 1, ...), got {value!r}")


def device_argument(value: str) -> str:
    """``argparse`` type for ``--device``: the value, or an argument error that lists the choices."""
    try:
        return check_device_name(value, "--device")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
