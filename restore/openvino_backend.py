"""GFPGAN on OpenVINO's CPU runtime: the same network and weights, 2-3x faster than torch on the CPU.

The loaded torch module (spandrel's GFPGANv1Clean with the checkpoint's stored noise) is converted once
with ``openvino.convert_model`` for a static ``(1, 3, 512, 512)`` input, saved beside the weights as
``.openvino/<kind>-<first 16 hex of the checkpoint's SHA-256>-ov<version>.xml`` (``.bin`` beside it)
and compiled for the CPU in float32 (``INFERENCE_PRECISION_HINT f32``): its output equals torch's float32
output to a fraction of a grey level (measured 0.07 mean, 0.3 max on the 0..255 scale), unlike bfloat16,
which moves a seeded GFPGAN by over 2 grey levels. Conversion takes about 15 s on two cores, once per
checkpoint; later runs read the saved model. Where the weights folder is not writable the converted model
is used without being saved.

Only GFPGAN: CodeFormer's fidelity ``w`` would be a constant of the converted graph, and OpenVINO gains
it 1.3x at equal output against GFPGAN's 2.5-3.6x (``benchmarks/RESULTS.md``). Torch stays the reference
and the path on every other device.
"""

from __future__ import annotations

import importlib.util
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline.core.weight_store import sha256_of

OPENVINO_KINDS = ("gfpgan",)
BACKENDS = ("auto", "torch", "openvino")
CACHE_FOLDER = ".openvino"


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def use_openvino(backend: str, kind: str, device: torch.device, precision: str) -> bool:
    """Whether a restorer of ``kind`` runs on OpenVINO: ``backend`` "openvino", or "auto" for a GFPGAN on
    the CPU whose precision is auto or fp32 (OpenVINO runs it in fp32, faster than torch in bf16)."""
    if backend == "torch" or device.type != "cpu" or kind not in OPENVINO_KINDS:
        return False
    if backend == "openvino":
        return True
    return precision in ("auto", "fp32") and openvino_available()


def converted_model_path(checkpoint: Path, kind: str, version: str) -> Path:
    """Where the converted model of ``checkpoint`` lives: keyed by the file's SHA-256 and OpenVINO's
    version, so a changed checkpoint or an upgraded OpenVINO converts anew."""
    digest = sha256_of(checkpoint)[:16]
    return checkpoint.parent / CACHE_FOLDER / f"{kind}-{digest}-ov{version.split('-')[0]}.xml"


class _GFPGANGraph(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, forward: Callable) -> None:
        super().__init__()
        self.model, self.forward_fn = model, forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_fn(self.model, x, 0.0)


class OpenVINOForward:
    """A restorer forward ``(model, x, fidelity) -> output`` run by a compiled OpenVINO model, one face
    at a time (the converted input is static: the CPU restores one face per pass anyway). Each calling
    thread (a batch's workers) has its own infer request: a compiled model's call shares one."""

    def __init__(self, compiled) -> None:
        self.compiled = compiled
        self._requests = threading.local()

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, fidelity: float) -> torch.Tensor:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.compiled.create_infer_request()
        faces = x.detach().float().contiguous().numpy()
        outputs = [request.infer([faces[i : i + 1]])[0] for i in range(len(faces))]  # copied out
        return torch.from_numpy(np.concatenate(outputs))


def compile_for_cpu(
    model: torch.nn.Module, forward: Callable, kind: str, checkpoint: Path, face_size: int = 512
) -> OpenVINOForward:
    """The OpenVINO version of ``forward(model, x, fidelity)`` for ``checkpoint``, converted or read back."""
    import openvino

    path = converted_model_path(Path(checkpoint), kind, openvino.__version__)
    core = openvino.Core()
    if path.is_file():
        converted = core.read_model(path)
    else:
        converted = _convert(model, forward, (1, 3, face_size, face_size))
        _save(openvino, converted, path)
    settings = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    return OpenVINOForward(core.compile_model(converted, "CPU", settings))


def _convert(model: torch.nn.Module, forward: Callable, shape: tuple[int, int, int, int]):
    import openvino

    example = torch.zeros(shape)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on spandrel's shape arithmetic
        return openvino.convert_model(
            _GFPGANGraph(model, forward).eval(), example_input=example, input=[list(shape)]
        )


def _save(openvino, converted, path: Path) -> None:
    """Save via a temporary name (a killed run leaves no half-written model); unwritable: skip."""
    partial = path.with_name(f".{path.stem}.partial.xml")
    try:
        path.parent.mkdir(exist_ok=True)
        openvino.save_model(converted, partial, compress_to_fp16=False)
        partial.with_suffix(".bin").replace(path.with_suffix(".bin"))
        partial.replace(path)
    except OSError:
        for leftover in (partial, partial.with_suffix(".bin")):
            leftover.unlink(missing_ok=True)
