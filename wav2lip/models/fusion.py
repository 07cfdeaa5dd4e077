"""The inference form of a Wav2Lip network: one fused operation per conv + batch-norm + ReLU block.

In eval mode a ``BatchNorm2d`` is a fixed per-channel scale and shift, so it folds into the weights and
bias of the ``Conv2d`` / ``ConvTranspose2d`` before it (the same function to float rounding, about 1e-6
of full scale). On the CPU the folded convolution, the residual add and the ReLU then run as one oneDNN
primitive (``torch.ops.mkldnn._convolution_pointwise``, the kernel torch's own compiler emits for this
pattern; same values as the separate operations): the batch norms, adds and ReLUs were each a full pass
over the activations, together about 40 % of the generator's forward on two cores. Elsewhere (CUDA, or a
torch without oneDNN) the block runs the folded convolution, add and ReLU one after the other.

On the CPU each block also keeps its weight pre-packed in oneDNN's blocked layout (packed at its first
forward, for that input shape, and again whenever the weight changes): handed a plain weight, oneDNN
reorders every weight into that layout at every call, about a fifth of the forward at Wav2Lip's small
spatial sizes. The packed copy is a plain attribute, not part of the state dict.

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
    """``relu(conv(x) [+ x])`` with the batch norm already folded into ``conv``.

    ``prepack`` (on by default) keeps the CPU weight in oneDNN's blocked layout between calls."""

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d, residual: bool, prepack: bool = True) -> None:
        super().__init__()
        self.conv = conv
        self.residual = residual
        self.prepack = prepack
        self._packed: tuple[tuple, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.backends.mkldnn.is_available() and not torch.is_grad_enabled():
            weight = self._packed_weight(x) if self.prepack else self.conv.weight
            return _onednn_conv_relu(self.conv, weight, x, self.residual)
        out = self.conv(x)
        if self.residual:
            out = out + x
        return torch.relu_(out)

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.conv.weight
        key = (weight.data_ptr(), weight.dtype, weight._version)
        if self._packed is None or self._packed[0] != key:
            self._packed = (key, pack_weight(self.conv, tuple(x.shape)))
        return self._packed[1]


def pack_weight(conv: nn.Conv2d | nn.ConvTranspose2d, input_shape: tuple[int, ...]) -> torch.Tensor:
    """``conv``'s weight reordered into the oneDNN layout best for inputs of ``input_shape`` (an opaque
    mkldnn tensor that the pointwise oneDNN operations take in place of the plain weight; other input
    shapes still work)."""
    weight = conv.weight.detach()
    shape = list(input_shape)
    if isinstance(conv, nn.ConvTranspose2d):
        return torch.ops.mkldnn._reorder_convolution_transpose_weight(
            weight,
            list(conv.padding),
            list(conv.output_padding),
            list(conv.stride),
            list(conv.dilation),
            conv.groups,
            shape,
        )
    return torch._C._nn.mkldnn_reorder_conv2d_weight(
        weight.to_mkldnn(), list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups, shape
    )


def _onednn_conv_relu(
    conv: nn.Conv2d | nn.ConvTranspose2d, weight: torch.Tensor, x: torch.Tensor, residual: bool
) -> torch.Tensor:
    """One oneDNN call; ``weight`` is ``conv.weight`` or its :func:`pack_weight` form."""
    geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
    if isinstance(conv, nn.ConvTranspose2d):
        padding, stride, dilation, groups = geometry
        return torch.ops.mkldnn._convolution_transpose_pointwise(
            x,
            weight,
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
            x, x, weight, conv.bias, *geometry, "add", None, "relu", [], None
        )
    if residual:  # oneDNN fuses add + ReLU in float32 only: the ReLU follows in place
        added = torch.ops.mkldnn._convolution_pointwise.binary(
            x, x, weight, conv.bias, *geometry, "add", None, None, [], None
        )
        return torch.relu_(added)
    return torch.ops.mkldnn._convolution_pointwise(x, weight, conv.bias, *geometry, "relu", [], None)


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
