"""The colour lip-sync expert (SyncNet_color), parameter-compatible with lipsync_expert.pth.

It embeds five consecutive lower-half faces and the matching (80, 16) mel window into one 512-d space;
the cosine similarity of the two embeddings says how well lips and speech agree.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from wav2lip.models.blocks import AUDIO_TRUNK_SPECS, ConvSpec, conv_stack, res

SYNCNET_T = 5  # consecutive video frames per face input
SYNC_FACE_CHANNELS = 3 * SYNCNET_T  # BGR of each frame stacked along channels
SYNC_FACE_HEIGHT = 48  # pixels: lower half of a 96x96 face
SYNC_FACE_WIDTH = 96  # pixels
EMBEDDING_DIM = 512

FACE_ENCODER_SPECS = [
    ConvSpec(15, 32, 7, 1, 3),  # 48x96
    ConvSpec(32, 64, 5, (1, 2), 1),  # 46x47
    res(64),
    res(64),
    ConvSpec(64, 128, 3, 2, 1),  # 23x24
    res(128),
    res(128),
    res(128),
    ConvSpec(128, 256, 3, 2, 1),  # 12x12
    res(256),
    res(256),
    ConvSpec(256, 512, 3, 2, 1),  # 6x6
    res(512),
    res(512),
    ConvSpec(512, 512, 3, 2, 1),  # 3x3
    ConvSpec(512, 512, 3, 1, 0),  # 1x1
    ConvSpec(512, 512, 1, 1, 0),
]

AUDIO_ENCODER_SPECS = AUDIO_TRUNK_SPECS + [res(256), ConvSpec(256, 512, 3, 1, 0), ConvSpec(512, 512, 1, 1, 0)]


class SyncNet(nn.Module):
    """The official SyncNet_color architecture; ``state_dict()`` matches lipsync_expert.pth."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder = conv_stack(FACE_ENCODER_SPECS)
        self.audio_encoder = conv_stack(AUDIO_ENCODER_SPECS)

    def forward(
        self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed ``audio (B, 1, 80, 16)`` mel in [-4, 4] and ``faces (B, 15, 48, 96)`` float in [0, 1]
        (five lower-half BGR faces stacked along channels, oldest first).

        Returns ``(audio_embedding, face_embedding)``, each ``(B, 512)`` float with unit L2 norm.
        """
        face_embedding = self.face_encoder(face_sequences).flatten(1)
        audio_embedding = self.audio_encoder(audio_sequences).flatten(1)
        return F.normalize(audio_embedding, p=2, dim=1), F.normalize(face_embedding, p=2, dim=1)
