"""Background upsampler: a small Real-ESRGAN x2 checkpoint in the official (basicsr RRDBNet) key layout,
compared with RealESRGANer.enhance written out."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.core.errors import WrongModelError
from restore.upsample import BackgroundUpsampler, load_bg_upsampler, mod_pad
from tests.test_restore_support import one_torch_thread, seeded_tensor, synthetic_image


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


GROWTH_CHANNELS = 32  # basicsr RRDBNet num_grow_ch of the released Real-ESRGAN models


def realesrgan_state_dict(features: int = 8, blocks: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """RealESRGAN_x2plus key names (basicsr RRDBNet, scale 2: pixel-unshuffled 12-channel input), small."""
    gen = torch.Generator().manual_seed(seed)
    gc = GROWTH_CHANNELS
    shapes = {"conv_first": (features, 12)}
    for b in range(blocks):
        for r in (1, 2, 3):
            for c in range(1, 6):
                out_ch = features if c == 5 else gc
                shapes[f"body.{b}.rdb{r}.conv{c}"] = (out_ch, features + (c - 1) * gc)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[name] = (features, features)
    shapes["conv_last"] = (3, features)
    state = {}
    for name, (out_ch, in_ch) in shapes.items():
        state[f"{name}.weight"] = seeded_tensor(f"{name}.weight", [out_ch, in_ch, 3, 3], torch.float32, gen)
        state[f"{name}.bias"] = 0.02 * torch.randn(out_ch, generator=gen) + 0.3
    return state


def official_enhance(model: torch.nn.Module, image: np.ndarray, scale: int, outscale: int) -> np.ndarray:
    """RealESRGANer.enhance(img, outscale) with pre_pad=0 and a single tile, written out."""
    h_input, w_input = image.shape[:2]
    img = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_BGR2RGB)
    tensor = torch.from_numpy(np.transpose(img, (2, 0, 1))).float().unsqueeze(0)
    mod = 2 if scale == 2 else 4
    pad_h, pad_w = (mod - h_input % mod) % mod, (mod - w_input % mod) % mod
    tensor = F.pad(tensor, (0, pad_w, 0, pad_h), "reflect")
    with torch.no_grad():
        output = model(tensor)
    _, _, h, w = output.size()
    output = output[:, :, 0 : h - pad_h * scale, 0 : w - pad_w * scale]
    output_img = output.data.squeeze().float().cpu().clamp_(0, 1).numpy()
    output_img = np.transpose(output_img[[2, 1, 0], :, :], (1, 2, 0))
    result = (output_img * 255.0).round().astype(np.uint8)
    if outscale != scale:
        size = (int(w_input * outscale), int(h_input * outscale))
        result = cv2.resize(result, size, interpolation=cv2.INTER_LANCZOS4)
    return result


@pytest.fixture(scope="module")
def upsampler(tmp_path_factory):
    path = tmp_path_factory.mktemp("esrgan") / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": realesrgan_state_dict()}, path)
    return load_bg_upsampler(path)


@pytest.fixture(scope="module")
def frame():
    return synthetic_image(37, 51, seed=5, sigma=2.0)  # odd sides: exercises the reflect padding


def test_loads_as_a_two_times_upsampler(upsampler):
    assert upsampler.scale == 2 and upsampler.precision == "fp32"


@pytest.mark.parametrize("outscale", [2, 4])
def test_matches_official_enhance(upsampler, frame, outscale):
    ours = upsampler.upsample(frame[None], outscale)
    expected = official_enhance(upsampler.model, frame, upsampler.scale, outscale)
    assert ours.shape == (1, 37 * outscale, 51 * outscale, 3)
    np.testing.assert_array_equal(ours[0], expected)
    assert expected.std() > 1  # not a constant image


def test_tiles_with_enough_overlap_match_the_whole_frame(upsampler, frame):
    tiled = BackgroundUpsampler(upsampler.model, 2, upsampler.device, "fp32", tile_size=16, tile_pad=40)
    whole = upsampler.upsample(frame[None], 2)
    diff = np.abs(tiled.upsample(frame[None], 2).astype(int) - whole)
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.01


def test_batch_of_frames_matches_single_frames(upsampler, frame):
    frames = np.stack([frame, frame[::-1].copy()])
    together = upsampler.upsample(frames, 2)
    for i in range(2):
        diff = np.abs(together[i].astype(int) - upsampler.upsample(frames[i : i + 1], 2)[0])
        assert diff.max() <= 1


def test_mod_pad_reflects_to_multiples():
    x = torch.arange(15.0).reshape(1, 1, 3, 5)
    padded, pad_h, pad_w = mod_pad(x, 4)
    assert (pad_h, pad_w) == (1, 3) and padded.shape == (1, 1, 4, 8)
    assert torch.equal(padded[0, 0, 3, :5], x[0, 0, 1])  # reflect: row 3 mirrors row 1
    same, zero_h, zero_w = mod_pad(x, None)
    assert same is x and zero_h == zero_w == 0


def test_non_sr_checkpoint_is_rejected(tmp_path):
    from tests.test_restore_support import placeholder_state_dict

    path = tmp_path / "model.pth"
    torch.save(placeholder_state_dict("wav2lip_disc_qual"), path)
    with pytest.raises(WrongModelError, match="RealESRGAN_x2plus"):
        load_bg_upsampler(path)
