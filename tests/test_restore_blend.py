"""Paste-back equals facexlib's full-frame paste_faces_to_input_image; nothing outside the mask moves."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from restore.align import FFHQ_TEMPLATE_512, estimate_affine, inverse_affine
from restore.blend import face_region, parsing_face_mask, paste_restored_face
from tests.test_restore_align import apply, similarity
from tests.test_restore_support import one_torch_thread, synthetic_image


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


# Our region-limited warps run at other pixel coordinates than facexlib's full-frame ones, so OpenCV's
# fixed-point bilinear weights (steps of 1/32) can round differently on a few pixels: a step changes a
# pixel by 1/32 of the difference between its neighbours, a few grey levels at most on sharp texture.
REGION_TOLERANCE_LEVELS = 4
REGION_TOLERANCE_SHARE = 0.001


def facexlib_square_paste(frame_up, face, inverse, upscale):
    """facexlib paste_faces_to_input_image (use_parse=False) for one face, on the whole frame."""
    h_up, w_up = frame_up.shape[:2]
    inv_restored = cv2.warpAffine(face, inverse, (w_up, h_up))
    mask = np.ones(face.shape[:2], dtype=np.float32)
    inv_mask = cv2.warpAffine(mask, inverse, (w_up, h_up))
    inv_mask_erosion = cv2.erode(inv_mask, np.ones((int(2 * upscale), int(2 * upscale)), np.uint8))
    pasted_face = inv_mask_erosion[:, :, None] * inv_restored
    total_face_area = np.sum(inv_mask_erosion)
    w_edge = int(total_face_area**0.5) // 20
    erosion_radius = w_edge * 2
    inv_mask_center = cv2.erode(inv_mask_erosion, np.ones((erosion_radius, erosion_radius), np.uint8))
    blur_size = w_edge * 2
    inv_soft_mask = cv2.GaussianBlur(inv_mask_center, (blur_size + 1, blur_size + 1), 0)[:, :, None]
    out = inv_soft_mask * pasted_face + (1 - inv_soft_mask) * frame_up
    return out.astype(np.uint8), inv_soft_mask[:, :, 0]


def facexlib_parse_mask(labels):
    """The mask part of facexlib's use_parse branch (before the warp)."""
    mask = np.zeros(labels.shape)
    colormap = [0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 255, 0, 0, 0]
    for idx, color in enumerate(colormap):
        mask[labels == idx] = color
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    thres = 10
    mask[:thres, :] = 0
    mask[-thres:, :] = 0
    mask[:, :thres] = 0
    mask[:, -thres:] = 0
    return mask / 255.0


def facexlib_parse_paste(frame_up, face, inverse, labels):
    h_up, w_up = frame_up.shape[:2]
    inv_restored = cv2.warpAffine(face, inverse, (w_up, h_up))
    mask = cv2.resize(facexlib_parse_mask(labels), face.shape[:2])
    mask = cv2.warpAffine(mask, inverse, (w_up, h_up), flags=3)
    soft = mask[:, :, None]
    return (soft * inv_restored + (1 - soft) * frame_up).astype(np.uint8), mask


def placed_face(scale, degrees, tx, ty):
    affine = estimate_affine(apply(similarity(scale, degrees, tx, ty), FFHQ_TEMPLATE_512).astype(np.float32))
    return affine


@pytest.fixture(scope="module")
def face():
    return synthetic_image(512, 512, seed=21, sigma=5.0)


@pytest.mark.parametrize(
    ("upscale", "placement"),
    [(1, (0.4, 12.0, 60.0, 30.0)), (2, (0.3, -20.0, 120.0, 50.0)), (1, (0.5, 5.0, -60.0, 150.0))],
)
def test_square_paste_matches_facexlib(face, upscale, placement):
    frame = synthetic_image(280, 300, seed=4, sigma=2.0)
    frame_up = cv2.resize(frame, (300 * upscale, 280 * upscale), interpolation=cv2.INTER_LANCZOS4)
    inverse = inverse_affine(placed_face(*placement), upscale)
    expected, soft = facexlib_square_paste(frame_up, face, inverse, upscale)
    ours = paste_restored_face(frame_up, face, inverse, upscale)
    diff = np.abs(ours.astype(int) - expected)
    assert diff.max() <= REGION_TOLERANCE_LEVELS and np.mean(diff > 0) < REGION_TOLERANCE_SHARE
    assert np.mean(ours != frame_up) > 0.05  # the face really was pasted
    np.testing.assert_array_equal(ours[soft == 0], frame_up[soft == 0])  # outside the mask: untouched


def test_paste_leaves_the_input_and_everything_outside_the_mask_bit_identical(face):
    frame = synthetic_image(200, 240, seed=8)
    before = frame.copy()
    inverse = inverse_affine(placed_face(0.25, 0.0, 50.0, 20.0), 1)
    ours = paste_restored_face(frame, face, inverse, 1)
    np.testing.assert_array_equal(frame, before)
    _, soft = facexlib_square_paste(frame, face, inverse, 1)
    changed = np.any(ours != frame, axis=2)
    assert changed.any() and not np.any(changed & (soft == 0))
    top, bottom, left, right = face_region(inverse, 512, frame.shape[:2], 0)
    outside = np.ones(frame.shape[:2], bool)
    outside[top:bottom, left:right] = False
    np.testing.assert_array_equal(ours[outside], frame[outside])


def test_face_entirely_outside_the_frame_changes_nothing(face):
    frame = synthetic_image(100, 100, seed=9)
    inverse = inverse_affine(placed_face(0.2, 0.0, 400.0, 400.0), 1)
    np.testing.assert_array_equal(paste_restored_face(frame, face, inverse, 1), frame)


def test_parsing_mask_matches_facexlib():
    rng = np.random.default_rng(0)
    labels = cv2.resize(
        rng.integers(0, 19, (32, 32)).astype(np.uint8), (512, 512), interpolation=cv2.INTER_NEAREST
    )
    ours = parsing_face_mask(labels.astype(np.int64))
    expected = facexlib_parse_mask(labels)
    np.testing.assert_array_equal(ours, expected)
    assert ours.dtype == np.float64 and ours.min() >= 0 and ours.max() <= 1
    assert np.all(ours[:10] == 0) and np.all(ours[:, -10:] == 0) and ours.max() > 0.5
    small = parsing_face_mask(labels, 128)
    np.testing.assert_array_equal(small, cv2.resize(expected, (128, 128)))


def test_parsing_paste_matches_facexlib(face):
    labels = np.zeros((512, 512), np.int64)
    labels[100:420, 120:400] = 1  # skin
    labels[300:360, 200:320] = 12  # upper lip: kept
    labels[430:, :] = 14  # class 14: left out
    frame = synthetic_image(260, 260, seed=10)
    inverse = inverse_affine(placed_face(0.35, 7.0, 40.0, 30.0), 1)
    expected, mask = facexlib_parse_paste(frame, face, inverse, labels)
    ours = paste_restored_face(frame, face, inverse, 1, parsing_face_mask(labels))
    diff = np.abs(ours.astype(int) - expected)
    assert diff.max() <= REGION_TOLERANCE_LEVELS and np.mean(diff > 0) < REGION_TOLERANCE_SHARE
    np.testing.assert_array_equal(ours[mask == 0], frame[mask == 0])
    assert np.mean(mask > 0) > 0.05
