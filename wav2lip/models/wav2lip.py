"""The Wav2Lip generator (Prajwal et al., ACM MM 2020), parameter-compatible with wav2lip(_gan).pth.

A U-Net: a face encoder turns the 6-channel face input (masked target + reference) into a pyramid of
features down to 1x1; an audio encoder turns one (80, 16) mel window into a 512-d embedding; the decoder
upsamples the embedding back to 96x96, concatenating the face feature of matching size after every step;
a 1x1 head with a sigmoid gives the BGR face in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from wav2lip.audio import N_MELS
from wav2lip.models.blocks import AUDIO_TRUNK_SPECS, ConvBNReLU, ConvSpec, UpConvBNReLU, conv_stack, res

WAV2LIP_FACE_SIZE = 96  # pixels: the generator's fixed input and output side
FACE_CHANNELS = 6  # masked target BGR + reference BGR
MEL_BINS = N_MELS  # mel channels of the audio window

# Face encoder, one list per resolution; the comment is the output side in pixels.
FACE_ENCODER_SPECS = [
    [ConvSpec(6, 16, 7, 1, 3)],  # 96
    [ConvSpec(16, 32, 3, 2, 1), res(32), res(32)],  # 48
    [ConvSpec(32, 64, 3, 2, 1), res(64), res(64), res(64)],  # 24
    [ConvSpec(64, 128, 3, 2, 1), res(128), res(128)],  # 12
    [ConvSpec(128, 256, 3, 2, 1), res(256), res(256)],  # 6
    [ConvSpec(256, 512, 3, 2, 1), res(512)],  # 3
    [ConvSpec(512, 512, 3, 1, 0), ConvSpec(512, 512, 1, 1, 0)],  # 1
]

AUDIO_ENCODER_SPECS = AUDIO_TRUNK_SPECS + [ConvSpec(256, 512, 3, 1, 0), ConvSpec(512, 512, 1, 1, 0)]

# Decoder steps: (upsampling block or None for the 1x1 first step, residual channels, residual count).
# Input channels of each step = previous output + the skip feature concatenated after it.
DECODER_STEPS = [
    (None, 512, 0),  # 1x1 conv on the audio embedding
    (ConvSpec(1024, 512, 3, 1, 0), 512, 1),  # 1 -> 3
    (ConvSpec(1024, 512, 3, 2, 1), 512, 2),  # 3 -> 6
    (ConvSpec(768, 384, 3, 2, 1), 384, 2),  # 6 -> 12
    (ConvSpec(512, 256, 3, 2, 1), 256, 2),  # 12 -> 24
    (ConvSpec(320, 128, 3, 2, 1), 128, 2),  # 24 -> 48
    (ConvSpec(160, 64, 3, 2, 1), 64, 2),  # 48 -> 96
]


def _decoder_block(up: ConvSpec | None, channels: int, n_res: int) -> nn.Sequential:
    if up is None:
        return nn.Sequential(ConvBNReLU(ConvSpec(512, 512, 1, 1, 0)))
    output_padding = 1 if up.stride == 2 else 0  # doubles the side exactly
    blocks: list[nn.Module] = [UpConvBNReLU(up, output_padding)]
    blocks += [ConvBNReLU(res(channels)) for _ in range(n_res)]
    return nn.Sequential(*blocks)


class Wav2Lip(nn.Module):
    """The official generator architecture; ``state_dict()`` matches the released checkpoints."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(conv_stack(s) for s in FACE_ENCODER_SPECS)
        self.audio_encoder = conv_stack(AUDIO_ENCODER_SPECS)
        self.face_decoder_blocks = nn.ModuleList(_decoder_block(*step) for step in DECODER_STEPS)
        self.output_block = nn.Sequential(
            ConvBNReLU(ConvSpec(80, 32, 3, 1, 1)),
            nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0),
            nn.Sigmoid(),
        )

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        """Generate faces for mel windows.

        Single-frame form: ``audio (B, 1, 80, 16)`` mel in [-4, 4], ``faces (B, 6, 96, 96)`` float in
        [0, 1] (channels 0-2: target BGR with rows 48.. zeroed, 3-5: reference BGR) -> ``(B, 3, 96, 96)``
        BGR in [0, 1]. Training form: ``audio (B, T, 1, 80, 16)``, ``faces (B, 6, T, 96, 96)`` ->
        ``(B, 3, T, 96, 96)``; the T frames are processed independently.
        """
        if face_sequences.dim() == 5:
            return self._forward_sequences(audio_sequences, face_sequences)
        audio_embedding = self.audio_encoder(audio_sequences)  # (B, 512, 1, 1)
        skips = []
        x = face_sequences
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = audio_embedding
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        return self.output_block(x)

    def _forward_sequences(self, audio: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        # Frames are stacked time-major ((t0 of every clip), (t1 ...), ...) like the official code, so
        # batch statistics in training mode see the same batches as the released models did.
        batch, steps = faces.size(0), faces.size(2)
        flat_audio = torch.cat([audio[:, t] for t in range(steps)], dim=0)
        flat_faces = torch.cat([faces[:, :, t] for t in range(steps)], dim=0)
        out = self.forward(flat_audio, flat_faces)
        return torch.stack(torch.split(out, batch, dim=0), dim=2)
