"""GFPGAN and CodeFormer on OpenVINO's CPU runtime: the same networks and weights, faster than torch on
the CPU.

The loaded torch module is converted once with ``openvino.convert_model`` for a static one-face input,
saved beside the weights as ``.openvino/<kind>-<first 16 hex of the checkpoint's SHA-256>-ov<version>
[-<part>].xml`` (``.bin`` beside it; a changed checkpoint or another OpenVINO converts anew), and
compiled for the CPU. Where the weights folder is not writable the converted model is used unsaved.

- GFPGAN: one graph, in float32 (``INFERENCE_PRECISION_HINT f32``): its output equals torch's float32
  output to a fraction of a grey level (measured 0.07 mean, 0.3 max on the 0..255 scale), unlike
  bfloat16, which moves a seeded GFPGAN by over 2 grey levels. 2.5-3.6x torch's float32.
- CodeFormer: the stages of :mod:`restore.codeformer`, one graph each: the code choice (encoder,
  transformer, top-1) always in float32, then the generator's segments, the 64-256 px one in bfloat16
  when the precision is bf16 (``auto`` on a CPU with native bf16) and the others in float32. The
  fidelity ``w`` is an input of the generator graphs, so one conversion serves every fidelity.

Conversion takes 15-75 s on two cores, once per checkpoint. Torch stays the reference and the path on
every other device.
"""

from __future__ import annotations

import importlib.util
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.core.devices import PRECISION_CHOICES
from pipeline.core.errors import ConfigError
from pipeline.core.weight_store import sha256_of
from restore.codeformer import (
    GeneratorSegment,
    choose_codes,
    generator_segments,
    run_generator_segment,
)

BACKENDS = ("auto", "torch", "openvino")
# The precisions each kind runs in on OpenVINO (resolved names): GFPGAN float32 only; CodeFormer float32,
# or bf16 for its 64-256 px generator blocks (the same blocks as torch's staged forward; inside that
# segment OpenVINO may keep the stream between blocks in bf16, where torch casts it back after each one).
OPENVINO_PRECISIONS = {"gfpgan": ("fp32",), "codeformer": ("fp32", "bf16")}
OPENVINO_KINDS = tuple(OPENVINO_PRECISIONS)
CACHE_FOLDER = ".openvino"
HINTS = {False: "f32", True: "bf16"}  # a graph's INFERENCE_PRECISION_HINT by "runs reduced"
CODEFORMER_FEATURE_SIZES = ("32", "64", "128", "256")  # encoder features the generator fuses, in order
# Part of CodeFormer's cached file names: raise it when what a graph computes changes (the stages of
# restore.codeformer, their inputs and outputs), so that files of the old graphs are never chained with new.
CODEFORMER_GRAPHS_VERSION = 1


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def use_openvino(backend: str, kind: str, device: torch.device, precision: str) -> bool:
    """Whether a restorer of ``kind`` runs on OpenVINO: ``backend`` "openvino", or "auto" for a GFPGAN or
    CodeFormer on the CPU whose precision (as asked) is auto or one OpenVINO runs it in."""
    if backend == "torch" or device.type != "cpu" or kind not in OPENVINO_KINDS:
        return False
    if backend == "openvino":
        return True
    return (precision == "auto" or precision in OPENVINO_PRECISIONS[kind]) and openvino_available()


def openvino_precision(kind: str, requested: str, native_bf16: bool) -> str:
    """The precision OpenVINO runs ``kind`` in when ``requested`` ("auto": bf16 where the CPU has native
    bf16 and ``kind`` runs in it); an explicit choice it does not run falls back to fp32, with a warning."""
    if requested not in PRECISION_CHOICES:
        raise ConfigError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {requested!r}")
    runs = OPENVINO_PRECISIONS[kind]
    if requested == "auto":
        return "bf16" if native_bf16 and "bf16" in runs else "fp32"
    if requested in runs:
        return requested
    warnings.warn(f"precision {requested} is not run on OpenVINO for {kind}; it runs in fp32", stacklevel=2)
    return "fp32"


def converted_model_path(checkpoint: Path, kind: str, version: str, part: str = "") -> Path:
    """Where the converted model (or its ``part``) of ``checkpoint`` lives: keyed by the file's SHA-256
    and OpenVINO's version, so a changed checkpoint or an upgraded OpenVINO converts anew."""
    digest = sha256_of(checkpoint)[:16]
    suffix = f"-{part}" if part else ""
    return checkpoint.parent / CACHE_FOLDER / f"{kind}-{digest}-ov{version.split('-')[0]}{suffix}.xml"


@dataclass
class Graph:
    """One converted piece of a restorer (a ``part`` of :func:`graph_parts`), ``module`` traced on
    ``example``."""

    part: str
    module: torch.nn.Module
    example: tuple[torch.Tensor, ...]


class _WholeNetwork(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, forward: Callable) -> None:
        super().__init__()
        self.model, self.forward_fn = model, forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_fn(self.model, x, 0.0)


class _CodeChoiceGraph(torch.nn.Module):
    """Face -> (quantised features, the encoder features at 32, 64, 128 and 256 px)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        choice = choose_codes(self.model, x)
        return (choice.quantised, *(choice.encoder_features[size] for size in CODEFORMER_FEATURE_SIZES))


class _GeneratorSegmentGraph(torch.nn.Module):
    """(stream, the four encoder features, fidelity) -> the stream after one generator segment."""

    def __init__(self, model: torch.nn.Module, segment: GeneratorSegment) -> None:
        super().__init__()
        self.model, self.segment = model, segment

    def forward(self, x: torch.Tensor, *features_and_fidelity: torch.Tensor) -> torch.Tensor:
        *features, fidelity = features_and_fidelity
        encoder_features = dict(zip(CODEFORMER_FEATURE_SIZES, features))
        return run_generator_segment(self.model, self.segment, x, encoder_features, fidelity)


def restorer_graphs(model: torch.nn.Module, forward: Callable, kind: str, face_size: int) -> list[Graph]:
    """The pieces ``kind`` is converted in, with example inputs (CodeFormer's: one float32 forward of a
    blank face, made once at conversion)."""
    face = torch.zeros(1, 3, face_size, face_size)
    if kind != "codeformer":
        return [Graph("", _WholeNetwork(model, forward), (face,))]
    fidelity = torch.tensor(0.5)
    (codes_part, _), *segment_parts = graph_parts(model, kind)
    with torch.no_grad():
        quantised, *features = _CodeChoiceGraph(model)(face)
        graphs, stream = [Graph(codes_part, _CodeChoiceGraph(model), (face,))], quantised
        for segment, (part, _) in zip(generator_segments(model), segment_parts, strict=True):
            piece = _GeneratorSegmentGraph(model, segment)
            graphs.append(Graph(part, piece, (stream, *features, fidelity)))
            stream = piece(stream, *features, fidelity)
    return graphs


class OpenVINOForward:
    """A restorer forward ``(model, x, fidelity) -> output`` run by compiled OpenVINO graphs in a chain,
    one face at a time (the converted inputs are static: the CPU restores one face per pass anyway). The
    first graph takes the face and gives the stream and any side inputs (CodeFormer's encoder features);
    each later one takes (stream, side inputs, fidelity) and gives the next stream. Each calling thread
    (a batch's workers) has its own infer requests: a compiled model's call shares one."""

    def __init__(self, compiled: list) -> None:
        self.compiled = compiled
        self._requests = threading.local()

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, fidelity: float) -> torch.Tensor:
        requests = getattr(self._requests, "requests", None)
        if requests is None:
            requests = self._requests.requests = [graph.create_infer_request() for graph in self.compiled]
        faces = x.detach().float().contiguous().numpy()
        weight = np.array(fidelity, np.float32)
        outputs = []
        for i in range(len(faces)):
            first = requests[0].infer([faces[i : i + 1]])  # copied out
            stream, side = first[0], [first[k] for k in range(1, len(first))]
            for request in requests[1:]:
                stream = request.infer([stream, *side, weight])[0]
            outputs.append(stream)
        return torch.from_numpy(np.concatenate(outputs))


def compile_for_cpu(
    model: torch.nn.Module,
    forward: Callable,
    kind: str,
    checkpoint: Path,
    face_size: int = 512,
    precision: str = "fp32",
) -> OpenVINOForward:
    """The OpenVINO version of ``forward(model, x, fidelity)`` for ``checkpoint``, converted or read back;
    ``precision`` "bf16" runs the graphs marked reduced in bfloat16 (see :func:`openvino_precision`)."""
    import openvino

    core = openvino.Core()
    graphs: list[Graph] | None = None
    compiled = []
    for index, (part, reduced_part) in enumerate(graph_parts(model, kind)):
        path = converted_model_path(Path(checkpoint), kind, openvino.__version__, part)
        if path.is_file():
            converted = core.read_model(path)
        else:
            graphs = graphs or restorer_graphs(model, forward, kind, face_size)
            converted = _convert(graphs[index])
            _save(openvino, converted, path)
        hint = HINTS[precision == "bf16" and reduced_part]
        settings = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": torch.get_num_threads()}
        compiled.append(core.compile_model(converted, "CPU", settings))
    return OpenVINOForward(compiled)


def graph_parts(model: torch.nn.Module, kind: str) -> list[tuple[str, bool]]:
    """``(part name, runs reduced)`` of each graph ``kind`` is converted in, in the chain's order."""
    if kind != "codeformer":
        return [("", False)]
    version = f"v{CODEFORMER_GRAPHS_VERSION}"
    blocks = [(f"{version}-blocks{s.start}to{s.stop}", s.reduced) for s in generator_segments(model)]
    return [(f"{version}-codes", False), *blocks]


def _convert(graph: Graph):
    import openvino

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on spandrel's shape arithmetic
        return openvino.convert_model(
            graph.module.eval(), example_input=graph.example, input=[list(t.shape) for t in graph.example]
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
