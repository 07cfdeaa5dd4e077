"""GFPGAN and CodeFormer on OpenVINO's CPU runtime: when it is chosen, that it computes what torch computes
(CodeFormer's bf16 within a grey level of float32 on a real face), the cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.core.errors import ConfigError
from restore import openvino_backend
from restore.openvino_backend import converted_model_path, openvino_precision, use_openvino

REPO = Path(__file__).resolve().parent.parent

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
needs_openvino = pytest.mark.skipif(
    not openvino_backend.openvino_available(), reason="openvino not installed"
)


def test_auto_picks_openvino_on_the_cpu_for_the_precisions_it_runs(monkeypatch):
    monkeypatch.setattr(openvino_backend, "openvino_available", lambda: True)
    assert use_openvino("auto", "gfpgan", CPU, "auto") and use_openvino("auto", "gfpgan", CPU, "fp32")
    assert not use_openvino("auto", "gfpgan", CPU, "bf16")  # an explicit torch precision is honoured
    assert use_openvino("auto", "codeformer", CPU, "auto") and use_openvino("auto", "codeformer", CPU, "bf16")
    assert not use_openvino("auto", "restoreformer", CPU, "auto")
    assert not use_openvino("auto", "gfpgan", CUDA, "auto") and not use_openvino(
        "openvino", "gfpgan", CUDA, "auto"
    )
    assert not use_openvino("torch", "gfpgan", CPU, "auto")
    monkeypatch.setattr(openvino_backend, "openvino_available", lambda: False)
    assert not use_openvino("auto", "gfpgan", CPU, "auto")
    assert use_openvino("openvino", "gfpgan", CPU, "auto")  # asked for: the loader reports it missing


def test_openvino_runs_gfpgan_in_float32_and_codeformer_in_bf16_where_the_cpu_has_it():
    assert openvino_precision("gfpgan", "auto", native_bf16=True) == "fp32"
    assert openvino_precision("codeformer", "auto", native_bf16=True) == "bf16"
    assert openvino_precision("codeformer", "auto", native_bf16=False) == "fp32"
    assert openvino_precision("codeformer", "fp32", native_bf16=True) == "fp32"
    assert openvino_precision("codeformer", "bf16", native_bf16=False) == "bf16"  # asked for explicitly
    with pytest.warns(UserWarning, match="precision bf16 is not run on OpenVINO for gfpgan; it runs in fp32"):
        assert openvino_precision("gfpgan", "bf16", native_bf16=True) == "fp32"
    with pytest.warns(UserWarning, match="precision fp16 is not run on OpenVINO for codeformer"):
        assert openvino_precision("codeformer", "fp16", native_bf16=True) == "fp32"
    with pytest.raises(ConfigError, match="precision must be one of"):
        openvino_precision("codeformer", "int8", native_bf16=True)


def test_the_converted_model_is_keyed_by_the_checkpoints_hash_and_openvinos_version(tmp_path):
    checkpoint = tmp_path / "GFPGANv1.4.pth"
    checkpoint.write_bytes(b"one")
    first = converted_model_path(checkpoint, "gfpgan", "2026.4.1-22982-e213a147257-releases/2026/4")
    assert first.parent == tmp_path / ".openvino" and first.name.endswith("-ov2026.4.1.xml")
    assert converted_model_path(checkpoint, "gfpgan", "2027.0.0") != first
    part = converted_model_path(checkpoint, "codeformer", "2026.4.1", "v1-blocks12to21")
    assert part.name.endswith("-ov2026.4.1-v1-blocks12to21.xml") and part.name.startswith("codeformer-")
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


# The seeded official-layout CodeFormer on crops of examples/face.mp4 (where bf16 autocast of the whole
# network flipped codes): OpenVINO float32 equals torch float32 at two fidelities (an input of the
# graphs, not a constant), bf16 for the 64-256 px blocks stays within a grey level, and the second load
# reads the eight saved files back.
_CODEFORMER_CONVERT_AND_COMPARE = """
import sys
from pathlib import Path
import cv2
import numpy as np
import torch
torch.set_num_threads(2)
from pipeline.core.devices import cpu_has_native_bf16
from pipeline.core.media import FrameSize, VideoReader
from restore import openvino_backend
from restore.restorers import load_restorer
from tests.test_restore_support import layout_state_dict

checkpoint = Path(sys.argv[1])
torch.save({"params_ema": layout_state_dict("codeformer", seed=2)}, checkpoint)
with VideoReader(Path("examples/face.mp4"), FrameSize(320, 320), 25.0, batch_size=1) as reader:
    frames = next(iter(reader))
faces = np.stack([cv2.resize(f[60:260, 60:260], (512, 512), interpolation=cv2.INTER_CUBIC) for f in frames])
reference = load_restorer(checkpoint, "cpu", "fp32")
float32 = load_restorer(checkpoint, "cpu", "fp32", "openvino")
assert (float32.backend, float32.precision) == ("openvino", "fp32")
grey = lambda a, b: float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
expected = {w: reference.restore_aligned(faces, w) for w in (0.0, 1.0)}
assert grey(expected[0.0], expected[1.0]) > 5  # the fidelity matters on this input (7.1 measured)
for w, want in expected.items():
    got = float32.restore_aligned(faces, w)
    assert grey(got, want) < 0.05, (w, grey(got, want))


def no_conversion(*_):
    raise AssertionError("converted again although saved models exist")


openvino_backend._convert = no_conversion
if cpu_has_native_bf16():
    reduced = load_restorer(checkpoint, "cpu", "bf16", "openvino")
    assert reduced.precision == "bf16"
    hints = [str(graph.get_property("INFERENCE_PRECISION_HINT")) for graph in reduced._forward.compiled]
    assert [("bfloat16" in hint) for hint in hints] == [False, False, True, False], hints
    difference = grey(reduced.restore_aligned(faces, 1.0), expected[1.0])
    assert difference > 0  # bf16 did run
    print("bf16 grey", difference)
else:
    load_restorer(checkpoint, "cpu", "fp32", "openvino")
    print("bf16 not run: no native bf16 on this CPU")
"""


@needs_openvino
@pytest.mark.slow
def test_openvino_codeformer_equals_torch_and_bf16_stays_within_a_grey_level(tmp_path):
    checkpoint = tmp_path / "codeformer.pth"
    command = [sys.executable, "-c", _CODEFORMER_CONVERT_AND_COMPARE, str(checkpoint)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    if "bf16 grey" in result.stdout:
        assert float(result.stdout.split()[-1]) < 1.0
    else:
        assert "no native bf16" in result.stdout
    saved = sorted(p.name.split("-", 3)[3] for p in (tmp_path / ".openvino").iterdir())
    parts = ["v1-codes", "v1-blocks0to12", "v1-blocks12to21", "v1-blocks21to25"]  # 25 generator blocks
    assert saved == sorted(f"{part}{ext}" for part in parts for ext in (".bin", ".xml"))
