"""The restoration stage on FrameBatches, with a small GFPGAN and ParseNet for 64-pixel crops."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch

from pipeline.core.errors import ConfigError
from pipeline.core.types import FaceBox, FrameBatch
from restore import FaceRestoreStage
from restore.align import estimate_affine, face_template, inverse_affine, warp_face
from restore.blend import parsing_face_mask, paste_restored_face
from restore.config import RestoreConfig
from restore.convert import faces_to_tensor
from restore.upsample import load_bg_upsampler
from tests.test_restore_align import apply, similarity
from tests.test_restore_support import TINY_FACE, one_torch_thread, synthetic_image, tiny_gfpgan, tiny_parser


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


HEIGHT, WIDTH = 120, 150


@pytest.fixture(scope="module")
def restorer():
    return tiny_gfpgan(seed=5)


@pytest.fixture(scope="module")
def parser():
    # seed 3: the restored crops parse into a kept and a dropped class (a partial mask; most seeds give
    # one class everywhere, a mask of all ones or all zeros)
    return tiny_parser(seed=3)


def face_box(tx: float, ty: float, with_landmarks: bool = True) -> FaceBox:
    """A face whose 64-pixel FFHQ crop is placed at (tx, ty) in the frame, scaled 1.1, tilted 6 degrees."""
    landmarks = apply(similarity(1.1, 6.0, tx, ty), face_template(TINY_FACE)).astype(np.float32)
    return FaceBox(int(ty), int(ty) + 70, int(tx), int(tx) + 70, landmarks if with_landmarks else None)


def four_frames() -> FrameBatch:
    """Frames 100-103: a face, no face, a face without landmarks, a face."""
    frames = np.stack([synthetic_image(HEIGHT, WIDTH, seed=30 + i, sigma=2.0) for i in range(4)])
    faces = (face_box(30, 20), None, face_box(50, 30, with_landmarks=False), face_box(60, 25))
    return FrameBatch(start_index=100, frames=frames, faces=faces, mel=np.zeros((4, 80, 16), np.float32))


@pytest.fixture(scope="module")
def batch():
    return four_frames()


def expected_frame(frame, face, restorer, upscale=1, parser=None):
    """Align, restore, (parse,) paste: the stage's steps done by hand for one frame."""
    affine = estimate_affine(face.landmarks, TINY_FACE)
    restored = restorer.restore_aligned(warp_face(frame, affine, TINY_FACE)[None])
    mask = None if parser is None else parsing_face_mask(parser.parse(restored)[0], TINY_FACE)
    return paste_restored_face(frame, restored[0], inverse_affine(affine, upscale), upscale, mask)


def test_restores_faces_with_landmarks_and_passes_the_rest(restorer, batch):
    stage = FaceRestoreStage(restorer, RestoreConfig(batch_size=1, parsing=False))
    out = stage.process(batch)
    assert out.frames.shape == batch.frames.shape and out.frames.dtype == np.uint8
    assert out.start_index == 100 and out.faces == batch.faces and out.mel is batch.mel
    np.testing.assert_array_equal(out.frames[1], batch.frames[1])  # no face
    np.testing.assert_array_equal(out.frames[2], batch.frames[2])  # face without landmarks
    for i in (0, 3):
        expected = expected_frame(batch.frames[i], batch.faces[i], restorer)
        np.testing.assert_array_equal(out.frames[i], expected)
        assert np.mean(np.any(out.frames[i] != batch.frames[i], axis=2)) > 0.1


def test_default_batch_size_is_one_face_on_cpu_and_eight_on_cuda(restorer):
    from restore.stage import restore_batch_size

    assert FaceRestoreStage(restorer, RestoreConfig()).batches.size == 1  # the tiny restorer is on CPU
    assert restore_batch_size(None, "cuda") == 8 and restore_batch_size(None, torch.device("cpu")) == 1
    assert restore_batch_size(3, "cuda") == 3
    with pytest.raises(ConfigError, match="at least 1"):
        FaceRestoreStage(restorer, RestoreConfig(batch_size=0))


def test_reports_restore_and_paste_seconds(restorer, batch):
    from pipeline.render import StageTimes

    times = StageTimes()
    stage = FaceRestoreStage(restorer, RestoreConfig(batch_size=1, parsing=False, upscale=2))
    start = time.perf_counter()
    out = stage.process(batch, times)
    elapsed = time.perf_counter() - start
    assert out.frames.shape == (4, 2 * HEIGHT, 2 * WIDTH, 3)
    assert set(times.seconds) == {"restore", "paste"}
    assert all(seconds > 0 for seconds in times.seconds.values())
    assert sum(times.seconds.values()) <= elapsed
    stage.process(batch, times)  # a second batch adds to the same stages
    assert sum(times.seconds.values()) > elapsed / 2 and set(times.seconds) == {"restore", "paste"}


def test_batch_size_does_not_change_the_result(restorer, batch):
    one = FaceRestoreStage(restorer, RestoreConfig(batch_size=1, parsing=False)).process(batch)
    four = FaceRestoreStage(restorer, RestoreConfig(batch_size=4, parsing=False)).process(batch)
    diff = np.abs(one.frames.astype(int) - four.frames)
    assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3


def test_parsing_mask_is_used_when_enabled(restorer, parser, batch):
    out = FaceRestoreStage(restorer, RestoreConfig(batch_size=2, parsing=True), parser=parser).process(batch)
    expected = expected_frame(batch.frames[0], batch.faces[0], restorer, parser=parser)
    np.testing.assert_array_equal(out.frames[0], expected)
    assert not np.array_equal(out.frames[0], batch.frames[0])  # the parsing mask let the face through
    square = FaceRestoreStage(restorer, RestoreConfig(batch_size=2, parsing=False), parser=parser)
    assert square.parser is None
    assert not np.array_equal(square.process(batch).frames[0], out.frames[0])


def test_parser_matches_facexlib_pre_and_post(parser):
    faces = np.stack([synthetic_image(TINY_FACE, TINY_FACE, seed=s) for s in (1, 2)])
    labels = parser.parse(faces)
    rgb = np.stack([cv2.cvtColor(f.astype("float32") / 255.0, cv2.COLOR_BGR2RGB) for f in faces])
    tensor = (torch.from_numpy(rgb.transpose(0, 3, 1, 2)) - 0.5) / 0.5
    with torch.no_grad():
        expected = parser.model(tensor)[0].argmax(dim=1).numpy()
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(faces_to_tensor(faces), tensor)
    assert len(np.unique(labels)) > 1
    small = np.stack([cv2.resize(f, (32, 32)) for f in faces])
    resized = np.stack([cv2.resize(f, (TINY_FACE, TINY_FACE), interpolation=cv2.INTER_LINEAR) for f in small])
    np.testing.assert_array_equal(parser.parse(small), parser.parse(resized))


def test_upscale_with_lanczos_background(restorer, batch):
    stage = FaceRestoreStage(restorer, RestoreConfig(upscale=2, parsing=False))
    assert stage.output_size(WIDTH, HEIGHT) == (2 * WIDTH, 2 * HEIGHT)
    out = stage.process(batch)
    assert out.frames.shape == (4, 2 * HEIGHT, 2 * WIDTH, 3)
    lanczos = cv2.resize(batch.frames[1], (2 * WIDTH, 2 * HEIGHT), interpolation=cv2.INTER_LANCZOS4)
    np.testing.assert_array_equal(out.frames[1], lanczos)
    up0 = cv2.resize(batch.frames[0], (2 * WIDTH, 2 * HEIGHT), interpolation=cv2.INTER_LANCZOS4)
    affine = estimate_affine(batch.faces[0].landmarks, TINY_FACE)
    restored = restorer.restore_aligned(warp_face(batch.frames[0], affine, TINY_FACE)[None])[0]
    np.testing.assert_array_equal(
        out.frames[0], paste_restored_face(up0, restored, inverse_affine(affine, 2), 2)
    )


def test_upscale_with_realesrgan_background(restorer, batch, tmp_path):
    from tests.test_restore_upsample import realesrgan_state_dict

    path = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": realesrgan_state_dict()}, path)
    upsampler = load_bg_upsampler(path)
    cfg = RestoreConfig(upscale=4, parsing=False, bg_upsampler="realesrgan")
    pair = FrameBatch(0, batch.frames[:2], batch.faces[:2], batch.mel[:2])
    out = FaceRestoreStage(restorer, cfg, bg_upsampler=upsampler).process(pair)
    assert out.frames.shape == (2, 4 * HEIGHT, 4 * WIDTH, 3)
    background = upsampler.upsample(pair.frames, 4)
    np.testing.assert_array_equal(out.frames[1], background[1])
    changed = np.any(out.frames[0] != background[0], axis=2)
    assert 0.05 < changed.mean() < 0.9  # the face was pasted onto the Real-ESRGAN background
    ignored = FaceRestoreStage(restorer, RestoreConfig(upscale=1), bg_upsampler=upsampler)
    assert ignored.bg_upsampler is None


def test_degenerate_landmarks_warn_and_pass_through(restorer, batch):
    points = apply(similarity(1.0, 0.0, 10.0, 10.0), face_template(TINY_FACE)).astype(np.float32)
    points[2] = np.nan  # eyes far enough apart, but no transform can be estimated
    bad = FaceBox(0, 10, 0, 10, points)
    broken = FrameBatch(7, batch.frames[:1], (bad,), batch.mel[:1])
    stage = FaceRestoreStage(restorer, RestoreConfig(parsing=False))
    with pytest.warns(UserWarning, match="frame 7"):
        out = stage.process(broken)
    np.testing.assert_array_equal(out.frames, broken.frames)


def test_faces_with_eyes_closer_than_five_pixels_are_skipped(restorer, batch):
    landmarks = apply(similarity(0.05, 0.0, 40.0, 40.0), face_template(TINY_FACE)).astype(np.float32)
    tiny = FrameBatch(0, batch.frames[:1], (FaceBox(40, 45, 40, 45, landmarks),), batch.mel[:1])
    out = FaceRestoreStage(restorer, RestoreConfig(parsing=False)).process(tiny)
    np.testing.assert_array_equal(out.frames, tiny.frames)
    bigger = apply(similarity(0.5, 0.0, 40.0, 40.0), face_template(TINY_FACE)).astype(np.float32)
    tiny = FrameBatch(0, batch.frames[:1], (FaceBox(40, 80, 40, 80, bigger),), batch.mel[:1])
    assert not np.array_equal(
        FaceRestoreStage(restorer, RestoreConfig(parsing=False)).process(tiny).frames, tiny.frames
    )


def test_frames_without_any_face_are_copied(restorer, batch):
    empty = FrameBatch(0, batch.frames[1:2], (None,), batch.mel[:1])
    out = FaceRestoreStage(restorer, RestoreConfig()).process(empty)
    np.testing.assert_array_equal(out.frames, empty.frames)
    assert out.frames is not empty.frames


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (RestoreConfig(upscale=3), "upscale"),
        (RestoreConfig(batch_size=0), "batch_size"),
        (RestoreConfig(fidelity=-0.1), "fidelity"),
    ],
)
def test_invalid_config_is_rejected(restorer, cfg, match):
    with pytest.raises(ConfigError, match=match):
        FaceRestoreStage(restorer, cfg)


def test_pasting_overlaps_the_next_batch_and_gives_the_same_frames(restorer, batch, monkeypatch):
    """With the networks and the paste each taking 0.3 s per batch of one face, n faces take about
    (n + 1) x 0.3 s overlapped and 2n x 0.3 s in turn; the frames are identical."""
    delay = 0.3  # long against the compute and thread start-up, which a loaded suite makes noisy
    restore_aligned = restorer.restore_aligned
    calls = []

    def slow_restore(*args, **kwargs):
        calls.append(len(args[0]))
        time.sleep(delay)
        return restore_aligned(*args, **kwargs)

    monkeypatch.setattr(restorer, "restore_aligned", slow_restore)
    walls, outputs, stages = {}, {}, {}
    for overlap in (False, True):
        stage = stages[overlap] = FaceRestoreStage(
            restorer, RestoreConfig(batch_size=1, parsing=False), overlap=overlap
        )
        paste = stage._paste_faces
        monkeypatch.setattr(stage, "_paste_faces", lambda *a, paste=paste: (time.sleep(delay), paste(*a)))
        start = time.perf_counter()
        outputs[overlap] = stage.process(batch).frames
        walls[overlap] = time.perf_counter() - start
    np.testing.assert_array_equal(outputs[True], outputs[False])
    faces = len(calls) // 2
    assert faces >= 2 and calls == [1] * (2 * faces)
    assert walls[False] >= 2 * faces * delay and stages[True].paste_busy_seconds >= faces * delay
    assert walls[True] < walls[False] - (faces - 1) * delay * 0.8  # all but the last paste were hidden


def _stream(count: int, frames_each: int, seed: int = 40) -> list[FrameBatch]:
    """``count`` batches of ``frames_each`` frames, every frame with a face except every fourth."""
    batches = []
    for b in range(count):
        frames = np.stack(
            [synthetic_image(HEIGHT, WIDTH, seed=seed + b * 10 + i, sigma=2.0) for i in range(frames_each)]
        )
        faces = tuple(
            None if (b * frames_each + i) % 4 == 3 else face_box(30 + i, 20 + b) for i in range(frames_each)
        )
        mel = np.zeros((frames_each, 80, 16), np.float32)
        batches.append(FrameBatch(100 + b * frames_each, frames, faces, mel))
    return batches


def test_stream_fills_network_batches_across_stream_batches(restorer, monkeypatch):
    """Batches of 2 frames (1-2 faces each) with batch_size 4: forwards of 4 faces, then the rest at the
    end; each batch comes out once pasted, in order, equal to the batch-by-batch result."""
    batches = _stream(5, 2)  # 10 frames, 8 faces (frames 3 and 7 have none)
    cfg = RestoreConfig(batch_size=4, parsing=False)
    one_by_one = [FaceRestoreStage(restorer, cfg).process(b).frames for b in batches]
    sizes = []
    restore_aligned = restorer.restore_aligned

    def counted(crops, *args, **kwargs):
        sizes.append(len(crops))
        return restore_aligned(crops, *args, **kwargs)

    monkeypatch.setattr(restorer, "restore_aligned", counted)
    times = _Clock()
    stage = FaceRestoreStage(restorer, cfg)
    out = list(stage.process_stream(iter(batches), times))
    assert sizes == [4, 4]  # batch by batch it would be 2, 1, 2, 1, 2 forwards
    assert [b.start_index for b in out] == [b.start_index for b in batches]
    for got, expected in zip(out, one_by_one):
        assert np.abs(got.frames.astype(int) - expected).max() <= 1  # another batch: another sum order
    assert not np.array_equal(out[0].frames[0], batches[0].frames[0])
    np.testing.assert_array_equal(out[1].frames[1], batches[1].frames[1])  # frame 103: no face
    assert times.seconds["restore"] > 0 and "paste" in times.seconds


def test_stream_holds_no_more_batches_than_a_network_batch_needs(restorer):
    cfg = RestoreConfig(batch_size=3, parsing=False)
    taken = []

    def source():
        for batch in _stream(6, 1):  # one frame (one face, or none) per batch
            taken.append(batch.start_index)
            yield batch

    seen = []
    for batch in FaceRestoreStage(restorer, cfg).process_stream(source()):
        seen.append((batch.start_index, len(taken)))
    # faces at 100, 101, 102, 104, 105 (103 has none): three come out once the third is taken, the
    # faceless 103 at once, the last two at the end of the stream in a short batch
    assert seen == [(100, 3), (101, 3), (102, 3), (103, 4), (104, 6), (105, 6)]


def test_stream_with_sparse_faces_holds_at_most_three_batches(restorer, monkeypatch):
    """One face per batch and batch_size 8: short forwards of 3 rather than 8 batches of frames held."""
    from restore.stage import MAX_HELD_BATCHES

    sizes = []
    restore_aligned = restorer.restore_aligned
    monkeypatch.setattr(
        restorer,
        "restore_aligned",
        lambda crops, *a, **k: sizes.append(len(crops)) or restore_aligned(crops, *a, **k),
    )
    taken, held_most = [], 0
    batches = [b for b in _stream(10, 1) if b.faces[0] is not None][:7]  # 7 batches, a face in each

    def source():
        for batch in batches:
            taken.append(batch)
            yield batch

    out = []
    for batch in FaceRestoreStage(restorer, RestoreConfig(batch_size=8, parsing=False)).process_stream(
        source()
    ):
        held_most = max(held_most, len(taken) - len(out))
        out.append(batch)
    assert MAX_HELD_BATCHES == 3 and held_most == 3
    assert sizes == [3, 3, 1]
    assert [b.start_index for b in out] == [b.start_index for b in batches]


def test_closing_the_stream_early_stops_the_paste_worker(restorer):
    import threading

    stream = FaceRestoreStage(restorer, RestoreConfig(batch_size=2, parsing=False)).process_stream(
        iter(_stream(4, 2))
    )
    first = next(stream)
    assert first.start_index == 100
    stream.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("restore-paste")]


def test_stream_with_batch_size_one_is_process_batch_by_batch(restorer):
    batches = _stream(3, 2)
    cfg = RestoreConfig(batch_size=1, parsing=False)
    streamed = [b.frames for b in FaceRestoreStage(restorer, cfg).process_stream(iter(batches))]
    for got, batch in zip(streamed, batches):
        np.testing.assert_array_equal(got, FaceRestoreStage(restorer, cfg).process(batch).frames)


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
