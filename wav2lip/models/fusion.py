"""The inference form of a Wav2Lip network: each batch norm folded into the convolution before it.

In eval mode a ``BatchNorm2d`` is a fixed per-channel scale and shift, so it can be folded into the
weights and bias of the ``Conv2d`` / ``ConvTranspose2d`` it follows: the same function (equal to float
rounding, about 1e-6 of full scale), one pass over the activations fewer per block, and the ReLU runs in
place. On two CPU cores the batch norms and out-of-place ReLUs take about a quarter of the generator's
forward. Training keeps the plain network; only inference uses this form.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from wav2lip.models.blocks import ConvBNReLU, UpConvBNReLU


def _unfolded(block: nn.Module) -> bool:
    return isinstance(block, (ConvBNReLU, UpConvBNReLU)) and len(block.conv_block) == 2


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """``model`` (put into eval mode) with every conv + batch-norm block folded, in place; returns it.

    Folding twice is harmless: a folded block has no batch norm left. The folded model's state dict no
    longer has the ``running_mean`` / ``running_var`` keys, so load checkpoints before folding.
    """
    model.eval()
    with torch.no_grad():
        for block in model.modules():
            if _unfolded(block):
                conv, norm = block.conv_block
                fused = fuse_conv_bn_eval(conv, norm, transpose=isinstance(block, UpConvBNReLU))
                block.conv_block = nn.Sequential(fused)
                block.act = nn.ReLU(inplace=True)
    return model


def is_folded(model: nn.Module) -> bool:
    """True when no conv + batch-norm block of ``model`` is left unfolded."""
    return not any(_unfolded(block) for block in model.modules())
