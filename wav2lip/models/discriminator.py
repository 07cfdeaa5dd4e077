"""The visual-quality discriminator (Wav2Lip_disc_qual), parameter-compatible with visual_quality_disc.pth.

It judges only the lower half of each face (where the generator draws the mouth) and returns the
probability that the face is real, or (``logits=True``) the logit of it: training computes its losses from
the logits, since under float16 autocast the sigmoid saturates to exactly 0 or 1 and BCE's gradient turns
into inf/NaN (every step then skipped by the loss scaler).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from wav2lip.models.blocks import ConvLeakyReLU, ConvSpec

# One list per resolution; the comment is the output size (height x width) for a 48x96 lower half.
FACE_ENCODER_SPECS = [
    [ConvSpec(3, 32, 7, 1, 3)],  # 48x96
    [ConvSpec(32, 64, 5, (1, 2), 2), ConvSpec(64, 64, 5, 1, 2)],  # 48x48
    [ConvSpec(64, 128, 5, 2, 2), ConvSpec(128, 128, 5, 1, 2)],  # 24x24
    [ConvSpec(128, 256, 5, 2, 2), ConvSpec(256, 256, 5, 1, 2)],  # 12x12
    [ConvSpec(256, 512, 3, 2, 1), ConvSpec(512, 512, 3, 1, 1)],  # 6x6
    [ConvSpec(512, 512, 3, 2, 1), ConvSpec(512, 512, 3, 1, 1)],  # 3x3
    [ConvSpec(512, 512, 3, 1, 0), ConvSpec(512, 512, 1, 1, 0)],  # 1x1
]


class Wav2LipDiscQual(nn.Module):
    """The official Wav2Lip_disc_qual architecture; ``state_dict()`` matches visual_quality_disc.pth."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(
            nn.Sequential(*(ConvLeakyReLU(s) for s in specs)) for specs in FACE_ENCODER_SPECS
        )
        self.binary_pred = nn.Sequential(nn.Conv2d(512, 1, kernel_size=1, stride=1, padding=0), nn.Sigmoid())

    @staticmethod
    def to_2d(face_sequences: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> ``(T*B, C, H, W)``, time-major like the official code."""
        return torch.cat([face_sequences[:, :, t] for t in range(face_sequences.size(2))], dim=0)

    @staticmethod
    def lower_half(faces: torch.Tensor) -> torch.Tensor:
        """Rows ``H//2 ..`` of ``(N, C, H, W)`` faces."""
        return faces[:, :, faces.size(2) // 2 :]

    def forward(self, face_sequences: torch.Tensor, logits: bool = False) -> torch.Tensor:
        """``faces (B, 3, T, 96, 96)`` BGR in [0, 1] -> ``(T*B, 1)`` probability that each face is real
        (``logits=True``: its logit, before the final sigmoid).

        Row order is time-major: row ``t*B + b`` is clip ``b`` at step ``t``.
        """
        x = self.lower_half(self.to_2d(face_sequences))
        for block in self.face_encoder_blocks:
            x = block(x)
        conv, sigmoid = self.binary_pred
        out = conv(x).view(len(x), -1)
        return out if logits else sigmoid(out)

    def perceptual_forward(self, false_face_sequences: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial loss: binary cross-entropy of ``forward(faces)`` against "real",
        computed from the logits in float32 (finite gradients under autocast).

        ``faces (B, 3, T, 96, 96)`` generated BGR in [0, 1] -> scalar float32 loss tensor.
        """
        logit = self.forward(false_face_sequences, logits=True)
        with torch.autocast(logit.device.type, enabled=False):
            logit = logit.float()
            return F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
