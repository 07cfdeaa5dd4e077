"""GFPGAN on OpenVINO's CPU runtime: when it is chosen, that it computes what torch computes, the cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from restore import openvino_backend
from restore.openvino_backend import converted_model_path, use_openvino

REPO = Path(__file__).resolve().parent.parent

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
needs_openvino = pytest.mark.skipif(
    not openvino_backend.openvino_available(), reason="openvino not installed"
)


def test_auto_picks_openvino_for_gfpgan_on_the_cpu_in_float32_only(monkeypatch):
    monkeypatch.setattr(openvino_backend, "openvino_available", lambda: True)
    assert use_openvino("auto", "gfpgan", CPU, "auto") and use_openvino("auto", "gfpgan", CPU, "fp32")
    assert not use_openvino("auto", "gfpgan", CPU, "bf16")  # an explicit torch precision is honoured
    assert not use_openvino("auto", "codeformer", CPU, "auto")
    assert not use_openvino("auto", "gfpgan", CUDA, "auto") and not use_openvino(
        "openvino", "gfpgan", CUDA, "auto"
    )
    assert not use_openvino("torch", "gfpgan", CPU, "auto")
    monkeypatch.setattr(openvino_backend, "openvino_available", lambda: False)
    assert not use_openvino("auto", "gfpgan", CPU, "auto")
    assert use_openvino("openvino", "gfpgan", CPU, "auto")  # asked for: the loader reports it missing


def test_the_converted_model_is_keyed_by_the_checkpoints_hash_and_openvinos_version(tmp_path):
    checkpoint = tmp_path / "GFPGANv1.4.pth"
    checkpoint.write_bytes(b"one")
    first = converted_model_path(checkpoint, "gfpgan", "2026.4.1-22982-e213a147257-releases/2026/4")
    assert first.parent == tmp_path / ".openvino" and first.name.endswith("-ov2026.4.1.xml")
    assert converted_model_path(checkpoint, "gfpgan", "2027.0.0") != first
    checkpoint.write_bytes(b"two")  # another checkpoint under the same name: converted anew
    assert converted_model_path(checkpoint, "gfpgan", "2026.4.1") != first


# OpenVINO runs in a child process: one full-suite run with it loaded in the pytest process ended in a
# segmentation fault in a later training test (not understood yet), so the suite keeps it out.
_CONVERT_AND_COMPARE = """
import sys
import numpy as np
import torch
from restore import openvino_backend
from restore.openvino_backend import compile_for_cpu
from restore.restorers import forward_gfpgan
from tests.test_restore_support import TINY_FACE, tiny_gfpgan

checkpoint = sys.argv[1]
restorer = tiny_gfpgan(seed=3)
torch.save(restorer.model.state_dict(), checkpoint)
faces = torch.rand(2, 3, TINY_FACE, TINY_FACE, generator=torch.Generator().manual_seed(0)) * 2 - 1
with torch.inference_mode():
    expected = forward_gfpgan(restorer.model, faces, 0.5)
converted = compile_for_cpu(restorer.model, forward_gfpgan, "gfpgan", checkpoint, TINY_FACE)
got = converted(restorer.model, faces, 0.5)
assert got.shape == expected.shape and expected.std() > 0.01
np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=2e-3)  # [-1, 1] scale: 0.25 grey level


def no_conversion(*_):
    raise AssertionError("converted again although a saved model exists")


openvino_backend._convert = no_conversion
again = compile_for_cpu(restorer.model, forward_gfpgan, "gfpgan", checkpoint, TINY_FACE)
np.testing.assert_array_equal(again(restorer.model, faces, 0.5).numpy(), got.numpy())
print("max difference", float((got - expected).abs().max()))
"""


@needs_openvino
def test_openvino_gfpgan_equals_torch_and_is_read_back_from_beside_the_weights(tmp_path):
    checkpoint = tmp_path / "GFPGANv1.4.pth"
    command = [sys.executable, "-c", _CONVERT_AND_COMPARE, str(checkpoint)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.split()[-1]) < 2e-3
    saved = list((tmp_path / ".openvino").iterdir())
    assert sorted(p.suffix for p in saved) == [".bin", ".xml"]
