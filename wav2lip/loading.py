"""Load the released Wav2Lip checkpoints into eval-mode modules, refusing files of other models.

The official files wrap the weights as ``{'state_dict': ..., 'optimizer': ..., 'global_step': ...,
'global_epoch': ...}`` with or without DataParallel ``module.`` prefixes; bare state dicts load too.
Every file is read by :func:`pipeline.core.checkpoints.load_state_dict` (``weights_only=True``) and loaded
with ``strict=True``. A file that holds another network is recognised by its keys and shapes and
refused with a :class:`~pipeline.core.errors.WrongModelError` that names what the file is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from pipeline.core.checkpoints import load_state_dict
from pipeline.core.errors import WrongModelError
from wav2lip.models import SyncNet, Wav2Lip, Wav2LipDiscQual
from wav2lip.models.fusion import fold_batch_norms, store_in_bfloat16

GENERATOR = "wav2lip_generator"
SYNCNET = "syncnet_expert"
DISCRIMINATOR = "wav2lip_disc_qual"

MODEL_CLASSES: dict[str, Callable[[], nn.Module]] = {
    GENERATOR: Wav2Lip,
    SYNCNET: SyncNet,
    DISCRIMINATOR: Wav2LipDiscQual,
}

DESCRIPTIONS = {
    GENERATOR: "the Wav2Lip generator (wav2lip.pth / wav2lip_gan.pth)",
    SYNCNET: "the Wav2Lip lip-sync expert (lipsync_expert.pth)",
    DISCRIMINATOR: "the Wav2Lip visual-quality discriminator (visual_quality_disc.pth)",
}

# Other networks users may hand us by mistake, recognised by keys only they have.
OTHER_MODEL_HALLMARKS = [
    ("a GFPGAN face restorer (GFPGANv1.x.pth)", ("conv_body_first.weight", "stylegan_decoder")),
    ("a CodeFormer face restorer (codeformer.pth)", ("quantize.embedding.weight", "position_emb")),
    ("a RetinaFace face detector (detection_*.pth)", ("BboxHead.0.conv1x1.weight", "ClassHead.0")),
    ("an S3FD face detector (s3fd.pth)", ("conv1_1.weight", "fc7_mbox_conf.weight")),
    ("a face parsing network (parsing_parsenet.pth)", ("out_mask_conv.conv2d.weight", "body.0")),
    ("a Real-ESRGAN upscaler", ("conv_first.weight", "body.0.rdb1")),
]


@functools.cache
def expected_shapes(kind: str) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of the official state dict of ``kind`` (built on the meta device, no memory)."""
    with torch.device("meta"):
        module = MODEL_CLASSES[kind]()
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}


def identify_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Which Wav2Lip network a canonical state dict (no ``module.`` prefixes) holds.

    Returns ``"wav2lip_generator"``, ``"syncnet_expert"`` or ``"wav2lip_disc_qual"`` when the names and
    shapes match that network exactly, else ``None``.
    """
    shapes = {name: tuple(t.shape) for name, t in state_dict.items()}
    for kind in MODEL_CLASSES:
        if shapes == expected_shapes(kind):
            return kind
    return None


def describe_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """A human name for the network in ``state_dict`` (Wav2Lip's three or a few others), or ``None``."""
    kind = identify_checkpoint(state_dict)
    if kind is not None:
        return DESCRIPTIONS[kind]
    for description, hallmarks in OTHER_MODEL_HALLMARKS:
        if all(any(key.startswith(mark) for key in state_dict) for mark in hallmarks):
            return description
    return None


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Wav2Lip:
    """The Wav2Lip generator from ``wav2lip.pth`` / ``wav2lip_gan.pth``, in eval mode on ``device``."""
    return _load(path, GENERATOR, device)


def load_generator_for_inference(
    path: str | Path, device: str | torch.device = "cpu", precision: str = "fp32"
) -> nn.Module:
    """:func:`load_generator` in its inference form (see :mod:`wav2lip.models.fusion`): batch norms
    folded, each block one fused operation on the CPU; with ``precision`` "bf16" (resolved) on the CPU
    the weights are kept in bfloat16. On CUDA the weights stay float32 and autocast picks the precision.
    For inference only, not training."""
    model = fold_batch_norms(load_generator(path, device))
    if torch.device(device).type == "cpu" and precision == "bf16":
        store_in_bfloat16(model)
    return model


def load_syncnet(path: str | Path, device: str | torch.device = "cpu") -> SyncNet:
    """The lip-sync expert from ``lipsync_expert.pth``, in eval mode on ``device``."""
    return _load(path, SYNCNET, device)


def load_discriminator(path: str | Path, device: str | torch.device = "cpu") -> Wav2LipDiscQual:
    """The visual-quality discriminator from ``visual_quality_disc.pth``, in eval mode on ``device``."""
    return _load(path, DISCRIMINATOR, device)


def _load(path: str | Path, kind: str, device: str | torch.device) -> nn.Module:
    what = DESCRIPTIONS[kind].split(" (")[0].removeprefix("the ")
    state = load_state_dict(path, what)
    check_model(state, kind, path)
    with torch.device("meta"):  # no storage and no random init: the checkpoint's tensors are taken over
        module = MODEL_CLASSES[kind]()
    # assign=True rather than to_empty() + copy: to_empty imports sympy (0.35 s) through torch's refs.
    module.load_state_dict(_as_float32(state), strict=True, assign=True)
    return module.to(device).eval()


def _as_float32(state: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """Floating-point entries in float32 (a checkpoint re-saved in half precision loads like the
    official one; autocast runs half precision on CUDA)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def check_model(state_dict: Mapping[str, torch.Tensor], kind: str, path: str | Path) -> None:
    """Raise :class:`WrongModelError` unless ``state_dict`` is exactly the official ``kind``."""
    if identify_checkpoint(state_dict) == kind:
        return
    wanted = DESCRIPTIONS[kind]
    found = describe_checkpoint(state_dict)
    if found is not None:
        raise WrongModelError(f"{path} holds {found}, not {wanted}; pass the right file")
    raise WrongModelError(f"{path} is not {wanted}: {_mismatch(state_dict, expected_shapes(kind))}")


def _mismatch(state_dict: Mapping[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> str:
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (first {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (first {unexpected[0]})")
    if wrong:
        k = wrong[0]
        found = tuple(state_dict[k].shape)
        parts.append(f"{len(wrong)} shape mismatches (first {k}: {found} vs {expected[k]})")
    return "; ".join(parts) + " (a modified Wav2Lip variant or another network)"
