"""FFHQ alignment from five landmarks, and its inverse for pasting faces back.

The geometry is facexlib's ``FaceRestoreHelper`` (used by the official GFPGAN and CodeFormer tools):
a similarity transform (rotation, uniform scale, translation) estimated with
``cv2.estimateAffinePartial2D(..., method=cv2.LMEDS)`` from the five detected points onto the FFHQ
template of a 512x512 face; the crop is warped bilinearly with a constant grey border; the inverse
transform is scaled by the output upscale factor and, when upscaling, shifted by half an output pixel.

Landmarks are ``(5, 2)`` float ``(x, y)`` frame pixels in RetinaFace order: left eye, right eye, nose,
left mouth corner, right mouth corner.
"""

from __future__ import annotations

import cv2
import numpy as np

from restore.convert import RESTORE_FACE_SIZE

# Five landmarks of an FFHQ-aligned 512x512 face, (x, y) pixels (facexlib's face_template for 512).
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)
CROP_BORDER_BGR = (135, 133, 132)  # grey that fills crop pixels outside the frame (facexlib's value)


def face_template(face_size: int = RESTORE_FACE_SIZE) -> np.ndarray:
    """``(5, 2) float64`` template landmarks for a ``face_size`` x ``face_size`` crop."""
    return FFHQ_TEMPLATE_512 * (face_size / 512.0)


def estimate_affine(landmarks: np.ndarray, face_size: int = RESTORE_FACE_SIZE) -> np.ndarray | None:
    """``(2, 3) float64`` similarity transform mapping frame pixels onto the aligned crop.

    ``landmarks``: ``(5, 2)`` frame pixels. Returns ``None`` when the points are degenerate (e.g. all equal
    or not finite) and no transform can be estimated.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    if not np.all(np.isfinite(points)):
        return None
    affine, _ = cv2.estimateAffinePartial2D(points, face_template(face_size), method=cv2.LMEDS)
    if affine is None or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:, :2])) < 1e-12:
        return None
    return affine


def warp_face(frame: np.ndarray, affine: np.ndarray, face_size: int = RESTORE_FACE_SIZE) -> np.ndarray:
    """Aligned crop: ``frame`` ``(H, W, 3) uint8`` -> ``(face_size, face_size, 3) uint8`` (bilinear)."""
    return cv2.warpAffine(
        frame,
        affine,
        (face_size, face_size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=CROP_BORDER_BGR,
    )


def inverse_affine(affine: np.ndarray, upscale: int = 1) -> np.ndarray:
    """``(2, 3) float64`` transform from crop pixels to pixels of the ``upscale``-times larger frame.

    Like facexlib, the inverse is multiplied by ``upscale`` and, for ``upscale > 1``, shifted by
    ``0.5 * upscale`` pixels along both axes for a more precise back alignment.
    """
    inverse = cv2.invertAffineTransform(affine) * upscale
    if upscale > 1:
        inverse[:, 2] += 0.5 * upscale
    return inverse
