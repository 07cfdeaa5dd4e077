"""Face restoration: GFPGAN / CodeFormer on FFHQ-aligned crops, and seamless paste-back.

Public API:
- :func:`load_restorer` -> :class:`FaceRestorer` (``restore_aligned(faces, fidelity)``);
- :func:`estimate_affine`, :func:`warp_face`, :func:`inverse_affine` (alignment);
- :func:`paste_restored_face`, :func:`parsing_face_mask` (blending);
- :func:`load_parser` -> :class:`FaceParser`, :func:`load_bg_upsampler` -> :class:`BackgroundUpsampler`;
- :class:`FaceRestoreStage` and :func:`build_stage` (the pipeline stage).

See restore/README.md for the flicker trade-offs.
"""

import importlib
from typing import Any

# Names resolved on first use (PEP 562), so that ``import restore.config`` (every run reads the config)
# does not import spandrel and torchvision (~170 MB and seconds of start-up) when no face is restored.
_HOMES = {
    "FFHQ_TEMPLATE_512": "restore.align",
    "estimate_affine": "restore.align",
    "inverse_affine": "restore.align",
    "warp_face": "restore.align",
    "parsing_face_mask": "restore.blend",
    "paste_restored_face": "restore.blend",
    "paste_restored_face_into": "restore.blend",
    "RESTORE_FACE_SIZE": "restore.convert",
    "faces_to_tensor": "restore.convert",
    "tensor_to_faces": "restore.convert",
    "FaceParser": "restore.parsing",
    "load_parser": "restore.parsing",
    "FaceRestorer": "restore.restorers",
    "load_restorer": "restore.restorers",
    "FaceRestoreStage": "restore.stage",
    "build_stage": "restore.stage",
    "BackgroundUpsampler": "restore.upsample",
    "load_bg_upsampler": "restore.upsample",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'restore' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "RESTORE_FACE_SIZE",
    "FFHQ_TEMPLATE_512",
    "BackgroundUpsampler",
    "FaceParser",
    "FaceRestoreStage",
    "FaceRestorer",
    "build_stage",
    "estimate_affine",
    "faces_to_tensor",
    "inverse_affine",
    "load_bg_upsampler",
    "load_parser",
    "load_restorer",
    "parsing_face_mask",
    "paste_restored_face",
    "paste_restored_face_into",
    "tensor_to_faces",
    "warp_face",
]


def __dir__() -> list[str]:
    return sorted(__all__)
