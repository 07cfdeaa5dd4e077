"""The inference form of a Wav2Lip network: one fused operation per conv + batch-norm + ReLU block.

In eval mode a ``BatchNorm2d`` is a fixed per-channel scale and shift, so it folds into the weights and
bias of the ``Conv2d`` / ``ConvTranspose2d`` before it (the same function to float rounding, about 1e-6
of full scale). On the CPU the folded convolution, the residual add and the ReLU then run as one oneDNN
primitive (``torch.ops.mkldnn._convolution_pointwise``, the kernel torch's own compiler emits for this
pattern; same values as the separate operations): the batch norms, adds and ReLUs were each a full pass
over the activations, together about 40 % of the generator's forward on two cores. Elsewhere (CUDA, or a
torch without oneDNN) the block runs the folded convolution, add and ReLU one after the other.

:func:`store_in_bfloat16` keeps the weights in bfloat16 for CPUs with native bf16 arithmetic: under
autocast every forward would cast every weight again and the residual adds would mix float32 and
bfloat16. The 1x1 output head and its sigmoid stay in float32 (bfloat16 steps are a full grey level near
white). Training keeps the plain network; only inference uses this form.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from wav2lip.models.blocks import ConvBNReLU, UpConvBNReLU


class FusedConvReLU(nn.Module):
    """``relu(conv(x) [+ x])`` with the batch norm already folded into ``conv``."""

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d, residual: bool) -> None:
        super().__init__()
        self.conv = conv
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.backends.mkldnn.is_available() and not torch.is_grad_enabled():
            return _onednn_conv_relu(self.conv, x, self.residual)
        out = self.conv(x)
        if self.residual:
            out = out + x
        return torch.relu_(out)


def _onednn_conv_relu(conv: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor, residual: bool) -> torch.Tensor:
    geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
    if isinstance(conv, nn.ConvTranspose2d):
        padding, stride, dilation, groups = geometry
        return torch.ops.mkldnn._convolution_transpose_pointwise(
            x,
            conv.weight,
            conv.bias,
            padding,
            list(conv.output_padding),
            stride,
            dilation,
            groups,
            "relu",
            [],
            None,
        )
    if residual and x.dtype == torch.float32:
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, x, conv.weight, conv.bias, *geometry, "add", None, "relu", [], None
        )
    if residual:  # oneDNN fuses add + ReLU in float32 only: the ReLU follows in place
        added = torch.ops.mkldnn._convolution_pointwise.binary(
            x, x, conv.weight, conv.bias, *geometry, "add", None, None, [], None
        )
        return torch.relu_(added)
    return torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, *geometry, "relu", [], None)


class Float32Head(nn.Module):
    """A layer run in float32 whatever the dtype of its input (the generator's 1x1 output head)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.float())


def _unfolded(block: nn.Module) -> bool:
    return isinstance(block, (ConvBNReLU, UpConvBNReLU))


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """``model`` (put into eval mode) with every conv + batch-norm + ReLU block replaced by a
    :class:`FusedConvReLU`, in place; returns it.

    Folding twice is harmless. The folded model's state dict no longer has the batch-norm keys, so load
    checkpoints before folding.
    """
    model.eval()
    with torch.no_grad():
        for parent in list(model.modules()):
            for name, block in list(parent.named_children()):
                if _unfolded(block):
                    conv, norm = block.conv_block
                    fused = fuse_conv_bn_eval(conv, norm, transpose=isinstance(block, UpConvBNReLU))
                    setattr(parent, name, FusedConvReLU(fused, getattr(block, "residual", False)))
    return model


def is_folded(model: nn.Module) -> bool:
    """True when no conv + batch-norm block of ``model`` is left unfolded."""
    return not any(_unfolded(block) for block in model.modules())


def store_in_bfloat16(generator: nn.Module) -> nn.Module:
    """A folded generator with its weights in bfloat16, except the output head (float32), in place."""
    generator.to(torch.bfloat16)
    head = generator.output_block
    head[1] = Float32Head(head[1])
    return generator


def weight_dtype(model: nn.Module) -> torch.dtype:
    """The dtype inputs should have: that of the model's first weight (float32 for a model without any)."""
    first = next(model.parameters(), None)
    return torch.float32 if first is None else first.dtype
