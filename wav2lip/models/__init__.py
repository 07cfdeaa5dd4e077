"""Wav2Lip's networks, parameter-compatible with the released checkpoints."""

from wav2lip.models.discriminator import Wav2LipDiscQual
from wav2lip.models.syncnet import SyncNet
from wav2lip.models.wav2lip import Wav2Lip

__all__ = ["SyncNet", "Wav2Lip", "Wav2LipDiscQual"]
