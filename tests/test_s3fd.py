"""S3FD, the official preprocessing's face detector: the released layout loads strictly, the box
decoding is checked against boxes encoded by hand, and a seeded network runs through detection
(tiny frames, CPU, a few seconds)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from pipeline.core.config_io import REPO_ROOT, WEIGHTS_DIR
from pipeline.core.errors import WrongModelError
from pipeline.core.media import read_first_frame
from pipeline.faces.config import DetectConfig
from pipeline.faces.detector import load_detector
from pipeline.faces.s3fd import S3FDDetector, S3FDNetwork
from pipeline.faces.s3fd_boxes import (
    S3FD_STRIDES,
    detections_to_faces,
    frame_candidates,
    frame_detections,
    head_anchors,
    nms_order,
    s3fd_input,
)
from tests.conftest import load_layout
from tests.weights_fixtures import WRAPPERS, seeded_layout_state_dict

S3FD_CONFIG = DetectConfig(model="s3fd", score_threshold=0.5, detect_max_side=10_000, batch_size=4)


def _seeded_checkpoint(path, face_bias: float = 0.0):
    """The seeded official layout; ``face_bias`` raises every head's face logit so that random
    weights report faces."""
    state = seeded_layout_state_dict("s3fd", seed=3)
    for key in state:
        if key.endswith("_mbox_conf.bias"):
            state[key][-1] += face_bias
    torch.save(WRAPPERS["s3fd"](state), path)
    return path


@pytest.fixture(scope="module")
def face_reporting_detector(tmp_path_factory) -> S3FDDetector:
    path = _seeded_checkpoint(tmp_path_factory.mktemp("s3fd") / "s3fd.pth", face_bias=2.0)
    detector = load_detector(S3FD_CONFIG, path, "cpu")
    assert isinstance(detector, S3FDDetector)
    return detector


# ---------------------------------------------------------------- network and checkpoint


def test_network_has_the_released_layout_and_loads_it_strictly(tmp_path):
    layout = load_layout("s3fd")
    state = S3FDNetwork().state_dict()
    assert sorted(state) == sorted(layout)
    assert all(list(state[k].shape) == spec["shape"] for k, spec in layout.items())
    path = _seeded_checkpoint(tmp_path / "s3fd.pth")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    detector = load_detector(S3FD_CONFIG, path, "cpu")
    loaded = detector.network.state_dict()
    assert not detector.network.training
    assert all(torch.equal(saved[k], loaded[k]) for k in layout)


def test_network_output_shapes_per_head():
    """Heads at strides 4 .. 128; fc7's map is 4 cells wider than H/32 (fc6 padded by 3, no dilation)."""
    torch.manual_seed(0)
    with torch.inference_mode():
        outputs = S3FDNetwork().eval()(torch.zeros(1, 3, 128, 128))
    assert [tuple(s.shape) for s, _ in outputs] == [
        (1, 2, 32, 32), (1, 2, 16, 16), (1, 2, 8, 8), (1, 2, 8, 8), (1, 2, 4, 4), (1, 2, 2, 2),
    ]  # fmt: skip
    assert [tuple(o.shape) for _, o in outputs] == [(1, 4) + tuple(s.shape[2:]) for s, _ in outputs]


def test_first_head_maxes_out_three_background_scores():
    network = S3FDNetwork().eval()
    with torch.no_grad():
        conv = network.conv3_3_norm_mbox_conf
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([1.0, 5.0, 2.0, 3.0]))  # three background classes, then the face
        scores, _ = network(torch.zeros(1, 3, 32, 32))[0]
    assert torch.equal(scores[0, :, 0, 0], torch.tensor([5.0, 3.0]))


def test_a_checkpoint_of_another_layout_is_refused(tmp_path):
    state = seeded_layout_state_dict("s3fd")
    state["body.conv1.weight"] = state.pop("conv1_1.weight")  # a renamed key
    state["fc7.weight"] = torch.zeros(1024, 1024, 3, 3)  # a wrong shape
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(WrongModelError, match="is not a s3fd checkpoint.*missing 'conv1_1.weight'"):
        load_detector(S3FD_CONFIG, tmp_path / "other.pth", "cpu")


# ---------------------------------------------------------------- pure pre/post-processing


def test_input_is_rgb_minus_the_mean_as_the_official_batch_path_feeds_it():
    frame = np.zeros((1, 2, 2, 3), np.uint8)
    frame[..., :] = (10, 20, 30)  # B, G, R
    rgb = s3fd_input(frame)
    assert rgb.shape == (1, 3, 2, 2) and rgb.dtype == np.float32
    assert rgb[0, :, 0, 0].tolist() == [30 - 104, 20 - 117, 10 - 123]
    assert s3fd_input(frame, "bgr")[0, :, 1, 1].tolist() == [10 - 104, 20 - 117, 30 - 123]


def test_anchors_are_centred_squares_four_strides_wide():
    anchors = head_anchors((3, 5), 16)
    assert anchors.shape == (15, 4)
    # cell (row 2, column 4) is row 2 * 5 + 4
    assert anchors[14].tolist() == [8 + 4 * 16, 8 + 2 * 16, 64, 64]
    assert anchors[0].tolist() == [8, 8, 64, 64]


def _encode(box, anchor_cx, anchor_cy, anchor_size):
    """SSD encoding with variances 0.1 / 0.2, written out from its definition."""
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    return [
        (cx - anchor_cx) / (0.1 * anchor_size),
        (cy - anchor_cy) / (0.1 * anchor_size),
        math.log(w / anchor_size) / 0.2,
        math.log(h / anchor_size) / 0.2,
    ]


def _empty_heads(size: int = 128):
    """Head outputs of a ``size`` x ``size`` input with no face anywhere."""
    maps = [size // s for s in S3FD_STRIDES]
    maps[3] += 4  # fc7
    return [(np.zeros((m, m), np.float32), np.zeros((4, m, m), np.float32)) for m in maps]


@pytest.mark.parametrize("head", range(6))
def test_a_box_encoded_at_a_known_anchor_decodes_back(head):
    stride = S3FD_STRIDES[head]
    heads = _empty_heads()
    probability, offsets = heads[head]
    y, x = probability.shape[0] - 1, 0  # last row, first column
    anchor_cx, anchor_cy, anchor_size = stride / 2, stride / 2 + y * stride, 4 * stride
    box = (anchor_cx - 0.3 * anchor_size, anchor_cy - 0.2 * anchor_size, anchor_cx + 0.45 * anchor_size,
           anchor_cy + 0.6 * anchor_size)  # fmt: skip
    probability[y, x] = 0.9
    offsets[:, y, x] = _encode(box, anchor_cx, anchor_cy, anchor_size)
    rows = frame_candidates(heads)
    assert rows.shape == (1, 5) and rows.dtype == np.float32
    np.testing.assert_allclose(rows[0], [*box, 0.9], rtol=1e-5, atol=1e-3)


def test_candidates_need_more_than_five_percent():
    heads = _empty_heads()
    heads[0][0][3, 3] = 0.05  # not above the threshold
    heads[0][0][4, 4] = 0.0501
    rows = frame_candidates(heads)
    assert rows.shape == (1, 5)
    np.testing.assert_allclose(
        rows[0, :4], [2 + 16 - 8, 2 + 16 - 8, 2 + 16 + 8, 2 + 16 + 8]
    )  # anchor (18, 18)


def test_nms_counts_pixels_inclusively_and_keeps_the_best_first():
    # IoU of a and b: 0.333 with inclusive (+1) pixel counts, 0.290 without; only the first drops b.
    rows = np.array(
        [[5.5, 0, 15.5, 10, 0.7], [0, 0, 10, 10, 0.9], [40, 40, 60, 60, 0.8], [41, 40, 61, 60, 0.6]],
        np.float32,
    )
    assert nms_order(rows).tolist() == [1, 2]
    assert nms_order(rows, iou_threshold=0.35).tolist() == [1, 2, 0]


def test_detections_keep_scores_above_one_half_best_first_and_scale():
    heads = _empty_heads()
    for cell, score in (((1, 1), 0.49), ((5, 5), 0.8), ((20, 20), 0.95)):
        heads[0][0][cell] = score
    rows = frame_detections(heads, face_score=0.5, scale=(2.0, 3.0))
    assert rows[:, 4].tolist() == pytest.approx([0.95, 0.8])
    np.testing.assert_allclose(rows[0, :4], [(82 - 8) * 2, (82 - 8) * 3, (82 + 8) * 2, (82 + 8) * 3])


def test_crop_boxes_are_clipped_at_zero_and_truncated_like_the_official_crop():
    rows = np.array(
        [[-3.7, 10.9, 50.2, 140.6, 0.9], [130, 5, 150, 20, 0.8], [np.nan, 0, 5, 5, 0.7]], np.float32
    )
    faces = detections_to_faces(rows, (128, 128))
    assert [f.as_tuple() for f in faces] == [(10, 128, 0, 50)]  # off-frame and non-finite rows dropped
    assert faces[0].landmarks is None and faces[0].score == pytest.approx(0.9)


# ---------------------------------------------------------------- the whole detector


def test_seeded_network_runs_through_detection(face_reporting_detector):
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    raw = face_reporting_detector.detect_raw(frames)
    faces = face_reporting_detector.detect(frames)
    assert len(raw) == len(faces) == 3
    assert all(r.dtype == np.float32 and r.ndim == 2 and r.shape[1] == 5 for r in raw)
    assert all(len(f) > 0 for f in faces)
    for frame_faces in faces:
        scores = [f.score for f in frame_faces]
        assert scores == sorted(scores, reverse=True) and min(scores) > 0.5
        for face in frame_faces:
            assert 0 <= face.top < face.bottom <= 64 and 0 <= face.left < face.right <= 64
            assert all(isinstance(v, int) for v in face.as_tuple())
    one_by_one = [face_reporting_detector.detect(frames[i : i + 1])[0] for i in range(3)]
    assert [[f.as_tuple() for f in fs] for fs in one_by_one] == [[f.as_tuple() for f in fs] for fs in faces]


def test_downscaled_detection_maps_boxes_back_to_full_resolution(face_reporting_detector):
    frames = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    half = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in frames])
    small = S3FDDetector(face_reporting_detector.network, S3FD_CONFIG, "cpu").detect_raw(half)[0]
    limited = S3FDDetector(
        face_reporting_detector.network, DetectConfig(model="s3fd", detect_max_side=32), "cpu"
    )
    full = limited.detect_raw(frames)[0]  # detect_max_side 32 with score 0.8 (the config default)
    small = small[small[:, 4] > 0.8]
    assert len(full) > 0
    np.testing.assert_allclose(full[:, :4], small[:, :4] * 2, rtol=1e-5)
    np.testing.assert_allclose(full[:, 4], small[:, 4])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_detection_matches_cpu(face_reporting_detector):
    frames = np.random.default_rng(2).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    on_cpu = face_reporting_detector.detect_raw(frames)
    network = S3FDNetwork()
    network.load_state_dict(face_reporting_detector.network.state_dict())
    on_gpu = S3FDDetector(network.to("cuda").eval(), S3FD_CONFIG, "cuda").detect_raw(frames)
    for cpu_rows, gpu_rows in zip(on_cpu, on_gpu):
        assert len(cpu_rows) > 0 and cpu_rows.shape == gpu_rows.shape
        np.testing.assert_allclose(gpu_rows[:3], cpu_rows[:3], atol=1e-2, rtol=1e-3)


OFFICIAL_S3FD = WEIGHTS_DIR / "s3fd.pth"


@pytest.mark.real_weights
@pytest.mark.skipif(not OFFICIAL_S3FD.is_file(), reason="official s3fd.pth not in weights/")
def test_official_checkpoint_finds_the_example_face():
    detector = load_detector(S3FD_CONFIG, OFFICIAL_S3FD, "cpu")
    frame = read_first_frame(REPO_ROOT / "examples" / "face.mp4", 25.0)
    (faces,) = detector.detect(frame[None])
    assert faces and faces[0].score > 0.9
    assert faces[0].height > 0.1 * frame.shape[0]
