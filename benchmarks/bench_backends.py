#!/usr/bin/env python3
"""Torch against ONNX Runtime and OpenVINO as CPU back-ends: time per item and output difference.

    PYTHONPATH=/tmp/backends-pkgs python benchmarks/bench_backends.py --json /tmp/backends.json
    python benchmarks/bench_backends.py --dry-run      # tiny shapes, torch only, no back-end packages

Networks: the Wav2Lip generator (faces ``(N, 6, 96, 96)`` + mels ``(N, 1, 80, 16)``, batches
``--batches``), GFPGAN v1.4 and CodeFormer (one 512x512 face, ``--restorer-batches``). Each is a seeded
checkpoint in the official layout loaded through the project's own loader; the inputs are real face
crops from ``examples/face.mp4`` and a voiced synthetic signal's mel windows.

Back-ends, all pinned to ``--threads`` threads:
``torch_fp32``; ``torch_bf16`` (bfloat16 autocast); ``torch_project`` (what ``--precision auto`` runs:
for the generator its inference form, fused blocks with pre-packed oneDNN weights, bf16 weights on a
CPU with native bf16); ``torch_unpacked`` (the same without the pre-packed weights); ``ort`` (ONNX
Runtime CPU provider on a float32 ONNX export); ``ov_fp32`` / ``ov_bf16``
(OpenVINO on the same ONNX file, ``INFERENCE_PRECISION_HINT`` f32 / bf16; OpenVINO's own default on a
CPU with native bf16 is bf16, printed as ``ov default``); ``ov_project`` (restorers only: what
``--restore-backend openvino --precision auto`` runs, :mod:`restore.openvino_backend`, converted once
into the work folder's ``weights/.openvino/``). A back-end whose package is missing or whose
export fails is skipped with the reason printed.

Timing: the back-ends alternate inside every round (torch_fp32, torch_bf16, ort, ..., then again), so
load from other users of a shared machine hits them alike; the ratios are per round, then the median.
Times cover numpy float32 in -> numpy float32 out (the uint8 conversions are common to all). The output
difference is in grey levels of the final uint8 image (0..255) against torch_fp32 on the same input.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

NETWORKS = ("wav2lip", "gfpgan", "codeformer")
BACKENDS = (
    "torch_fp32", "torch_bf16", "torch_project", "torch_unpacked", "ort", "ov_fp32", "ov_bf16", "ov_project",
)  # fmt: skip
BACKEND_PACKAGES = {
    "ort": "onnxruntime", "ov_fp32": "openvino", "ov_bf16": "openvino", "ov_project": "openvino",
}  # fmt: skip
OV_PRECISIONS = {"ov_fp32": "f32", "ov_bf16": "bf16"}
LAYOUTS = {  # network -> (layout in /work/shared/checkpoint_layouts, official file name)
    "wav2lip": ("wav2lip_generator", "wav2lip_gan.pth"),
    "gfpgan": ("gfpgan_v1_clean_512", "GFPGANv1.4.pth"),
    "codeformer": ("codeformer", "codeformer.pth"),
}
EXAMPLE_VIDEO = REPO / "examples" / "face.mp4"
EXAMPLE_SIZE = (320, 320)  # width, height of examples/face.mp4
EXAMPLE_FPS = 25.0  # frames per second of examples/face.mp4
FACE_BOX = (60, 260, 60, 260)  # top, bottom, left, right of the face in examples/face.mp4
CODEFORMER_FIDELITY = 0.7  # CodeFormer's w, a constant of the exported graph
ONNX_OPSET = 18
SATURATED_SHARE = 0.5  # more than this share of output values at 0 or 255: the output says little


@dataclass
class Network:
    """One network under test: a module mapping float32 tensors to an ``(N, 3, H, W)`` image, its inputs
    for the largest batch and the conversion of its output to the final uint8 image."""

    name: str
    module: object  # torch.nn.Module: tensors in -> output tensor
    input_names: tuple[str, ...]
    inputs: tuple[np.ndarray, ...]  # float32, batch axis first, the largest batch
    to_uint8: Callable[[np.ndarray], np.ndarray]
    channels_last: bool  # the project feeds the image input channels-last to torch
    batches: tuple[int, ...]
    repeats: int
    notes: list[str] = field(default_factory=list)

    def batch(self, size: int) -> tuple[np.ndarray, ...]:
        return tuple(np.ascontiguousarray(x[:size]) for x in self.inputs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--networks", default=",".join(NETWORKS), help="comma list of " + ",".join(NETWORKS))
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma list of " + ",".join(BACKENDS))
    parser.add_argument("--batches", default="16,128", help="Wav2Lip generator batch sizes")
    parser.add_argument("--restorer-batches", default="1", help="GFPGAN / CodeFormer batch sizes")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds for the generator")
    parser.add_argument("--restorer-rounds", type=int, default=3, help="alternating rounds for restorers")
    parser.add_argument("--repeats", type=int, default=2, help="forwards per timing (generator)")
    parser.add_argument("--restorer-repeats", type=int, default=1, help="forwards per timing (restorers)")
    parser.add_argument("--threads", type=int, default=2, help="threads of every back-end")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lipsync-bench-backends"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--dry-run", action="store_true", help="Wav2Lip at batch 2, one round, torch only")
    args = parser.parse_args(argv)
    args.networks = _choices(parser, args.networks, NETWORKS, "--networks")
    args.backends = _choices(parser, args.backends, BACKENDS, "--backends")
    args.batches = tuple(int(b) for b in args.batches.split(","))
    args.restorer_batches = tuple(int(b) for b in args.restorer_batches.split(","))
    if args.dry_run:
        args.networks, args.batches, args.rounds, args.repeats = ("wav2lip",), (2,), 1, 1
    if min(args.rounds, args.restorer_rounds, args.repeats, args.restorer_repeats, args.threads) < 1:
        parser.error("--rounds, --restorer-rounds, --repeats, --restorer-repeats and --threads must be >= 1")
    return args


def _choices(parser: argparse.ArgumentParser, text: str, allowed: tuple[str, ...], flag: str) -> tuple:
    chosen = tuple(part for part in text.split(",") if part)
    unknown = [part for part in chosen if part not in allowed]
    if unknown or not chosen:
        parser.error(f"{flag}: unknown {unknown or 'empty list'}; choose from {', '.join(allowed)}")
    return chosen


def unavailable_reason(backend: str, dry_run: bool) -> str | None:
    """Why ``backend`` cannot run here, or None."""
    package = BACKEND_PACKAGES.get(backend)
    if package is None:
        return None
    if importlib.util.find_spec(package) is None:
        return f"{package} is not installed (pip install {package}, or put it on PYTHONPATH)"
    return "dry run (torch only)" if dry_run else None


# ---- inputs and networks -------------------------------------------------------------------------


def example_frames(count: int) -> np.ndarray:
    """``count`` frames ``(count, 320, 320, 3) uint8`` BGR of examples/face.mp4 (cycled when longer)."""
    from pipeline.core.media import FrameSize, VideoReader

    with VideoReader(EXAMPLE_VIDEO, FrameSize(*EXAMPLE_SIZE), EXAMPLE_FPS, batch_size=count) as reader:
        frames = next(iter(reader))
    return frames[np.arange(count) % len(frames)]


def speech_like_mels(count: int) -> np.ndarray:
    """``(count, 80, 16)`` mel windows of a seeded voiced signal (harmonics, syllable-rate envelope)."""
    from wav2lip.audio import SAMPLE_RATE_HZ, mel_window, melspectrogram

    seconds = count / EXAMPLE_FPS + 0.25
    t = np.arange(int(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)  # four syllables per second
    noise = np.random.default_rng(0).normal(0, 0.05, t.size)
    mel = melspectrogram((0.3 * voice * envelope + noise).astype(np.float32))
    return np.stack([mel_window(mel, i, EXAMPLE_FPS) for i in range(count)])


def checkpoint(name: str, workdir: Path) -> Path:
    from tests.weights_fixtures import write_official_checkpoint

    layout, file_name = LAYOUTS[name]
    path = workdir / "weights" / file_name
    return path if path.exists() else write_official_checkpoint(layout, path)


def wav2lip_network(args: argparse.Namespace) -> Network:
    import torch

    from pipeline.core.devices import to_channels_last
    from wav2lip.face_input import postprocess_faces, prepare_face_inputs
    from wav2lip.inference import crop_face, prepare_mel_inputs
    from wav2lip.loading import load_generator

    class Generator(torch.nn.Module):  # (faces, mels) in the order the inputs are listed
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, faces: torch.Tensor, mels: torch.Tensor) -> torch.Tensor:
            return self.model(mels, faces)

    count = max(args.batches)
    crops = np.stack([crop_face(frame, FACE_BOX) for frame in example_frames(count)])
    model = to_channels_last(load_generator(checkpoint("wav2lip", args.workdir)))  # as LipSyncer does
    inputs = (prepare_face_inputs(crops), prepare_mel_inputs(speech_like_mels(count)))
    return Network(
        "wav2lip", Generator(model), ("faces", "mels"), inputs, postprocess_faces, True, args.batches,
        args.repeats,
    )  # fmt: skip


def restorer_network(name: str, args: argparse.Namespace) -> Network:
    import cv2
    import torch

    from restore.convert import RESTORE_FACE_SIZE, faces_to_tensor, tensor_to_faces
    from restore.restorers import forward_codeformer, forward_gfpgan, load_restorer

    whole_network = {"gfpgan": forward_gfpgan, "codeformer": forward_codeformer}[name]
    restorer = load_restorer(checkpoint(name, args.workdir), "cpu", "fp32")
    top, bottom, left, right = FACE_BOX
    count = max(args.restorer_batches)
    size = (RESTORE_FACE_SIZE, RESTORE_FACE_SIZE)
    faces = np.stack(
        [
            cv2.resize(f[top:bottom, left:right], size, interpolation=cv2.INTER_CUBIC)
            for f in example_frames(count)
        ]
    )
    inputs = (faces_to_tensor(faces).numpy(),)
    channels_last = restorer.memory_format == torch.channels_last
    to_uint8 = lambda out: tensor_to_faces(torch.from_numpy(out))  # noqa: E731
    module = restorer_module(restorer.model, whole_network)
    return Network(
        name,
        module,
        ("faces",),
        inputs,
        to_uint8,
        channels_last,
        args.restorer_batches,
        args.restorer_repeats,
    )


def restorer_module(model, forward: Callable):  # torch imports late: the class is made on demand
    """``forward(model, faces, CODEFORMER_FIDELITY)`` as a module of one input (what ONNX export takes)."""
    import torch

    class Restorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, faces: torch.Tensor) -> torch.Tensor:
            return forward(self.model, faces, CODEFORMER_FIDELITY)

    return Restorer()


# ---- back-ends -----------------------------------------------------------------------------------


def torch_runner(network: Network, precision: str) -> Callable:
    import torch

    from pipeline.core.devices import precision_autocast

    def run(inputs: tuple[np.ndarray, ...]) -> np.ndarray:
        tensors = [torch.from_numpy(x) for x in inputs]
        if network.channels_last:
            tensors[0] = tensors[0].contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), precision_autocast("cpu", precision):
            return network.module(*tensors).float().numpy()

    return run


def project_runner(network: Network, args: argparse.Namespace, prepack: bool = True) -> Callable:
    """What the pipeline runs with ``--precision auto``: for the generator its inference form
    (:func:`wav2lip.loading.load_generator_for_inference`: fused blocks, bf16 weights on a bf16 CPU,
    weights pre-packed for oneDNN unless ``prepack`` is False, the form before that step);
    the restorers run as ``torch_<auto precision>`` with the pipeline's forward (CodeFormer: in stages,
    its codes chosen in float32, :mod:`restore.codeformer`); ``torch_fp32`` / ``torch_bf16`` run the
    whole network in one call."""
    import torch

    from pipeline.core.devices import resolve_precision, to_channels_last
    from wav2lip.loading import load_generator_for_inference
    from wav2lip.models.fusion import FusedConvReLU, weight_dtype

    precision = resolve_precision("auto", "cpu")
    if network.name != "wav2lip":
        from restore.restorers import torch_forward

        pipeline_form = restorer_module(network.module.model, torch_forward(network.name))
        return torch_runner(replace(network, module=pipeline_form), precision)
    model = to_channels_last(
        load_generator_for_inference(checkpoint("wav2lip", args.workdir), "cpu", precision)
    )
    dtype = weight_dtype(model)
    for block in model.modules():
        if isinstance(block, FusedConvReLU):
            block.prepack = prepack

    def run(inputs: tuple[np.ndarray, ...]) -> np.ndarray:
        faces, mels = (torch.from_numpy(x).to(dtype) for x in inputs)
        with torch.inference_mode():
            return model(mels, faces.contiguous(memory_format=torch.channels_last)).float().numpy()

    return run


def ov_project_runner(network: Network, args: argparse.Namespace) -> Callable:
    """A restorer as the pipeline loads it with ``--restore-backend openvino --precision auto``."""
    import torch

    from restore.restorers import load_restorer

    if network.name == "wav2lip":
        raise ValueError("ov_project runs the restorers only")
    started = time.perf_counter()
    restorer = load_restorer(checkpoint(network.name, args.workdir), "cpu", "auto", "openvino")
    network.notes.append(f"ov_project: {restorer.precision}, loaded in {time.perf_counter() - started:.0f} s")
    print(f"  {network.notes[-1]}", flush=True)
    return lambda inputs: restorer.run_network(torch.from_numpy(inputs[0]), CODEFORMER_FIDELITY).numpy()


def export_onnx(network: Network, workdir: Path) -> tuple[dict[int, Path], str]:
    """Export ``network`` in float32: ``({batch size: ONNX file}, how)``.

    Tried in turn: the torch.export-based exporter (``dynamo=True``) with a dynamic batch axis, then
    with static shapes (one file per batch size), then the TorchScript exporter (``dynamo=False``) the
    same two ways. GFPGAN's modulated convolutions take a kernel computed per item, which only exports
    with static shapes. The failures of the earlier tries are part of ``how``.
    """
    failures = []
    for dynamo in (True, False):
        for dynamic in (True, False):
            sizes = (2,) if dynamic else network.batches  # 2: torch.export specialises a batch of 1
            paths = {size: workdir / f"{network.name}_{'dyn' if dynamic else size}.onnx" for size in sizes}
            try:
                for size, path in paths.items():
                    _export_one(network, path, size, dynamo, dynamic)
            except Exception as exc:  # noqa: BLE001 - reported, and the next way is tried
                failures.append(f"{_way(dynamo, dynamic)} failed: {_first_line(exc)}")
                print(f"  {failures[-1]}", flush=True)
                continue
            files = {size: paths[2 if dynamic else size] for size in network.batches}
            return files, "; ".join([f"{_way(dynamo, dynamic)} worked", *failures])
    raise RuntimeError("ONNX export failed: " + " | ".join(failures))


def _export_one(network: Network, path: Path, size: int, dynamo: bool, dynamic: bool) -> None:
    import torch

    names = list(network.input_names)
    extra = {}
    if dynamic and dynamo:
        batch = torch.export.Dim("batch", min=1, max=4096)
        extra["dynamic_shapes"] = {name: {0: batch} for name in names}
    elif dynamic:
        extra["dynamic_axes"] = {name: {0: "batch"} for name in (*names, "image")}
    example = tuple(torch.from_numpy(x) for x in network.batch(size))
    with torch.no_grad():
        torch.onnx.export(
            network.module.eval(), example, str(path), input_names=names, output_names=["image"],
            opset_version=ONNX_OPSET, dynamo=dynamo, **extra,
        )  # fmt: skip


def _way(dynamo: bool, dynamic: bool) -> str:
    return f"dynamo={dynamo}, {'dynamic batch' if dynamic else 'static shapes'}"


def _first_line(exc: BaseException) -> str:
    """The innermost cause's type and first line (the exporters wrap the real reason)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


def ort_runner(files: dict[int, Path], threads: int) -> Callable:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sessions = {}
    for path in set(files.values()):
        sessions[path] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(inputs: tuple[np.ndarray, ...]) -> np.ndarray:
        session = sessions[files[len(inputs[0])]]
        names = [i.name for i in session.get_inputs()]
        return session.run(None, dict(zip(names, inputs, strict=True)))[0]

    return run


def ov_runner(files: dict[int, Path], threads: int, precision: str, network: Network) -> Callable:
    """OpenVINO compiled per batch size (static shapes compile to faster code than a dynamic batch)."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision,
              "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}  # fmt: skip
    compiled = {}
    for size, path in files.items():
        model = core.read_model(str(path))
        model.reshape({name: [size, *x.shape[1:]] for name, x in zip(network.input_names, network.inputs)})
        compiled[size] = core.compile_model(model, "CPU", config)
    return lambda inputs: compiled[len(inputs[0])](list(inputs))[0]


def build_runners(network: Network, args: argparse.Namespace) -> dict[str, Callable]:
    runners, files, export_error = {}, None, None
    for backend in args.backends:
        reason = unavailable_reason(backend, args.dry_run) or export_error
        if reason is not None and not backend.startswith("torch_"):
            print(f"  skip {backend}: {reason}", flush=True)
            continue
        try:
            if backend == "ov_project":
                runners[backend] = ov_project_runner(network, args)
                continue
            if backend in ("torch_project", "torch_unpacked"):
                runners[backend] = project_runner(network, args, prepack=backend == "torch_project")
                continue
            if backend.startswith("torch_"):
                runners[backend] = torch_runner(network, backend.removeprefix("torch_"))
                continue
            if files is None:
                export_error = "the ONNX export failed (see above)"  # not tried again for the next back-end
                files = _export_noted(network, args.workdir)
                export_error = None
            if backend == "ort":
                runners[backend] = ort_runner(files, args.threads)
            else:
                runners[backend] = ov_runner(files, args.threads, OV_PRECISIONS[backend], network)
        except Exception as exc:  # noqa: BLE001 - one back-end failing must not hide the others' figures
            network.notes.append(f"{backend} skipped: {_first_line(exc)}")
            print(f"  skip {backend}: {network.notes[-1]}", flush=True)
    return runners


def _export_noted(network: Network, workdir: Path) -> dict[int, Path]:
    started = time.perf_counter()
    files, how = export_onnx(network, workdir)
    network.notes.append(f"ONNX export: {how} ({time.perf_counter() - started:.0f} s)")
    print(f"  {network.notes[-1]}", flush=True)
    return files


# ---- measurement ---------------------------------------------------------------------------------


def grey_difference(reference: np.ndarray, other: np.ndarray) -> dict:
    diff = np.abs(reference.astype(np.int16) - other.astype(np.int16))
    return {"mean_grey": round(float(diff.mean()), 3), "max_grey": int(diff.max())}


def saturation(image: np.ndarray) -> dict:
    share = float(np.mean((image == 0) | (image == 255)))
    return {"saturated_share": round(share, 3), "std_grey": round(float(image.std()), 1)}


def measure(network: Network, runners: dict[str, Callable], rounds: int) -> list[dict]:
    """Warm up and compare outputs, then time the back-ends alternately for ``rounds`` rounds."""
    rows = {}
    for size in network.batches:
        inputs = network.batch(size)
        images = {name: network.to_uint8(run(inputs)) for name, run in runners.items()}  # also a warm-up
        reference = images.get("torch_fp32")
        for name, image in images.items():
            row = {"network": network.name, "batch": size, "backend": name, "seconds_per_item": []}
            if reference is not None:
                row.update(grey_difference(reference, image))
            row.update(saturation(image))
            rows[size, name] = row
    for round_index in range(rounds):
        for size in network.batches:
            inputs = network.batch(size)
            for name, run in runners.items():
                started = time.perf_counter()
                for _ in range(network.repeats):
                    run(inputs)
                per_item = (time.perf_counter() - started) / (network.repeats * size)
                rows[size, name]["seconds_per_item"].append(per_item)
        print(f"  round {round_index + 1}/{rounds} done", flush=True)
    return [summarise(row, rows) for row in rows.values()]


def summarise(row: dict, rows: dict) -> dict:
    times = row["seconds_per_item"]
    row["ms_per_item"] = round(1000 * statistics.median(times), 2)
    for base in ("torch_fp32", "torch_bf16"):
        base_row = rows.get((row["batch"], base))
        if base_row is not None:
            ratios = [b / t for b, t in zip(base_row["seconds_per_item"], times, strict=True)]
            row[f"speedup_vs_{base}"] = round(statistics.median(ratios), 2)
    return row


# ---- report --------------------------------------------------------------------------------------


def environment(args: argparse.Namespace) -> dict:
    import torch

    from pipeline.core.devices import cpu_has_native_bf16, resolve_precision

    info = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "cpu": _cpu_model(),
        "native_bf16": cpu_has_native_bf16(),
        "torch_auto_precision_cpu": resolve_precision("auto", "cpu"),
        "threads": args.threads,
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    for package in ("onnxruntime", "openvino", "onnx", "onnxscript"):
        if importlib.util.find_spec(package) is not None:
            info["versions"][package] = __import__(package).__version__
    if importlib.util.find_spec("openvino") is not None:
        import openvino as ov

        info["ov_default_inference_precision"] = str(
            ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
        )
    return info


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def load_now() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def print_table(rows: list[dict]) -> None:
    header = f"{'network':<11}{'batch':>6}  {'backend':<11}{'ms/item':>10}{'vs fp32':>9}{'vs bf16':>9}"
    print("\n" + header + f"{'mean grey':>11}{'max grey':>10}{'saturated':>11}")
    for row in rows:
        print(
            f"{row['network']:<11}{row['batch']:>6}  {row['backend']:<11}{row['ms_per_item']:>10.2f}"
            f"{row.get('speedup_vs_torch_fp32', float('nan')):>8.2f}x"
            f"{row.get('speedup_vs_torch_bf16', float('nan')):>8.2f}x"
            f"{row.get('mean_grey', float('nan')):>11.3f}{row.get('max_grey', -1):>10}"
            f"{row['saturated_share']:>11.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    report = {"environment": environment(args), "load_before": load_now(), "rows": [], "notes": {}}
    print(json.dumps(report["environment"]), "\nload before:", report["load_before"], flush=True)
    for name in args.networks:
        print(f"{name}:", flush=True)
        network = wav2lip_network(args) if name == "wav2lip" else restorer_network(name, args)
        runners = build_runners(network, args)
        rounds = args.rounds if name == "wav2lip" else args.restorer_rounds
        rows = measure(network, runners, rounds)
        report["rows"] += rows
        report["notes"][name] = network.notes
        report[f"load_after_{name}"] = load_now()
        print_table(rows)
        print(f"load after {name}: {report[f'load_after_{name}']}", flush=True)
        del network, runners
        if args.json:  # after each network, so a run cut short keeps what it measured
            args.json.write_text(json.dumps(report, indent=2))
    report["load_after"] = load_now()
    if len(args.networks) > 1:
        print_table(report["rows"])
    print("load after:", report["load_after"])
    for row in report["rows"]:
        if row["backend"] == "torch_fp32" and row["saturated_share"] > SATURATED_SHARE:
            print(f"note: {row['network']} output is {row['saturated_share']:.0%} saturated (seeded weights)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
