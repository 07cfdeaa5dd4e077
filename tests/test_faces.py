"""Face detection (facexlib RetinaFace) and the per-video face track."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from facexlib.detection.retinaface import RetinaFace, generate_config

from pipeline.core.errors import ConfigError, InputError, MissingWeightsError, NoFaceError, WrongModelError
from pipeline.core.types import FaceBox
from pipeline.faces.config import DetectConfig
from pipeline.faces.detector import (
    RETINAFACE_MEAN_BGR,
    FaceDetector,
    build_retinaface,
    detection_size,
    detections_to_faces,
    downscale_frames,
    load_detector,
    retinaface_priors,
    track_faces,
)
from pipeline.faces.tracking import (
    FOLLOW_PATIENCE_FRAMES,
    FaceTrack,
    choose_faces,
    fixed_box_track,
    pad_boxes,
    smooth_boxes,
)
from tests.conftest import load_layout

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
MODEL_OF = {"resnet50": "retinaface_resnet50", "mobile0.25": "retinaface_mobile0.25"}


# ---------------------------------------------------------------- helpers


def synthetic_image(seed: int, height: int = 120, width: int = 160) -> np.ndarray:
    """A BGR uint8 image with a gradient, coloured discs and noise (structure for the network)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = np.linspace(0, 255, width)[None, :, None].astype(np.uint8)
    for _ in range(6):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(img, centre, int(rng.integers(5, 40)), colour, -1)
    noise = rng.integers(-10, 10, img.shape)
    return (img.astype(np.int64) + noise).clip(0, 255).astype(np.uint8)


def calibrated_retinaface(network_name: str, seed: int = 0) -> torch.nn.Module:
    """facexlib RetinaFace with seeded init weights and BatchNorm statistics measured on synthetic
    images, so its scores spread over (0, 1) instead of saturating (a useful comparison target)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = build_retinaface(network_name)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
            module.reset_running_stats()
    frames = np.stack([synthetic_image(seed) for seed in range(10, 14)])
    mean = torch.tensor(RETINAFACE_MEAN_BGR).view(1, 3, 1, 1)
    network.train()
    with torch.no_grad():
        network(torch.from_numpy(frames).permute(0, 3, 1, 2).float() - mean)
    return network.eval()


def save_official_layout(network: torch.nn.Module, path: Path) -> Path:
    """A bare state dict with DataParallel ``module.`` keys, as the released files may carry."""
    torch.save({f"module.{k}": v.clone() for k, v in network.state_dict().items()}, path)
    return path


def facexlib_reference(network_name: str, path: Path) -> RetinaFace:
    """facexlib's own RetinaFace, loaded as its init_detection_model does (minus the download)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        reference = RetinaFace(network_name=network_name, half=False, device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    reference.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
    return reference.eval()


def match_rows(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Indices into ``ours`` of the nearest row to each row of ``theirs`` (scores may tie in order)."""
    distance = np.abs(ours[None, :, :] - theirs[:, None, :]).max(axis=2)
    return distance.argmin(axis=1)


def box(top: int, bottom: int, left: int, right: int, score: float = 0.9) -> FaceBox:
    landmarks = np.full((5, 2), float(top), dtype=np.float32)
    return FaceBox(top, bottom, left, right, landmarks=landmarks, score=score)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: on the shared 2-core test machine two spinning threads run many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def checkpoint_of(tmp_path_factory):
    """``network_name -> path`` of a calibrated checkpoint in the official layout, made once."""
    made: dict[str, Path] = {}

    def make(network_name: str) -> Path:
        if network_name not in made:
            path = tmp_path_factory.mktemp("retinaface") / f"{network_name}.pth"
            made[network_name] = save_official_layout(calibrated_retinaface(network_name), path)
        return made[network_name]

    return make


class StubRetinaFace(torch.nn.Module):
    """facexlib's test-phase output contract; one chosen anchor scores 0.99, all others 0.01."""

    def __init__(self, anchor_cfg: dict, target: int) -> None:
        super().__init__()
        self.anchor_cfg, self.target, self.inputs = anchor_cfg, target, []

    def forward(self, x: torch.Tensor):
        self.inputs.append(x.clone())
        n_priors = retinaface_priors(self.anchor_cfg, tuple(x.shape[2:])).shape[0]
        scores = torch.tensor([0.99, 0.01]).repeat(x.shape[0], n_priors, 1)
        scores[:, self.target] = torch.tensor([0.01, 0.99])
        return torch.zeros(x.shape[0], n_priors, 4), scores, torch.ones(x.shape[0], n_priors, 10)


class ListDetector:
    """Hands out prepared per-frame face lists in order."""

    def __init__(self, per_frame: list[list[FaceBox]]) -> None:
        self.per_frame, self.position = per_frame, 0

    def detect(self, frames: np.ndarray) -> list[list[FaceBox]]:
        out = self.per_frame[self.position : self.position + len(frames)]
        self.position += len(frames)
        return out


# ---------------------------------------------------------------- network and checkpoint


def test_resnet50_network_matches_official_layout():
    state = build_retinaface("resnet50").state_dict()
    layout = load_layout("retinaface_resnet50")
    assert sorted(state) == sorted(layout)
    for name, spec in layout.items():
        assert list(state[name].shape) == spec["shape"], name
        assert str(state[name].dtype).removeprefix("torch.") == spec["dtype"], name


@pytest.mark.parametrize("network_name", ["resnet50", "mobile0.25"])
def test_load_detector_loads_module_prefixed_checkpoint_strict(checkpoint_of, network_name):
    path = checkpoint_of(network_name)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert all(key.startswith("module.") for key in saved)
    detector = load_detector(DetectConfig(model=MODEL_OF[network_name]), path, "cpu")
    assert isinstance(detector, FaceDetector)
    assert not detector.network.training
    loaded = detector.network.state_dict()
    assert sorted(f"module.{k}" for k in loaded) == sorted(saved)
    for name, value in loaded.items():
        assert torch.equal(saved[f"module.{name}"], value), name


def test_load_detector_rejects_other_network(tmp_path):
    path = save_official_layout(build_retinaface("mobile0.25"), tmp_path / "mobile.pth")
    with pytest.raises(WrongModelError, match="retinaface_resnet50"):
        load_detector(DetectConfig(model="retinaface_resnet50"), path, "cpu")


def test_load_detector_missing_file_and_unknown_model(tmp_path):
    with pytest.raises(MissingWeightsError):
        load_detector(DetectConfig(), tmp_path / "absent.pth", "cpu")
    with pytest.raises(ConfigError, match="detect.model must be one of .*s3fd"):
        load_detector(DetectConfig(model="yolo"), tmp_path / "absent.pth", "cpu")  # type: ignore[arg-type]


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize("network_name", ["resnet50", "mobile0.25"])
def test_batched_detect_equals_facexlib_detect_faces(checkpoint_of, network_name):
    path = checkpoint_of(network_name)
    cfg = DetectConfig(model=MODEL_OF[network_name], score_threshold=0.5, batch_size=2)
    detector = load_detector(cfg, path, "cpu")
    reference = facexlib_reference(network_name, path)
    images = [synthetic_image(0), synthetic_image(1), synthetic_image(2)]
    ours = detector.detect_raw(np.stack(images))  # batches of 2 and 1
    for image, rows in zip(images, ours):
        with torch.no_grad():
            theirs = reference.detect_faces(image, conf_threshold=0.5, nms_threshold=0.4)
        assert len(theirs) >= 20  # a real comparison, not two empty lists
        assert rows.shape == theirs.shape and rows.dtype == np.float32
        matched = rows[match_rows(rows, theirs)]
        assert len(set(match_rows(rows, theirs).tolist())) == len(theirs)
        np.testing.assert_allclose(matched, theirs, atol=1e-2, rtol=1e-4)
        assert np.all(np.diff(rows[:, 4]) <= 0)  # best score first


def test_downscaled_detection_maps_back_to_full_resolution():
    anchor_cfg = generate_config("mobile0.25")
    # anchor of feature map 0 (stride 8) at row 5, column 10 of 20, second size (32 px) at 160x120
    target = (5 * 20 + 10) * 2 + 1
    stub = StubRetinaFace(anchor_cfg, target)
    cfg = DetectConfig(detect_max_side=160, score_threshold=0.5)
    detector = FaceDetector(stub, anchor_cfg, cfg, "cpu")
    big = np.full((2, 240, 320, 3), 200, np.uint8)
    faces = detector.detect(big)
    assert tuple(stub.inputs[0].shape) == (2, 3, 120, 160)
    expected_input = torch.tensor([200.0 - m for m in RETINAFACE_MEAN_BGR]).view(1, 3, 1, 1)
    assert torch.allclose(stub.inputs[0], expected_input.expand(2, 3, 120, 160))
    # at 160x120 the anchor is centred at (84, 44) and 32 px wide; landmark offsets of 1 add 0.1 * 32
    for frame_faces in faces:
        assert len(frame_faces) == 1
        face = frame_faces[0]
        assert face.as_tuple() == (2 * 28, 2 * 60, 2 * 68, 2 * 100)
        np.testing.assert_allclose(face.landmarks, np.tile([2 * 87.2, 2 * 47.2], (5, 1)), atol=1e-3)
        assert face.landmarks.dtype == np.float32 and face.score == pytest.approx(0.99)
    small_faces = detector.detect(np.full((1, 120, 160, 3), 200, np.uint8))[0]
    assert small_faces[0].as_tuple() == (28, 60, 68, 100)


def test_real_network_on_2x_frame_equals_2x_of_downscaled_copy(checkpoint_of):
    cfg = DetectConfig(model="retinaface_mobile0.25", detect_max_side=160, score_threshold=0.5)
    detector = load_detector(cfg, checkpoint_of("mobile0.25"), "cpu")
    big = cv2.resize(synthetic_image(3), (320, 240), interpolation=cv2.INTER_CUBIC)[None]
    small = downscale_frames(big, 160)
    assert small.shape == (1, 120, 160, 3)
    on_big = detector.detect_raw(big)[0]
    on_small = detector.detect_raw(small)[0]
    assert len(on_small) > 10
    scale = np.array([2, 2, 2, 2, 1] + [2] * 10, np.float32)
    np.testing.assert_allclose(on_big, on_small * scale, rtol=1e-6, atol=1e-4)


def test_detection_size_keeps_aspect_and_never_upscales():
    assert detection_size((120, 160), 640) == (120, 160)
    assert detection_size((1080, 1920), 640) == (360, 640)
    assert detection_size((1920, 1080), 640) == (640, 360)
    assert detection_size((200, 300), 160) == (107, 160)


def test_detections_to_faces_rounds_clips_and_drops_empty():
    rows = np.array(
        [
            [-5.4, 10.6, 50.5, 130.0, 0.9] + list(range(10)),
            [200.0, 10.0, 230.0, 40.0, 0.8] + [0.0] * 10,  # wholly right of a 160-wide frame
            [10.0, 10.0, 60.0, 60.0, float("nan")] + [0.0] * 10,  # not finite
        ],
        dtype=np.float32,
    )
    faces = detections_to_faces(rows, (120, 160))
    assert len(faces) == 1
    assert faces[0].as_tuple() == (11, 120, 0, 50)  # np.rint rounds half to even: 50.5 -> 50
    assert faces[0].landmarks.shape == (5, 2) and faces[0].landmarks.dtype == np.float32
    np.testing.assert_array_equal(faces[0].landmarks[1], [2.0, 3.0])
    assert faces[0].score == pytest.approx(0.9)
    assert detections_to_faces(np.zeros((0, 15), np.float32), (120, 160)) == []


def test_detect_rejects_non_uint8_frames():
    anchor_cfg = generate_config("mobile0.25")
    detector = FaceDetector(StubRetinaFace(anchor_cfg, 0), anchor_cfg, DetectConfig(), "cpu")
    with pytest.raises(InputError, match="uint8"):
        detector.detect(np.zeros((1, 32, 32, 3), np.float32))


# ---------------------------------------------------------------- choosing a face


def test_largest_keeps_following_the_chosen_face():
    a0, b0 = box(10, 60, 10, 60), box(10, 50, 100, 140)  # A is larger
    a1, b1 = box(12, 58, 12, 58), box(5, 55, 95, 145)  # now B is momentarily larger
    track = choose_faces([[], [b0, a0], [b1, a1]], "largest", (100, 200))
    assert track == [None, a0, a1]


def test_lost_face_is_taken_back_within_patience_and_replaced_after():
    a, b = box(10, 60, 10, 60), box(10, 50, 100, 140)
    short = [[a, b]] + [[b]] * FOLLOW_PATIENCE_FRAMES + [[a, b]]
    assert choose_faces(short, "largest", (100, 200))[-1] is a
    long = [[a, b]] + [[b]] * (FOLLOW_PATIENCE_FRAMES + 1) + [[a, b]]
    track = choose_faces(long, "largest", (100, 200))
    assert track[1] is b and track[-1] is b


def test_center_follows_the_face_nearest_the_centre_at_start():
    c0, side = box(30, 70, 80, 120), box(30, 70, 10, 50)  # frame centre is (50, 100)
    c1, intruder = box(30, 70, 90, 130), box(40, 60, 92, 108)  # intruder sits exactly at the centre
    assert choose_faces([[side, c0], [intruder, c1, side]], "center", (100, 200)) == [c0, c1]
    assert choose_faces([[intruder, c1, side]], "center", (100, 200)) == [intruder]


def test_index_mode_counts_from_the_left():
    left, middle, right = box(10, 50, 10, 50), box(10, 50, 100, 140), box(10, 50, 200, 240)
    assert choose_faces([[right, left, middle]], "1", (100, 300)) == [middle]
    assert choose_faces([[right, left, middle]], "0", (100, 300)) == [left]
    assert choose_faces([[right, left, middle]], "5", (100, 300)) == [None]


@pytest.mark.parametrize("mode", ["biggest", "-1", ""])
def test_unknown_face_mode_is_a_config_error(mode):
    with pytest.raises(ConfigError, match="detect.face"):
        choose_faces([[box(0, 10, 0, 10)]], mode, (100, 100))


# ---------------------------------------------------------------- smoothing, padding, fixed box


def test_smooth_boxes_matches_hand_computation():
    segment = [box(10, 50, 10, 50), box(12, 52, 13, 53), box(14, 54, 16, 56), box(17, 57, 19, 59)]
    pair = [box(100, 140, 100, 140), box(101, 141, 103, 143)]
    jump = box(0, 30, 200, 230)  # overlaps nothing before it: a new segment
    smoothed = smooth_boxes(segment + [None] + pair + [jump], window=3)
    assert [f.as_tuple() if f else None for f in smoothed] == [
        (12, 52, 13, 53),  # mean of boxes 0-2
        (14, 54, 16, 56),  # mean of boxes 1-3, truncated
        (15, 55, 17, 57),  # last 3 boxes, box 1 already smoothed (official in-place rule)
        (15, 55, 17, 57),
        None,
        (100, 140, 101, 141),  # a 2-box segment: its whole mean ...
        (100, 140, 102, 142),  # ... then again with box 5 already smoothed
        (0, 30, 200, 230),
    ]
    assert smoothed[1].landmarks is segment[1].landmarks and smoothed[1].score == segment[1].score
    assert smooth_boxes(segment, window=1) == segment


def test_pad_boxes_clips_to_frame():
    inner, edge = box(30, 60, 50, 80), box(5, 90, 3, 195)
    padded = pad_boxes([inner, None, edge], (10, 20, 5, 10), (100, 200))
    assert padded[0].as_tuple() == (20, 80, 45, 90)
    assert padded[1] is None
    assert padded[2].as_tuple() == (0, 100, 0, 200)
    assert padded[0].landmarks is inner.landmarks
    with pytest.raises(ConfigError, match="pads"):
        pad_boxes([inner], (-20, -20, 0, 0), (100, 200))


def test_fixed_box_track_clips_and_has_no_landmarks():
    track = fixed_box_track((10, 500, -5, 80), 3, (300, 200))
    assert [f.as_tuple() for f in track] == [(10, 300, 0, 80)] * 3
    assert all(f.landmarks is None for f in track)
    with pytest.raises(InputError, match="--box"):
        fixed_box_track((10, 50, 250, 300), 3, (300, 200))


# ---------------------------------------------------------------- the whole video


def frame_batches(n_frames: int, batch: int, size: tuple[int, int] = (100, 200)):
    frames = np.zeros((n_frames, *size, 3), np.uint8)
    return [frames[i : i + batch] for i in range(0, n_frames, batch)]


def test_track_faces_raises_no_face_error_when_nothing_is_found():
    with pytest.raises(NoFaceError, match="--box"):
        track_faces(frame_batches(4, 3), ListDetector([[]] * 4), DetectConfig(), (100, 200), progress=False)


def test_track_faces_chooses_smooths_pads_and_counts_gaps():
    faces = [[box(10 + i, 50 + i, 20 + i, 60 + i)] for i in range(6)]
    faces[3] = []
    cfg = DetectConfig(smooth_window=2, pads=(0, 10, 0, 0))
    with pytest.warns(UserWarning, match="1 of 6 frames"):
        track = track_faces(frame_batches(6, 4), ListDetector(faces), cfg, (100, 200), progress=False)
    assert isinstance(track, FaceTrack) and track.frames_without_face == 1
    expected = pad_boxes(
        smooth_boxes(choose_faces(faces, "largest", (100, 200)), 2), (0, 10, 0, 0), (100, 200)
    )
    assert track.faces == tuple(expected)
    assert track.faces[0].as_tuple() == (10, 60, 20, 60)  # mean of frames 0-1 truncated, bottom + 10


def test_track_faces_nosmooth_and_index_out_of_range():
    faces = [[box(10, 50, 20, 60)], [box(11, 51, 21, 61)]]
    cfg = DetectConfig(nosmooth=True, pads=(0, 0, 0, 0))
    track = track_faces(frame_batches(2, 2), ListDetector(faces), cfg, (100, 200), progress=False)
    assert [f.as_tuple() for f in track.faces] == [(10, 50, 20, 60), (11, 51, 21, 61)]
    with pytest.raises(NoFaceError):
        track_faces(
            frame_batches(2, 2), ListDetector(faces), dataclasses.replace(cfg, face="1"), (100, 200), False
        )


def test_track_faces_with_fixed_box_skips_detection():
    cfg = DetectConfig(box=(10, 60, 20, 80))
    track = track_faces(frame_batches(5, 2), None, cfg, (100, 200), progress=False)
    assert track.frames_without_face == 0
    assert [f.as_tuple() for f in track.faces] == [(10, 60, 20, 80)] * 5


def test_track_faces_rejects_changing_frame_size():
    batches = frame_batches(2, 2) + frame_batches(2, 2, size=(50, 50))
    detector = ListDetector([[box(10, 50, 20, 60)]] * 4)
    with pytest.raises(InputError, match="frame size"):
        track_faces(batches, detector, DetectConfig(), (100, 200), progress=False)


# ---------------------------------------------------------------- real weights / GPU


OFFICIAL_DETECTORS = [
    pytest.param(
        network_name,
        WEIGHTS_DIR / filename,
        marks=pytest.mark.skipif(
            not (WEIGHTS_DIR / filename).is_file(), reason=f"official {filename} not in weights/"
        ),
    )
    for network_name, filename in (
        ("resnet50", "detection_Resnet50_Final.pth"),
        ("mobile0.25", "detection_mobilenet0.25_Final.pth"),
    )
]


@pytest.mark.real_weights
@pytest.mark.parametrize("network_name, path", OFFICIAL_DETECTORS)
def test_official_checkpoints_load_strict(network_name, path):
    detector = load_detector(DetectConfig(model=MODEL_OF[network_name]), path, "cpu")
    frames = np.stack([synthetic_image(0), synthetic_image(1)])
    faces = detector.detect(frames)
    assert len(faces) == 2
    assert all(face.score > detector.config.score_threshold for frame in faces for face in frame)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_detection_matches_cpu():
    network = calibrated_retinaface("resnet50")
    cfg = DetectConfig(score_threshold=0.5, batch_size=2)
    frames = np.stack([synthetic_image(seed) for seed in range(3)])
    on_cpu = FaceDetector(network, dict(network.cfg), cfg, "cpu").detect_raw(frames)
    network.to("cuda")
    on_gpu = FaceDetector(network, dict(network.cfg), cfg, "cuda").detect_raw(frames)
    for cpu_rows, gpu_rows in zip(on_cpu, on_gpu):
        assert len(cpu_rows) >= 20 and cpu_rows.shape == gpu_rows.shape
        np.testing.assert_allclose(gpu_rows[match_rows(gpu_rows, cpu_rows)], cpu_rows, atol=2e-2, rtol=1e-3)


class FailsLikeCublasAbove(torch.nn.Module):
    """A detection network that fails with cuBLAS's allocation error for batches above ``limit``."""

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.sizes = inner, limit, []

    def forward(self, x: torch.Tensor):
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
        return self.inner(x)


def test_detection_out_of_memory_halves_the_batch_and_finds_the_same_faces(checkpoint_of):
    cfg = DetectConfig(model="retinaface_mobile0.25", score_threshold=0.5, batch_size=4)
    detector = load_detector(cfg, checkpoint_of("mobile0.25"), "cpu")
    frames = np.stack([synthetic_image(i) for i in range(3)])
    expected = detector.detect_raw(frames)
    detector.network = FailsLikeCublasAbove(detector.network, limit=1)
    with pytest.warns(UserWarning, match="face detection: out of GPU memory with a batch of 3"):
        found = detector.detect_raw(frames)
    assert detector.network.sizes == [3, 1, 1, 1] and detector.batches.size == 1
    for rows, reference in zip(found, expected, strict=True):  # batch size changes only float rounding
        assert rows.shape == reference.shape and len(rows) > 0
        np.testing.assert_allclose(rows, reference, rtol=1e-5, atol=1e-3)
