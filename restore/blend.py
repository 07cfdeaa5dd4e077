"""Soft masks and pasting a restored face back into its (possibly upscaled) frame.

Two masks, both as in facexlib's ``FaceRestoreHelper.paste_faces_to_input_image``:

- square (default): the warped crop square, eroded by ``2 * upscale`` pixels to drop its black border,
  eroded again by ``2 * w_edge`` and Gaussian-blurred over ``2 * w_edge + 1`` pixels, where ``w_edge``
  is a twentieth of the square root of the face area (in output pixels);
- parsing: the face classes of a face-parsing map, blurred twice in the crop, its 10-pixel border
  zeroed, warped back to the frame.

The blend is ``mask * face + (1 - mask) * frame`` truncated to ``uint8`` as facexlib does. All work is
done inside the face's bounding region of the frame, so pixels outside that region (and wherever the
mask is 0) keep their exact input values.
"""

from __future__ import annotations

import cv2
import numpy as np

# Weight (0 or 255) of each of the 19 face-parsing classes in the blend mask (facexlib's MASK_COLORMAP:
# classes 1-13 and 15 are kept, background 0, class 14 and classes 16-18 are left out).
PARSING_CLASS_WEIGHTS = np.array(
    [0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 255, 0, 0, 0], dtype=np.float64
)
PARSING_BLUR_KSIZE = 101  # pixels (crop space), Gaussian kernel side, applied twice
PARSING_BLUR_SIGMA = 11  # pixels (crop space)
PARSING_BORDER = 10  # pixels (crop space) zeroed at each edge of the parsing mask
EDGE_FRACTION = 20  # w_edge = sqrt(face area in output pixels) // EDGE_FRACTION
REGION_MARGIN = 4  # pixels around the warped face kept in the work region beyond the blur reach


def parsing_face_mask(labels: np.ndarray, face_size: int | None = None) -> np.ndarray:
    """Soft face mask from a face-parsing map.

    ``labels``: ``(S, S)`` integer class map (0..18) of a restored crop. Returns ``(face_size, face_size)``
    (default ``(S, S)``) ``float64`` in ``[0, 1]``: face classes blurred twice, zero on a 10-pixel border,
    resized bilinearly when the crop size differs from the parsing size (as facexlib does).
    """
    mask = PARSING_CLASS_WEIGHTS[np.asarray(labels)]
    kernel = (PARSING_BLUR_KSIZE, PARSING_BLUR_KSIZE)
    mask = cv2.GaussianBlur(mask, kernel, PARSING_BLUR_SIGMA)
    mask = cv2.GaussianBlur(mask, kernel, PARSING_BLUR_SIGMA)
    border = PARSING_BORDER
    mask[:border, :] = 0
    mask[-border:, :] = 0
    mask[:, :border] = 0
    mask[:, -border:] = 0
    mask = mask / 255.0
    if face_size is not None and face_size != mask.shape[0]:
        mask = cv2.resize(mask, (face_size, face_size), interpolation=cv2.INTER_LINEAR)
    return mask


def paste_restored_face(
    frame: np.ndarray,
    face: np.ndarray,
    inverse: np.ndarray,
    upscale: int = 1,
    face_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Blend a restored crop back into a copy of ``frame`` (already at output size).

    ``frame``: ``(H, W, 3) uint8`` BGR output-size frame; ``face``: ``(S, S, 3) uint8`` BGR crop;
    ``inverse``: ``(2, 3)`` crop-to-output transform (:func:`restore.align.inverse_affine`);
    ``upscale``: output scale factor (sets the erosion of the square mask); ``face_mask``: ``(S, S)``
    float in ``[0, 1]`` from :func:`parsing_face_mask`, or ``None`` for the square soft mask.
    Returns a new ``(H, W, 3) uint8`` frame; pixels outside the face region are the input's.
    """
    out = frame.copy()
    paste_restored_face_into(out, face, inverse, upscale, face_mask)
    return out


def paste_restored_face_into(
    frame: np.ndarray,
    face: np.ndarray,
    inverse: np.ndarray,
    upscale: int = 1,
    face_mask: np.ndarray | None = None,
) -> None:
    """:func:`paste_restored_face` writing into ``frame`` itself (only its face region changes)."""
    size = face.shape[0]
    reach = _square_blur_reach(inverse, size) if face_mask is None else 0
    region = face_region(inverse, size, frame.shape[:2], reach + REGION_MARGIN + int(2 * upscale))
    if region is None:
        return
    top, bottom, left, right = region
    local = inverse.copy()
    local[:, 2] -= (left, top)
    dsize = (right - left, bottom - top)
    warped = cv2.warpAffine(face, local, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    if face_mask is None:
        weighted, soft = square_soft_mask(local, size, dsize, upscale)
        pasted = weighted[:, :, None] * warped
    else:
        soft = cv2.warpAffine(face_mask, local, dsize, flags=cv2.INTER_AREA)
        pasted = warped
    soft = soft[:, :, None]
    background = frame[top:bottom, left:right]
    frame[top:bottom, left:right] = (soft * pasted + (1 - soft) * background).astype(np.uint8)


def square_soft_mask(
    local: np.ndarray, size: int, dsize: tuple[int, int], upscale: int
) -> tuple[np.ndarray, np.ndarray]:
    """facexlib's default mask in a region: ``(eroded square, soft mask)``, each ``(h, w) float32``.

    ``local``: crop-to-region transform; ``dsize``: region ``(w, h)``. The face is weighted by the eroded
    square before blending, and blended with the soft mask.
    """
    square = cv2.warpAffine(np.ones((size, size), np.float32), local, dsize)
    erosion = int(2 * upscale)
    eroded = cv2.erode(square, np.ones((erosion, erosion), np.uint8))
    w_edge = int(np.sum(eroded) ** 0.5) // EDGE_FRACTION
    center = cv2.erode(eroded, np.ones((w_edge * 2, w_edge * 2), np.uint8))
    soft = cv2.GaussianBlur(center, (w_edge * 2 + 1, w_edge * 2 + 1), 0)
    return eroded, soft


def face_region(
    inverse: np.ndarray, size: int, frame_hw: tuple[int, int], margin: int
) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` of the frame that the warped ``size`` crop (plus ``margin`` pixels)
    can touch, clipped to the frame; ``None`` when the crop lands entirely outside it."""
    corners = np.array([[-1, -1, 1], [size, -1, 1], [-1, size, 1], [size, size, 1]], np.float64)
    points = corners @ inverse.T
    height, width = frame_hw
    left = max(int(np.floor(points[:, 0].min())) - margin, 0)
    right = min(int(np.ceil(points[:, 0].max())) + margin + 1, width)
    top = max(int(np.floor(points[:, 1].min())) - margin, 0)
    bottom = min(int(np.ceil(points[:, 1].max())) + margin + 1, height)
    if left >= right or top >= bottom:
        return None
    return top, bottom, left, right


def _square_blur_reach(inverse: np.ndarray, size: int) -> int:
    """Upper bound, in output pixels, of how far the square mask's blur spreads past the warped crop."""
    scale = float(np.sqrt(abs(np.linalg.det(inverse[:, :2]))))
    w_edge = int(size * scale + 2) // EDGE_FRACTION
    return 2 * w_edge + 3
