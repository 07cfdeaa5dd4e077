"""Parsing masks made where the parser runs (restore/device_masks.py), checked on the CPU against the
official float64 recipe (restore.blend.parsing_face_mask) and through the restoration stage."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch

from restore import FaceRestoreStage
from restore.blend import PARSING_CLASS_WEIGHTS, parsing_face_mask
from restore.config import RestoreConfig
from restore.convert import pixels_to_tensor
from restore.device_masks import mask_from_levels, parsing_masks_on_device
from restore.parsing import FaceParser
from restore.restorers import FaceRestorer
from tests.test_restore_stage import four_frames
from tests.test_restore_support import TINY_FACE, one_torch_thread, synthetic_image, tiny_gfpgan, tiny_parser

HALF_LEVEL = 0.5 / 255


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def restorer():
    return tiny_gfpgan(seed=5)


@pytest.fixture(scope="module")
def parser():
    return tiny_parser(seed=3)  # a partial mask on the restored crops (see tests/test_restore_stage.py)


@pytest.fixture(scope="module")
def batch():
    return four_frames()


def blob_labels(size: int, seed: int) -> np.ndarray:
    """``(size, size) int64`` class map of smooth blobs over all 19 classes (kept and dropped ones)."""
    noise = cv2.GaussianBlur(np.random.default_rng(seed).random((size, size)), (0, 0), size / 16)
    ranks = np.argsort(np.argsort(noise.ravel())).reshape(size, size)
    return (ranks * len(PARSING_CLASS_WEIGHTS) // ranks.size).astype(np.int64)


@pytest.mark.parametrize("size", [64, 512])
def test_masks_are_within_half_a_level_of_the_float64_recipe(size):
    labels = np.stack([blob_labels(size, seed) for seed in (1, 2)])
    masks = parsing_masks_on_device(torch.from_numpy(labels))
    assert masks.shape == (2, size, size) and masks.dtype == torch.uint8
    for label_map, mask in zip(labels, masks.numpy()):
        official = parsing_face_mask(label_map)
        assert np.abs(mask_from_levels(mask) - official).max() <= HALF_LEVEL + 1e-5
        assert mask.max() > 200 and (mask[:10] == 0).all() and (mask[:, -10:] == 0).all()
        assert 0.05 < np.mean((mask > 0) & (mask < 255))  # blurred edges, not a hard cut


def test_parse_on_device_equals_parse(parser):
    faces = np.stack([synthetic_image(TINY_FACE, TINY_FACE, seed=s) for s in (3, 4)])
    on_device = parser.parse_on_device(pixels_to_tensor(torch.from_numpy(faces)))
    assert isinstance(parser, FaceParser) and on_device.dtype == torch.int64
    np.testing.assert_array_equal(on_device.numpy(), parser.parse(faces))


def test_restored_pixels_on_device_are_the_restored_faces(restorer):
    crops = np.stack([synthetic_image(TINY_FACE, TINY_FACE, seed=s) for s in (5, 6)])
    faces, pixels = restorer.restore_aligned_on_device(crops)
    assert pixels.shape == (2, TINY_FACE, TINY_FACE, 3) and pixels.dtype == torch.uint8
    np.testing.assert_array_equal(pixels.numpy(), faces)
    np.testing.assert_array_equal(faces, restorer.restore_aligned(crops))


def test_stage_with_masks_on_device_blends_within_a_level_of_the_official_masks(
    restorer, parser, batch, monkeypatch
):
    cfg = RestoreConfig(batch_size=2, parsing=True)
    official = FaceRestoreStage(restorer, cfg, parser=parser)
    assert not official.masks_on_device  # the CPU default: the float64 recipe in the paste worker
    expected = official.process(batch).frames
    on_device = FaceRestoreStage(restorer, cfg, parser=parser, masks_on_device=True)
    monkeypatch.setattr(parser, "parse", lambda faces: pytest.fail("the device path parsed on the host"))
    got = on_device.process(batch).frames
    difference = np.abs(expected.astype(np.int16) - got)
    assert difference.max() <= 1
    assert np.mean(difference > 0) < 0.01
    assert not np.array_equal(got[0], batch.frames[0])  # the face was restored and pasted
    np.testing.assert_array_equal(got[1], batch.frames[1])  # a frame without a face is untouched


def test_stream_with_masks_on_device_matches_batch_by_batch(restorer, parser):
    """process_stream (forwards filled across batches) with device masks against process per batch."""
    from tests.test_restore_stage import _stream

    batches = _stream(4, 2)
    cfg = RestoreConfig(batch_size=3, parsing=True)
    expected = [FaceRestoreStage(restorer, cfg, parser=parser).process(b).frames for b in batches]
    stage = FaceRestoreStage(restorer, cfg, parser=parser, masks_on_device=True)
    got = [b.frames for b in stage.process_stream(iter(batches))]
    assert len(got) == len(expected)
    for frames, reference in zip(got, expected):
        assert np.abs(frames.astype(np.int16) - reference).max() <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_stage_makes_masks_on_the_device_within_a_level_of_the_cpu(restorer, parser, batch):
    cfg = RestoreConfig(batch_size=2, parsing=True)
    expected = FaceRestoreStage(restorer, cfg, parser=parser).process(batch).frames
    cuda = torch.device("cuda")
    restorer_gpu = FaceRestorer(
        copy.deepcopy(restorer.model).to(cuda), restorer.kind, cuda, face_size=TINY_FACE
    )
    parser_gpu = FaceParser(copy.deepcopy(parser.model).to(cuda), cuda, size=TINY_FACE)
    stage = FaceRestoreStage(restorer_gpu, cfg, parser=parser_gpu)
    assert stage.masks_on_device
    got = stage.process(batch).frames
    assert np.abs(expected.astype(np.int16) - got).max() <= 2  # GPU convolutions sum in another order
