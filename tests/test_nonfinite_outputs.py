"""NaN or infinite network outputs: the input pixels are kept for that face or frame (never black), and
each stage warns once, naming the frames."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pipeline.core.finite import NonFiniteFrames, nonfinite_items
from pipeline.core.types import FaceBox
from restore.restorers import FaceRestorer
from restore.upsample import BackgroundUpsampler, lanczos
from wav2lip.inference import lipsync_frames

BAD_ITEM = 1  # the batch item the fake networks below turn into NaN


def poison(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[BAD_ITEM, 0, 0, 0] = float("nan")
    return x


class WhiteFaces(nn.Module):
    """A GFPGAN stand-in: every face white ([-1, 1] range), item ``BAD_ITEM`` with one NaN."""

    def forward(self, x, return_rgb=False, randomize_noise=False):
        return (poison(torch.ones_like(x)),)


class NearestTwice(nn.Module):
    """A x2 super-resolution stand-in (nearest neighbour), item ``BAD_ITEM`` with one NaN."""

    def forward(self, x):
        return poison(F.interpolate(x, scale_factor=2, mode="nearest"))


class GreyMouths(nn.Module):
    """A Wav2Lip stand-in: grey faces, item ``BAD_ITEM`` with one infinity."""

    def forward(self, mels, faces):
        out = torch.full((len(faces), 3, 96, 96), 0.5)
        out[BAD_ITEM, 1, 5, 5] = float("inf")
        return out


def test_nonfinite_items_finds_nan_and_inf_per_item():
    values = np.zeros((4, 2, 3), np.float32)
    values[1, 0, 0], values[3, 1, 2] = np.nan, -np.inf
    assert nonfinite_items(values).tolist() == [False, True, False, True]
    assert nonfinite_items(torch.from_numpy(values)).tolist() == [False, True, False, True]


def test_a_nan_face_keeps_its_input_and_the_restorer_warns_once():
    restorer = FaceRestorer(WhiteFaces(), "gfpgan", torch.device("cpu"), precision="fp32", face_size=8)
    faces = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match=r"face restoration: .*frame\(s\) 41;"):
        out = restorer.restore_aligned(faces, frame_numbers=np.array([40, 41, 42]))
    np.testing.assert_array_equal(out[BAD_ITEM], faces[BAD_ITEM])
    assert (out[[0, 2]] == 255).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restorer.restore_aligned(faces, frame_numbers=np.array([50, 51, 52]))
    assert restorer.nonfinite.frames == [41, 51]


def test_a_nan_upscaled_frame_is_lanczos_upscaled_instead():
    upsampler = BackgroundUpsampler(NearestTwice(), 2, torch.device("cpu"), precision="fp32")
    frames = np.random.default_rng(1).integers(0, 256, (3, 6, 10, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match=r"background upscaling: .*frame\(s\) 8;"):
        out = upsampler.upsample(frames, 2, first_frame=7)
    np.testing.assert_array_equal(out[BAD_ITEM], lanczos(frames[BAD_ITEM], 2))
    np.testing.assert_array_equal(out[0], frames[0].repeat(2, axis=0).repeat(2, axis=1))


def test_a_nan_mouth_is_not_pasted_and_lip_sync_warns_with_the_frame_number():
    frames = np.random.default_rng(2).integers(0, 256, (3, 120, 120, 3), dtype=np.uint8)
    box = FaceBox(10, 106, 12, 108)
    report = NonFiniteFrames("lip-sync")
    mels = np.zeros((3, 80, 16), np.float32)
    with pytest.warns(UserWarning, match=r"lip-sync: .*frame\(s\) 101;"):
        out = lipsync_frames(
            GreyMouths(), frames, [box] * 3, mels, 3, "cpu", first_index=100, nonfinite=report
        )
    np.testing.assert_array_equal(out[BAD_ITEM], frames[BAD_ITEM])
    assert not np.array_equal(out[0], frames[0]) and report.frames == [101]
