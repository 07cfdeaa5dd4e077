"""FFHQ alignment, its inverse (with facexlib's half-pixel offset when upscaling) and landmark smoothing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.faces.landmarks import smooth_landmarks
from restore.align import (
    CROP_BORDER_BGR,
    FFHQ_TEMPLATE_512,
    estimate_affine,
    face_template,
    inverse_affine,
    warp_face,
)
from tests.test_restore_support import one_torch_thread, synthetic_image


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    """``(2, 3)`` matrix of a rotation by ``degrees``, uniform ``scale`` and translation."""
    angle = np.deg2rad(degrees)
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


# Crop -> frame placement of a face in the test frames: 0.35 scale, tilted 8 degrees.
PLACEMENT = similarity(0.35, 8.0, 70.0, 40.0)


@pytest.fixture(scope="module")
def frame():
    return synthetic_image(260, 320, seed=2, sigma=4.0)


def test_template_is_facexlibs_512_template_and_scales():
    assert FFHQ_TEMPLATE_512.shape == (5, 2)
    # facexlib's FaceRestoreHelper face_template for 512 px (GFPGAN and CodeFormer align on it):
    # left eye, right eye, nose tip, left and right mouth corner, (x, y) pixels
    published = [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ]
    np.testing.assert_allclose(FFHQ_TEMPLATE_512, published, rtol=0, atol=1e-5)
    np.testing.assert_allclose(face_template(256), FFHQ_TEMPLATE_512 / 2)


def test_landmarks_on_the_template_give_the_identity():
    affine = estimate_affine(FFHQ_TEMPLATE_512.astype(np.float32))
    np.testing.assert_allclose(affine, [[1, 0, 0], [0, 1, 0]], atol=1e-4)


def test_estimate_recovers_a_known_similarity():
    landmarks = apply(PLACEMENT, FFHQ_TEMPLATE_512).astype(np.float32)
    affine = estimate_affine(landmarks)
    expected = cv2.invertAffineTransform(PLACEMENT)
    np.testing.assert_allclose(affine, expected, atol=2e-3)


def test_degenerate_landmarks_give_none():
    assert estimate_affine(np.full((5, 2), 10.0, np.float32)) is None
    nan = apply(PLACEMENT, FFHQ_TEMPLATE_512)
    nan[2] = np.nan
    assert estimate_affine(nan) is None


def test_crop_warped_back_reproduces_the_frame(frame):
    affine = estimate_affine(apply(PLACEMENT, FFHQ_TEMPLATE_512).astype(np.float32))
    crop = warp_face(frame, affine)
    assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8
    height, width = frame.shape[:2]
    back = cv2.warpAffine(crop, inverse_affine(affine, 1), (width, height))
    inside = cv2.warpAffine(np.ones((512, 512), np.float32), inverse_affine(affine, 1), (width, height))
    inside = cv2.erode(inside, np.ones((5, 5), np.uint8)) == 1
    inside &= cv2.warpAffine(np.ones((height, width), np.uint8), affine, (512, 512)).any()
    diff = np.abs(back.astype(int) - frame)[inside]
    assert inside.sum() > 5000
    assert diff.mean() < 1.0 and diff.max() <= 12


def test_crop_outside_the_frame_is_grey():
    frame = np.zeros((100, 100, 3), np.uint8)
    affine = estimate_affine(apply(similarity(0.3, 0.0, 60.0, 60.0), FFHQ_TEMPLATE_512).astype(np.float32))
    crop = warp_face(frame, affine)
    assert tuple(crop[-1, -1]) == CROP_BORDER_BGR  # bottom-right of the crop lies outside the frame
    assert tuple(crop[5, 5]) == (0, 0, 0)  # top-left of the crop is inside the (black) frame


def test_upscaled_inverse_has_facexlibs_offset_and_round_trips(frame):
    affine = estimate_affine(apply(PLACEMENT, FFHQ_TEMPLATE_512).astype(np.float32))
    plain = cv2.invertAffineTransform(affine)
    np.testing.assert_allclose(inverse_affine(affine, 1), plain)
    for upscale in (2, 4):
        expected = plain * upscale
        expected[:, 2] += 0.5 * upscale  # facexlib's extra_offset
        np.testing.assert_allclose(inverse_affine(affine, upscale), expected)
    crop = warp_face(frame, affine)
    height, width = frame.shape[:2]
    reference = cv2.resize(frame, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    inverse = inverse_affine(affine, 2)
    inside = cv2.warpAffine(np.ones((512, 512), np.float32), inverse, (2 * width, 2 * height))
    inside = cv2.erode(inside, np.ones((9, 9), np.uint8)) == 1
    back = cv2.warpAffine(crop, inverse, (2 * width, 2 * height))
    # facexlib's 0.5 * upscale offset leaves the face half an output pixel off the pixel-centre
    # convention (0.5 * (upscale - 1)); the error stays at the level of one bilinear resampling.
    assert np.abs(back.astype(int) - reference)[inside].mean() < 2.5


def test_smoothing_averages_a_centred_window():
    seq = np.zeros((5, 5, 2), np.float32)
    seq[:, :, 0] = np.array([0, 10, 20, 60, 40], np.float32)[:, None]
    out = smooth_landmarks(seq, 3)
    np.testing.assert_allclose(out[:, 0, 0], [5, 10, 30, 40, 50])  # ends average what exists
    assert out.dtype == np.float32 and out.shape == seq.shape
    np.testing.assert_allclose(smooth_landmarks(seq, 4)[:, 0, 0], smooth_landmarks(seq, 5)[:, 0, 0])


def test_smoothing_keeps_still_and_linear_tracks():
    still = np.tile(FFHQ_TEMPLATE_512.astype(np.float32), (7, 1, 1))
    np.testing.assert_allclose(smooth_landmarks(still, 5), still, rtol=1e-6)
    ramp = still + np.arange(7, dtype=np.float32)[:, None, None] * 3
    np.testing.assert_allclose(smooth_landmarks(ramp, 5)[2:5], ramp[2:5], rtol=1e-5)


def test_smoothing_skips_missing_faces_and_window_one_is_a_copy():
    seq = np.stack([np.full((5, 2), v, np.float32) for v in (0.0, 30.0, np.nan, 90.0)])
    out = smooth_landmarks(seq, 3)
    assert np.isnan(out[2]).all()
    np.testing.assert_allclose(out[1], 15.0)  # neighbours 0 and 30; the missing frame is ignored
    np.testing.assert_allclose(out[3], 90.0)
    copy = smooth_landmarks(seq, 1)
    np.testing.assert_array_equal(copy, seq)
    assert copy is not seq


def test_smoothing_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(N, 5, 2\)"):
        smooth_landmarks(np.zeros((4, 68, 2)), 3)
