"""Face restoration: GFPGAN / CodeFormer on FFHQ-aligned crops, and seamless paste-back.

Public API:
- :func:`load_restorer` -> :class:`FaceRestorer` (``restore_aligned(faces, fidelity)``);
- :func:`estimate_affine`, :func:`warp_face`, :func:`inverse_affine` (alignment);
- :func:`paste_restored_face`, :func:`parsing_face_mask` (blending);
- :func:`load_parser` -> :class:`FaceParser`, :func:`load_bg_upsampler` -> :class:`BackgroundUpsampler`;
- :class:`FaceRestoreStage` and :func:`build_stage` (the pipeline stage).

See restore/README.md for the flicker trade-offs.
"""

from restore.align import FFHQ_TEMPLATE_512, estimate_affine, inverse_affine, warp_face
from restore.blend import parsing_face_mask, paste_restored_face, paste_restored_face_into
from restore.convert import RESTORE_FACE_SIZE, faces_to_tensor, tensor_to_faces
from restore.parsing import FaceParser, load_parser
from restore.restorers import FaceRestorer, load_restorer
from restore.stage import FaceRestoreStage, build_stage
from restore.upsample import BackgroundUpsampler, load_bg_upsampler

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
