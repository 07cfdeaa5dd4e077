"""The three convolution blocks every Wav2Lip network is built from.

Parameter names follow the released checkpoints: each block keeps its layers in an ``nn.Sequential``
called ``conv_block`` (convolution, then batch norm where the block has one), so a state dict key reads
``<path>.conv_block.0.weight`` / ``<path>.conv_block.1.running_mean``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

LEAKY_SLOPE = 0.01  # negative slope of the discriminator's LeakyReLU


class ConvSpec(NamedTuple):
    """One block: channels in/out, kernel, stride, padding and whether it adds its input back."""

    cin: int
    cout: int
    kernel: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: int = 1
    residual: bool = False


class ConvBNReLU(nn.Module):
    """Conv2d -> BatchNorm2d (-> + input when ``residual``) -> ReLU."""

    def __init__(self, spec: ConvSpec) -> None:
        super().__init__()
        if spec.residual and (spec.cin != spec.cout or spec.stride != 1):
            raise ValueError(f"a residual block must keep its shape, got {spec}")
        self.conv_block = nn.Sequential(
            nn.Conv2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.padding),
            nn.BatchNorm2d(spec.cout),
        )
        self.act = nn.ReLU()
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class UpConvBNReLU(nn.Module):
    """ConvTranspose2d -> BatchNorm2d -> ReLU (the generator's upsampling step)."""

    def __init__(self, spec: ConvSpec, output_padding: int = 0) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.padding, output_padding),
            nn.BatchNorm2d(spec.cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


class ConvLeakyReLU(nn.Module):
    """Conv2d -> LeakyReLU(0.01), no normalisation (the visual-quality discriminator's block)."""

    def __init__(self, spec: ConvSpec) -> None:
        super().__init__()
        conv = nn.Conv2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.padding)
        self.conv_block = nn.Sequential(conv)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def conv_stack(specs: list[ConvSpec]) -> nn.Sequential:
    """``ConvBNReLU`` blocks in sequence, indexed 0.. like the official ``nn.Sequential``."""
    return nn.Sequential(*(ConvBNReLU(s) for s in specs))


def res(channels: int) -> ConvSpec:
    """The 3x3, stride-1 residual block that follows most downsampling steps."""
    return ConvSpec(channels, channels, 3, 1, 1, residual=True)


# The audio encoder shared by the generator and SyncNet up to its last stage: (B, 1, 80, 16) mel
# windows are reduced to (B, 256, 3, 3); each model then adds its own head.
AUDIO_TRUNK_SPECS = [
    ConvSpec(1, 32, 3, 1, 1),
    res(32),
    res(32),
    ConvSpec(32, 64, 3, (3, 1), 1),  # 80x16 -> 27x16
    res(64),
    res(64),
    ConvSpec(64, 128, 3, 3, 1),  # -> 9x6
    res(128),
    res(128),
    ConvSpec(128, 256, 3, (3, 2), 1),  # -> 3x3
    res(256),
]
