"""CodeFormer in stages (restore/codeformer.py): equal to the whole network in float32, its codes chosen in
float32 under any autocast, and bf16 within a grey level of fp32 on a real face crop.

The seeded official-layout checkpoint on a crop of examples/face.mp4 is the case where the whole network
under bf16 autocast flipped codes (16-20 grey levels mean off fp32); a smooth random texture did not.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.core.devices import cpu_has_native_bf16
from pipeline.core.media import FrameSize, VideoReader
from restore.codeformer import (
    REDUCED_PRECISION_INPUT_SIZES,
    GeneratorSegment,
    block_input_sides,
    choose_codes,
    forward_codeformer_staged,
    generator_segments,
)
from restore.convert import faces_to_tensor
from restore.restorers import load_restorer
from tests.test_restore_support import layout_state_dict, one_torch_thread

EXAMPLE_VIDEO = Path(__file__).resolve().parents[1] / "examples" / "face.mp4"  # 320x320, 25 fps
FACE_BOX = (60, 260, 60, 260)  # top, bottom, left, right of the face in the example
FIDELITY = 0.5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def restorer(tmp_path_factory):
    path = tmp_path_factory.mktemp("codeformer") / "codeformer.pth"
    torch.save({"params_ema": layout_state_dict("codeformer", seed=2)}, path)
    return load_restorer(path, precision="fp32")


@pytest.fixture(scope="module")
def face_crop() -> np.ndarray:
    """``(1, 512, 512, 3) uint8`` BGR: the example's face, upscaled as the aligner would hand it over."""
    with VideoReader(EXAMPLE_VIDEO, FrameSize(320, 320), 25.0, batch_size=1) as reader:
        frame = next(iter(reader))[0]
    top, bottom, left, right = FACE_BOX
    return cv2.resize(frame[top:bottom, left:right], (512, 512), interpolation=cv2.INTER_CUBIC)[None]


def _input(restorer, faces: np.ndarray) -> torch.Tensor:
    return faces_to_tensor(faces).contiguous(memory_format=restorer.memory_format)


def test_staged_forward_equals_the_whole_network_in_float32(restorer, face_crop):
    x = _input(restorer, face_crop)
    with torch.inference_mode():
        staged = forward_codeformer_staged(restorer.model, x, FIDELITY)
        whole = restorer.model(x, weight=FIDELITY)[0]
    assert staged.shape == (1, 3, 512, 512) and staged.dtype == torch.float32
    assert torch.equal(staged, whole)


def test_codes_are_chosen_in_float32_under_bf16_autocast(restorer, face_crop):
    x = _input(restorer, face_crop)
    with torch.inference_mode():
        fp32 = choose_codes(restorer.model, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under_autocast = choose_codes(restorer.model, x)
    assert fp32.codes.shape == (1, 256, 1)
    assert torch.equal(under_autocast.codes, fp32.codes)
    assert under_autocast.quantised.dtype == torch.float32
    assert torch.equal(under_autocast.quantised, fp32.quantised)
    assert sorted(under_autocast.encoder_features, key=int) == ["32", "64", "128", "256"]


def test_only_the_middle_generator_blocks_take_the_reduced_precision(restorer, face_crop):
    """Hooks record the dtype of every convolution in the generator against its block's input size:
    bf16 exactly for inputs of 64-256 px (residual sums promote a block's own output back to float32)."""
    block_input = {}
    seen = []
    hooks = []
    for block in restorer.model.generator.blocks:
        hooks.append(
            block.register_forward_pre_hook(lambda _m, args: block_input.update(size=args[0].shape[-1]))
        )
        for conv in (m for m in block.modules() if isinstance(m, torch.nn.Conv2d)):
            hooks.append(
                conv.register_forward_hook(lambda *a: seen.append((block_input["size"], a[2].dtype)))
            )
    try:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            generated = forward_codeformer_staged(restorer.model, _input(restorer, face_crop), FIDELITY)
    finally:
        for hook in hooks:
            hook.remove()
    low, high = REDUCED_PRECISION_INPUT_SIZES
    assert generated.dtype == torch.float32
    assert {size for size, _ in seen} == {16, 32, 64, 128, 256, 512}
    assert {size for size, dtype in seen if dtype == torch.bfloat16} == {64, 128, 256}
    assert all((dtype == torch.bfloat16) == (low <= size <= high) for size, dtype in seen)


def test_the_generator_segments_follow_the_block_input_sizes_a_forward_sees(restorer, face_crop):
    """The static sizes (what the OpenVINO graphs are cut by) against the sizes a real forward hands each
    block; the three segments tile the generator: below 64 px, 64-256 px (reduced), 512 px."""
    seen = []
    hooks = [
        block.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[-1]))
        for block in restorer.model.generator.blocks
    ]
    try:
        with torch.inference_mode():
            forward_codeformer_staged(restorer.model, _input(restorer, face_crop), FIDELITY)
    finally:
        for hook in hooks:
            hook.remove()
    sides = block_input_sides(restorer.model)
    assert sides == seen and sides[0] == 16 and sides[-1] == 512
    segments = generator_segments(restorer.model)
    assert [segment.reduced for segment in segments] == [False, True, False]
    assert segments[0].start == 0 and segments[-1].stop == len(sides)
    assert all(a.stop == b.start for a, b in zip(segments, segments[1:]))
    middle = segments[1]
    assert isinstance(middle, GeneratorSegment)
    assert sorted(set(sides[middle.start : middle.stop])) == [64, 128, 256]


@pytest.mark.slow
@pytest.mark.skipif(
    not cpu_has_native_bf16(),
    reason="no native bf16 here: emulated bf16 CodeFormer at 512 px takes minutes; auto never picks it",
)
def test_bf16_restores_a_real_face_within_a_grey_level_of_fp32(restorer, face_crop):
    fp32 = restorer.restore_aligned(face_crop, fidelity=FIDELITY)
    restorer.precision = "bf16"
    try:
        bf16 = restorer.restore_aligned(face_crop, fidelity=FIDELITY)
    finally:
        restorer.precision = "fp32"
    difference = np.abs(bf16.astype(np.int16) - fp32.astype(np.int16))
    assert 0 < difference.mean() <= 1.0  # bf16 did run (outputs differ), and stays within one level
