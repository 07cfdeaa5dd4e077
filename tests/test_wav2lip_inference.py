"""Wav2Lip inference on frames: pre/post-processing, batching, hard and feathered paste-back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pipeline.core.errors import AudioError, ConfigError, NoFaceError
from pipeline.core.types import FaceBox, FrameBatch
from tests.test_wav2lip_models import fan_in_state_dict
from wav2lip.config import Wav2LipConfig
from wav2lip.face_input import generator_input, mask_lower_half
from wav2lip.inference import (
    LipSyncer,
    _paste_weights,
    feather_mask,
    forward_generator,
    lipsync_frames,
    paste_generated_face,
    postprocess_faces,
    prepare_face_inputs,
    prepare_mel_inputs,
    resolve_batch_size,
)
from wav2lip.models import Wav2Lip

BOX = FaceBox(top=20, bottom=100, left=40, right=120)  # 80x80 pixels: 1 face pixel = 0.833 px


@pytest.fixture(scope="module")
def generator() -> Wav2Lip:
    model = Wav2Lip()
    model.load_state_dict(fan_in_state_dict(model, seed=1))
    return model.eval()


def _frames(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 120, 160, 3), dtype=np.uint8)


def _mels(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-4, 4, (n, 80, 16)).astype(np.float32)


def _assert_equal_but_rounding(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal except where float32 rounding flips the official uint8 truncation: at most one grey level,
    in at most 0.1 % of the values (channels-last convolutions sum in another order on some CPUs)."""
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1, diff.max()
    assert np.count_nonzero(diff) <= 0.001 * diff.size, np.count_nonzero(diff)


def _official_hard_paste(model: Wav2Lip, frame: np.ndarray, box: FaceBox, mel: np.ndarray) -> np.ndarray:
    """The official inference.py steps for one frame, written out independently."""
    crop = cv2.resize(frame[box.top : box.bottom, box.left : box.right], (96, 96))
    masked = crop.copy()
    masked[96 // 2 :] = 0
    x = np.concatenate((masked, crop), axis=2)[None] / 255.0
    x = torch.FloatTensor(np.transpose(x, (0, 3, 1, 2)))
    m = torch.FloatTensor(mel.reshape(1, 80, 16, 1).transpose(0, 3, 1, 2))
    with torch.no_grad():
        pred = model(m, x)
    p = pred.numpy().transpose(0, 2, 3, 1)[0] * 255.0
    out = frame.copy()
    out[box.top : box.bottom, box.left : box.right] = cv2.resize(p.astype(np.uint8), (box.width, box.height))
    return out


# ---- pure pre/post-processing ----------------------------------------------------------------------


def test_prepare_face_inputs_masks_target_and_keeps_bgr_order():
    crops = np.zeros((2, 96, 96, 3), np.uint8)
    crops[..., 0], crops[..., 1], crops[..., 2] = 10, 20, 30  # B, G, R
    x = prepare_face_inputs(crops)
    assert x.shape == (2, 6, 96, 96) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 3], 10 / 255)  # reference channel 3 is blue, not swapped to RGB
    np.testing.assert_allclose(x[:, 5], 30 / 255)
    np.testing.assert_array_equal(x[:, :3, :48], x[:, 3:, :48])  # target: upper half kept
    assert np.all(x[:, :3, 48:] == 0)  # lower half (mouth) hidden


def test_generator_input_for_training_windows():
    window = np.random.default_rng(0).random((3, 5, 96, 96)).astype(np.float32)  # (C, T, H, W)
    wrong = np.random.default_rng(1).random((3, 5, 96, 96)).astype(np.float32)
    x = generator_input(window, wrong, channel_axis=-4)
    assert x.shape == (6, 5, 96, 96)
    np.testing.assert_array_equal(x[:3], mask_lower_half(window))
    np.testing.assert_array_equal(x[3:], wrong)
    assert np.all(x[:3, :, 48:] == 0) and np.array_equal(x[:3, :, :48], window[:, :, :48])


def test_postprocess_truncates_like_the_official_cast():
    pred = np.zeros((1, 3, 96, 96), np.float32)
    pred[0, 0] = 1.0
    pred[0, 1] = 0.999  # 254.745 -> 254 (truncated, not rounded)
    pred[0, 2] = 1.5  # out of range -> clipped, never wrapped
    out = postprocess_faces(torch.from_numpy(pred))
    assert out.shape == (1, 96, 96, 3) and out.dtype == np.uint8
    assert np.all(out[..., 0] == 255) and np.all(out[..., 1] == 254) and np.all(out[..., 2] == 255)


def test_feather_mask_shape_and_ramps():
    mask = feather_mask(96, 96, 6)
    assert mask.shape == (96, 96) and mask.dtype == np.float32
    assert mask.min() == 0.0 and mask.max() == 1.0
    assert np.all(mask[:42] == 0)  # above 48 - 6
    assert np.all(mask[48:90, 6:90] == 1)  # lower face away from the edges
    assert mask[-1, 48] < 0.1 and mask[70, 0] < 0.1 and mask[70, -1] < 0.1  # fades out at the edges
    assert np.all(np.diff(mask[:, 48][:60]) >= 0)  # monotone ramp into the mouth area
    scaled = feather_mask(192, 48, 6)  # ramp widths scale with the box
    assert np.all(scaled[: 2 * 42] == 0) and scaled[2 * 70, 24] == 1.0
    hard = feather_mask(50, 30, 0)
    assert set(np.unique(hard)) == {0.0, 1.0} and np.all(hard[25:] == 1) and np.all(hard[:25] == 0)


def test_prepare_mel_inputs_checks_shape_and_values():
    assert prepare_mel_inputs(_mels(2)).shape == (2, 1, 80, 16)
    with pytest.raises(AudioError):
        prepare_mel_inputs(np.zeros((2, 80, 15), np.float32))
    bad = _mels(2)
    bad[1, 3, 4] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        prepare_mel_inputs(bad)


def test_resolve_batch_size():
    assert resolve_batch_size(None, "cpu") == 16
    assert resolve_batch_size(None, torch.device("cuda")) == 128
    assert resolve_batch_size(5, "cuda") == 5
    with pytest.raises(ConfigError):
        resolve_batch_size(0, "cpu")


# ---- frames ------------------------------------------------------------------------------------------


def test_hard_paste_equals_the_official_steps(generator):
    frames, mels = _frames(2), _mels(2)
    out = lipsync_frames(generator, frames, [BOX, BOX], mels, batch_size=2, device="cpu", paste="hard")
    for i in range(2):
        _assert_equal_but_rounding(out[i], _official_hard_paste(generator, frames[i], BOX, mels[i]))


def test_feather_paste_keeps_outside_and_upper_face(generator):
    frames, mels = _frames(1), _mels(1)
    hard = lipsync_frames(generator, frames, [BOX], mels, 4, "cpu", paste="hard")[0]
    soft = lipsync_frames(generator, frames, [BOX], mels, 4, "cpu", paste="feather", feather_px=6)[0]
    outside = np.ones(frames.shape[1:3], bool)
    outside[BOX.top : BOX.bottom, BOX.left : BOX.right] = False
    assert np.array_equal(soft[outside], frames[0][outside])
    assert np.array_equal(hard[outside], frames[0][outside])
    upper = slice(BOX.top, BOX.top + 34)  # face rows 0..40 (< 48 - 6): untouched by the feather
    np.testing.assert_array_equal(soft[upper], frames[0][upper])
    mouth = (slice(BOX.top + 45, BOX.top + 72), slice(BOX.left + 10, BOX.left + 70))  # mask == 1 here
    np.testing.assert_array_equal(soft[mouth], hard[mouth])
    assert np.abs(soft[mouth].astype(int) - frames[0][mouth]).mean() > 10  # the mouth was replaced


def test_frames_without_face_pass_through_and_input_is_untouched(generator):
    frames, mels = _frames(3), _mels(3)
    before = frames.copy()
    out = lipsync_frames(generator, frames, [BOX, None, BOX], mels, 16, "cpu")
    np.testing.assert_array_equal(frames, before)
    np.testing.assert_array_equal(out[1], frames[1])
    assert not np.array_equal(out[0], frames[0]) and not np.array_equal(out[2], frames[2])
    none = lipsync_frames(generator, frames, [None, None, None], mels, 16, "cpu")
    np.testing.assert_array_equal(none, frames)


def test_output_does_not_depend_on_batch_size(generator):
    frames, mels = _frames(4, seed=5), _mels(4, seed=5)
    crops = np.stack([cv2.resize(f[20:100, 40:120], (96, 96)) for f in frames])
    faces, mel_in = prepare_face_inputs(crops), prepare_mel_inputs(mels)
    one = forward_generator(generator, faces, mel_in, 1, "cpu")
    many = forward_generator(generator, faces, mel_in, 16, "cpu")
    assert one.shape == (4, 3, 96, 96)
    np.testing.assert_allclose(one, many, atol=1e-5, rtol=0)
    boxes = [BOX, None, BOX]
    by_one = lipsync_frames(generator, frames[:3], boxes, mels[:3], 1, "cpu")
    by_two = lipsync_frames(generator, frames[:3], boxes, mels[:3], 2, "cpu")
    assert np.abs(by_one.astype(int) - by_two).max() <= 1  # uint8 truncation of ~1e-7 noise at most


def test_box_is_clipped_to_the_frame(generator):
    frames, mels = _frames(1), _mels(1)
    box = FaceBox(top=60, bottom=160, left=100, right=200)  # spills past the bottom-right corner
    out = lipsync_frames(generator, frames, [box], mels, 4, "cpu", paste="hard")
    np.testing.assert_array_equal(out[0][:60], frames[0][:60])
    np.testing.assert_array_equal(out[0][:, :100], frames[0][:, :100])
    clipped = FaceBox(top=60, bottom=120, left=100, right=160)
    _assert_equal_but_rounding(out[0], _official_hard_paste(generator, frames[0], clipped, mels[0]))


def test_input_checks(generator):
    frames, mels = _frames(2), _mels(2)
    with pytest.raises(ValueError, match="2 frames, 1 boxes"):
        lipsync_frames(generator, frames, [BOX], mels, 4, "cpu")
    with pytest.raises(ValueError, match="uint8"):
        lipsync_frames(generator, frames.astype(np.float32), [BOX, BOX], mels, 4, "cpu")
    with pytest.raises(ConfigError, match="paste"):
        lipsync_frames(generator, frames, [BOX, BOX], mels, 4, "cpu", paste="soft")
    outside = FaceBox(top=200, bottom=260, left=10, right=60)
    with pytest.raises(NoFaceError) as info:
        lipsync_frames(generator, frames, [None, outside], mels, 4, "cpu", first_index=40)
    assert info.value.frame_index == 41


def test_lipsyncer_processes_frame_batches(generator):
    frames, mels = _frames(2, seed=9), _mels(2, seed=9)
    batch = FrameBatch(start_index=7, frames=frames, faces=(BOX, None), mel=mels)
    cfg = Wav2LipConfig(batch_size=1, paste="feather", feather_px=4)
    syncer = LipSyncer(generator, cfg, "cpu")
    out = syncer.process(batch)
    assert out.start_index == 7 and out.faces == batch.faces and out.mel is batch.mel
    expected = lipsync_frames(generator, frames, [BOX, None], mels, 1, "cpu", "feather", 4)
    np.testing.assert_array_equal(out.frames, expected)
    streamed = list(syncer(iter([batch, batch])))
    assert len(streamed) == 2 and np.array_equal(streamed[1].frames, expected)
    with pytest.raises(ConfigError):
        LipSyncer(generator, Wav2LipConfig(feather_px=-1), "cpu")


def test_lipsyncer_runs_the_generator_channels_last_with_the_plain_layouts_values(generator):
    plain = Wav2Lip().eval()
    plain.load_state_dict(generator.state_dict())
    syncer = LipSyncer(Wav2Lip().eval(), Wav2LipConfig(), "cpu")
    syncer.model.load_state_dict(generator.state_dict())
    conv = syncer.model.face_encoder_blocks[0][0].conv_block[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    frames, mels = _frames(3, seed=11), _mels(3, seed=11)
    crops = np.stack([cv2.resize(f[20:100, 40:120], (96, 96)) for f in frames])
    faces, mel_in = prepare_face_inputs(crops), prepare_mel_inputs(mels)
    with torch.inference_mode():
        reference = plain(torch.from_numpy(mel_in), torch.from_numpy(faces)).numpy()
    fast = forward_generator(syncer.model, faces, mel_in, 3, "cpu")
    assert fast.shape == reference.shape == (3, 3, 96, 96)
    np.testing.assert_allclose(fast, reference, atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_float16_autocast_is_close_to_cpu(generator):
    frames, mels = _frames(4, seed=3), _mels(4, seed=3)
    crops = np.stack([cv2.resize(f[20:100, 40:120], (96, 96)) for f in frames])
    faces, mel_in = prepare_face_inputs(crops), prepare_mel_inputs(mels)
    cpu = forward_generator(generator, faces, mel_in, 4, "cpu")
    cuda_model = Wav2Lip().cuda().eval()
    cuda_model.load_state_dict(generator.state_dict())
    gpu = forward_generator(cuda_model, faces, mel_in, 2, "cuda", "fp16")
    assert gpu.dtype == np.float32
    np.testing.assert_allclose(gpu, cpu, atol=2e-2, rtol=0)


@pytest.mark.parametrize(
    ("paste", "feather_px", "strength"), [("feather", 6, 1.0), ("feather", 3, 0.4), ("hard", 6, 0.5)]
)
def test_paste_blend_equals_the_plain_float_formula(paste, feather_px, strength):
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (150, 170, 3), dtype=np.uint8)
    face = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    box = (17, 140, 9, 120)  # an odd size: the mask's zero rows and the resize do not line up
    out = frame.copy()
    paste_generated_face(out, face, box, paste, feather_px, strength)
    top, bottom, left, right = box
    resized = cv2.resize(face, (right - left, bottom - top)).astype(np.float32)
    if paste == "hard":
        weight = np.full((bottom - top, right - left, 1), strength, np.float32)
    else:
        weight = feather_mask(bottom - top, right - left, feather_px)[:, :, None] * np.float32(strength)
    region = frame[top:bottom, left:right].astype(np.float32)
    expected = frame.copy()
    expected[top:bottom, left:right] = np.clip(np.rint(region + (resized - region) * weight), 0, 255)
    np.testing.assert_array_equal(out, expected)
    assert not np.array_equal(out, frame)


def test_paste_weights_are_cached_read_only_and_start_below_the_zero_rows():
    first_row, weight = _paste_weights(96, 80, "feather", 6)
    assert first_row == 42 and weight.shape == (54, 80, 1) and not weight.flags.writeable
    assert _paste_weights(96, 80, "feather", 6)[1] is weight  # a tracked box of the same size: no recompute
    np.testing.assert_array_equal(weight[:, :, 0], feather_mask(96, 80, 6)[42:])
    assert _paste_weights(50, 40, "hard", 6)[0] == 0  # hard: the whole box


def test_in_place_lipsync_writes_into_the_batch_and_equals_the_copy(generator):
    frames, mels = _frames(3, seed=4), _mels(3, seed=4)
    copied = lipsync_frames(generator, frames, [BOX, None, BOX], mels, 2, "cpu")
    owned = frames.copy()
    result = lipsync_frames(generator, owned, [BOX, None, BOX], mels, 2, "cpu", in_place=True)
    assert result is owned
    np.testing.assert_array_equal(result, copied)
    assert not np.array_equal(owned[0], frames[0]) and np.array_equal(owned[1], frames[1])


def test_a_generator_stored_in_bfloat16_takes_its_inputs_in_bfloat16(generator, tmp_path):
    from wav2lip import load_generator_for_inference

    path = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": generator.state_dict()}, path)
    stored = load_generator_for_inference(path, "cpu", "bf16")
    frames, mels = _frames(2, seed=8), _mels(2, seed=8)
    low = LipSyncer(stored, Wav2LipConfig(batch_size=2), "cpu", "bf16")
    assert low.precision == "bf16"
    out = low.process(FrameBatch(0, frames, (BOX, BOX), mels)).frames
    full = lipsync_frames(generator, frames, [BOX, BOX], mels, 2, "cpu")
    region = (slice(None), slice(BOX.top, BOX.bottom), slice(BOX.left, BOX.right))
    assert np.abs(out[region].astype(int) - full[region]).mean() < 1.0
