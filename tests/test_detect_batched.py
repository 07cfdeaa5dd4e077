"""Batched detection post-processing: one decode, one batched NMS and one copy per batch give exactly
the boxes, scores and landmarks of the per-frame path (mask, ``torchvision.ops.nms``, copy per frame)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from facexlib.detection import retinaface_utils

from pipeline.faces.config import DetectConfig
from pipeline.faces.detector import (
    DETECTION_COLUMNS,
    N_LANDMARKS,
    FaceDetector,
    decode_detections,
    downscale_frames,
    load_detector,
    retinaface_priors,
)
from tests.test_faces import calibrated_retinaface, synthetic_image

REPO = Path(__file__).resolve().parent.parent
REAL_DETECTOR = REPO.parent / "shared" / "weights" / "detection_mobilenet0.25_Final.pth"
EXAMPLE = REPO / "examples" / "face.mp4"


def per_frame_reference(loc, scores, landmarks, priors, variance, frame_size, threshold, iou=0.4):
    """The detector's former post-processing: per frame a mask, a plain NMS and a copy to the CPU."""
    height, width = frame_size
    scale = torch.tensor([width, height], dtype=torch.float32)
    boxes = retinaface_utils.batched_decode(loc, priors[None], list(variance)) * scale.repeat(2)
    points = retinaface_utils.batched_decode_landm(landmarks, priors[None], list(variance))
    points = points * scale.repeat(N_LANDMARKS)
    results = []
    for frame_boxes, frame_scores, frame_points in zip(boxes, scores[:, :, 1], points):
        keep = frame_scores > threshold
        frame_boxes, frame_scores, frame_points = frame_boxes[keep], frame_scores[keep], frame_points[keep]
        order = torchvision.ops.nms(frame_boxes, frame_scores, iou)
        rows = torch.cat([frame_boxes, frame_scores[:, None], frame_points], dim=1)[order]
        results.append(rows.numpy().astype(np.float32).reshape(-1, DETECTION_COLUMNS))
    return results


def network_outputs(detector: FaceDetector, frames: np.ndarray):
    small = downscale_frames(frames, detector.config.detect_max_side)
    loc, scores, landmarks = detector._forward(small)
    return loc, scores, landmarks, detector._priors_for(small.shape[1:3])


def assert_same_detections(ours: list[np.ndarray], reference: list[np.ndarray]) -> None:
    assert len(ours) == len(reference)
    for rows, expected in zip(ours, reference):
        assert rows.dtype == np.float32 and rows.shape == expected.shape
        np.testing.assert_array_equal(rows, expected)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # two spinning threads run many times slower on the shared 2-core machine
    yield
    torch.set_num_threads(previous)


def test_identical_frames_do_not_suppress_each_other_and_empty_frames_stay_empty():
    gen = torch.Generator().manual_seed(3)
    priors = retinaface_priors({"min_sizes": [[16, 32]], "steps": [8], "variance": [0.1, 0.2],
                                "clip": False}, (64, 64))  # fmt: skip
    n_priors = len(priors)
    loc = torch.randn(1, n_priors, 4, generator=gen).repeat(4, 1, 1)
    landmarks = torch.randn(1, n_priors, 10, generator=gen).repeat(4, 1, 1)
    face = torch.rand(1, n_priors, generator=gen).repeat(4, 1)
    face[1] = 0.1  # frame 1: nothing above the threshold
    scores = torch.stack([1 - face, face], dim=2)
    args = (loc, scores, landmarks, priors, (0.1, 0.2), (64, 64), 0.5)
    ours = decode_detections(*args)
    assert_same_detections(ours, per_frame_reference(*args))
    assert ours[1].shape == (0, DETECTION_COLUMNS)
    assert len(ours[0]) > 5  # overlapping boxes were suppressed within the frame, not across frames
    np.testing.assert_array_equal(ours[0], ours[2])
    np.testing.assert_array_equal(ours[0], ours[3])


@pytest.mark.parametrize("network_name", ["resnet50", "mobile0.25"])
def test_batched_decoding_equals_per_frame_on_a_seeded_network(network_name):
    network = calibrated_retinaface(network_name)
    detector = FaceDetector(network, dict(network.cfg), DetectConfig(score_threshold=0.5), "cpu")
    frames = np.stack([synthetic_image(seed) for seed in range(4)])
    loc, scores, landmarks, priors = network_outputs(detector, frames)
    args = (loc, scores, landmarks, priors, tuple(network.cfg["variance"]), (120, 160), 0.5)
    ours = decode_detections(*args)
    assert sum(len(rows) for rows in ours) >= 80  # a real comparison, not empty lists
    assert_same_detections(ours, per_frame_reference(*args))


@pytest.mark.real_weights
@pytest.mark.skipif(not REAL_DETECTOR.is_file(), reason=f"real RetinaFace weights not at {REAL_DETECTOR}")
@pytest.mark.skipif(not EXAMPLE.is_file(), reason=f"example clip not at {EXAMPLE}")
def test_batched_decoding_equals_per_frame_on_the_real_detector_and_example():
    from tests.media_fixtures import read_all_frames

    cfg = DetectConfig(model="retinaface_mobile0.25", score_threshold=0.02)  # many overlapping boxes
    detector = load_detector(cfg, REAL_DETECTOR, "cpu")
    frames = read_all_frames(EXAMPLE)[::12]
    loc, scores, landmarks, priors = network_outputs(detector, frames)
    variance = tuple(detector.anchor_cfg["variance"])
    args = (loc, scores, landmarks, priors, variance, frames.shape[1:3], cfg.score_threshold)
    ours = decode_detections(*args)
    assert len(ours) == len(frames) and all(len(rows) >= 1 for rows in ours)
    assert_same_detections(ours, per_frame_reference(*args))
    assert_same_detections(detector.detect_raw(frames), ours)
