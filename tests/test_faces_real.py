"""Detection, tracking and landmark alignment on the real example with a real, trained RetinaFace.

The weights are ``../shared/weights/detection_mobilenet0.25_Final.pth`` beside the clone (see its
README there); never committed into the project. Without that folder these tests are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.faces.config import DetectConfig
from pipeline.faces.detector import load_detector, track_faces
from pipeline.faces.landmarks import prepare_landmarks
from restore.align import estimate_affine, face_template
from tests.media_fixtures import read_all_frames

REPO = Path(__file__).resolve().parent.parent
REAL_DETECTOR = REPO.parent / "shared" / "weights" / "detection_mobilenet0.25_Final.pth"
EXAMPLE = REPO / "examples" / "face.mp4"
LEFT_EYE, RIGHT_EYE, NOSE, MOUTH_LEFT, MOUTH_RIGHT = range(5)

pytestmark = [
    pytest.mark.real_weights,
    pytest.mark.skipif(
        not REAL_DETECTOR.is_file(), reason=f"real RetinaFace weights not found at {REAL_DETECTOR}"
    ),
]


@pytest.fixture(scope="module")
def detector():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two spinning threads run many times slower on a shared 2-core machine
    yield load_detector(DetectConfig(model="retinaface_mobile0.25"), REAL_DETECTOR, "cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return read_all_frames(EXAMPLE)


def test_the_face_is_found_in_every_frame_of_the_example(detector, frames):
    per_frame = detector.detect(frames)
    assert len(per_frame) == len(frames) == 100
    assert all(faces and faces[0].score > detector.config.score_threshold for faces in per_frame)
    assert all(len(faces) == 1 for faces in per_frame)  # one person, no false faces
    heights = [faces[0].height for faces in per_frame]
    assert min(heights) > 60 and max(heights) < 320  # a head-and-shoulders portrait in 320x320


def test_mouth_landmarks_sit_where_the_mouth_is(detector, frames):
    for index, faces in enumerate(detector.detect(frames)):
        face = faces[0]
        points = face.landmarks
        centre_x, centre_y = (face.left + face.right) / 2, (face.top + face.bottom) / 2
        for corner in (MOUTH_LEFT, MOUTH_RIGHT):  # inside the lower half of the box
            x, y = points[corner]
            assert face.left < x < face.right and centre_y < y < face.bottom, index
        assert points[MOUTH_LEFT, 0] < centre_x < points[MOUTH_RIGHT, 0], index
        assert points[LEFT_EYE, 0] < points[NOSE, 0] < points[RIGHT_EYE, 0], index
        assert max(points[LEFT_EYE, 1], points[RIGHT_EYE, 1]) < points[NOSE, 1], index
        assert points[NOSE, 1] < min(points[MOUTH_LEFT, 1], points[MOUTH_RIGHT, 1]), index


def test_tracked_landmarks_align_onto_the_restoration_template(detector, frames):
    track = track_faces([frames[i : i + 25] for i in range(0, len(frames), 25)], detector,
                        detector.config, frames.shape[1:3], progress=False)  # fmt: skip
    assert track.frames_without_face == 0 and len(track.faces) == len(frames)
    template = face_template()
    for face in prepare_landmarks(track, window=3).faces:
        affine = estimate_affine(face.landmarks)
        assert affine is not None
        mapped = np.c_[face.landmarks, np.ones(5)] @ affine.T
        # a real face fits the FFHQ five-point template closely (512-pixel crop)
        assert np.abs(mapped - template).max() < 40
