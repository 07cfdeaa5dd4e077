"""Wav2Lip: networks, audio features, checkpoint loading and frame-level inference.

``from wav2lip import load_generator`` loads ``wav2lip.pth`` / ``wav2lip_gan.pth``
(``load_generator_for_inference`` in the faster form inference uses); the lip-sync stage of the
pipeline is :class:`wav2lip.inference.LipSyncer`.
"""

from wav2lip.loading import (
    describe_checkpoint,
    identify_checkpoint,
    load_discriminator,
    load_generator,
    load_generator_for_inference,
    load_syncnet,
)

__all__ = [
    "describe_checkpoint",
    "identify_checkpoint",
    "load_discriminator",
    "load_generator",
    "load_generator_for_inference",
    "load_syncnet",
]
