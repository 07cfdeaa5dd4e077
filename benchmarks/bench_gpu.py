#!/usr/bin/env python3
"""The GPU figures of issue 18 in one short run (under 10 minutes on an H100/H200 class GPU).

    python benchmarks/bench_gpu.py                  # on the GPU machine (see README.md for its setup)
    python benchmarks/bench_gpu.py --dry-run        # tiny sizes on the CPU: checks that the script runs

Prints one JSON line per figure:

1. ``restore``: restored faces/s of GFPGAN at 512x512 by precision (fp32, bf16; GFPGAN has no fp16)
   and batch, through ``FaceRestorer.restore_aligned`` (uint8 in and out: uploads, conversion and the
   copy back are included).
2. ``pipeline``: lip-sync + GFPGAN (with the parsing mask and the paste) on 1280x720 frames with one face,
   frames/s, in streaming batches as the render makes them; decoding and encoding are not included
   (``encode`` times the chosen encoder alone on the same frames, where ffmpeg is there).
3. ``oom_backoff``: the restorer under an artificially small memory cap
   (``torch.cuda.set_per_process_memory_fraction``): the batch sizes tried, the size it settled on, and
   how far the faces are from those of a run without the cap (grey levels). ``--dry-run`` simulates
   the out-of-memory error instead.
4. ``gan_amp``: discriminator steps under float16 autocast with a saturated discriminator (logits about
   30, where a float16 sigmoid is exactly 1.0): the loss scale before and after and the steps skipped.

Checkpoints are seeded in the official layouts (compute does not depend on the values); the restorer's
landmarks are a fixed, plausible face in the middle of the frame (a seeded detector finds no face).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# oom_batch: faces asked for per forward in the out-of-memory figure; disc_batch: clips per GAN step
FULL = {"face": 512, "frame": (720, 1280), "face_px": 300, "batches": "8,16,32", "frames": 96}
FULL.update(cap_gib=4.0, oom_batch=64, disc_batch=4)
DRY = {"face": 64, "frame": (90, 160), "face_px": 48, "batches": "1,2", "frames": 4}
DRY.update(cap_gib=0.0, oom_batch=8, disc_batch=1)
DRY_OOM_LIMIT = 2  # --dry-run: batches above this many faces fail as if out of memory


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (checks the script)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --dry-run")
    parser.add_argument("--seconds", type=float, default=None, help="timing per figure (default 8, dry 0)")
    parser.add_argument("--batches", default=None, help="restorer batch sizes (default 8,16,32)")
    parser.add_argument("--frames", type=int, default=None, help="720p frames in the pipeline figure")
    parser.add_argument("--frame-batch", type=int, default=24, help="frames per streaming batch (720p: 24)")
    parser.add_argument("--cap-gib", type=float, default=None, help="memory cap of the OOM figure (GiB)")
    parser.add_argument("--skip", default="", help="comma list of figures to leave out")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lipsync-bench-gpu")
    args = parser.parse_args(argv)
    sizes = DRY if args.dry_run else FULL
    args.device = args.device or ("cpu" if args.dry_run else "cuda")
    args.seconds = (0.0 if args.dry_run else 8.0) if args.seconds is None else args.seconds
    args.batches = [int(b) for b in (args.batches or sizes["batches"]).split(",")]
    args.frames = args.frames or sizes["frames"]
    args.cap_gib = sizes["cap_gib"] if args.cap_gib is None else args.cap_gib
    args.sizes = sizes
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from pipeline.core.devices import configure_backends

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; use --dry-run on a CPU", file=sys.stderr)
        return 2
    configure_backends(args.device)
    if args.dry_run:
        torch.set_num_threads(1)  # tiny forwards: a second spinning thread only slows a shared CPU
    figures: dict[str, Callable[[argparse.Namespace], list[dict]]] = {
        "restore": bench_restore,
        "pipeline": bench_pipeline,
        "oom_backoff": bench_oom_backoff,
        "gan_amp": bench_gan_amp,
    }
    skipped = set(filter(None, args.skip.split(",")))
    for name, figure in figures.items():
        if name in skipped:
            continue
        for row in figure(args):
            print(json.dumps({"figure": name, **row}), flush=True)
    return 0


# ---------------------------------------------------------------- models


def make_restorer(args: argparse.Namespace, precision: str):
    from restore.restorers import load_restorer

    if args.dry_run:
        from pipeline.core.devices import resolve_precision
        from tests.test_restore_support import tiny_gfpgan

        restorer = tiny_gfpgan(seed=1)
        restorer.precision = resolve_precision(precision, "cpu", supports_half=False)
        return restorer
    from tests.weights_fixtures import write_official_checkpoint

    path = args.workdir / "GFPGANv1.4.pth"
    if not path.exists():
        write_official_checkpoint("gfpgan_v1_clean_512", path)
    return load_restorer(path, args.device, precision)


def make_parser(args: argparse.Namespace):
    if args.dry_run:
        from tests.test_restore_support import tiny_parser

        return tiny_parser(seed=2)
    from restore.parsing import load_parser
    from tests.weights_fixtures import write_official_checkpoint

    path = args.workdir / "parsing_parsenet.pth"
    if not path.exists():
        write_official_checkpoint("parsenet_512", path)
    return load_parser(path, args.device)


def make_lipsyncer(args: argparse.Namespace):
    from tests.weights_fixtures import write_official_checkpoint
    from wav2lip.config import Wav2LipConfig
    from wav2lip.inference import LipSyncer
    from wav2lip.loading import load_generator

    path = args.workdir / "wav2lip_gan.pth"
    if not path.exists():
        write_official_checkpoint("wav2lip_generator", path)
    return LipSyncer(load_generator(path, args.device), Wav2LipConfig(), args.device, "auto")


def random_faces(count: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def timed_rate(run: Callable[[], int], seconds: float) -> float:
    """Items per second of ``run()`` (returns the items it did): one warm-up call, then calls until
    ``seconds`` have passed (at least one). ``run`` returns CPU arrays, so the GPU work is finished."""
    run()
    done, start = 0, time.perf_counter()
    while True:
        done += run()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


# ---------------------------------------------------------------- 1. restored faces/s


def bench_restore(args: argparse.Namespace) -> list[dict]:
    size = args.sizes["face"]
    rows = []
    for precision in ("fp32", "bf16"):
        restorer = make_restorer(args, precision)
        for batch in args.batches:
            faces = random_faces(batch, size)
            rate = timed_rate(lambda r=restorer, f=faces: len(r.restore_aligned(f)), args.seconds)
            rows.append({"precision": restorer.precision, "batch": batch, "faces_per_s": round(rate, 1)})
    return rows


# ---------------------------------------------------------------- 2. 720p lip-sync + GFPGAN


def face_frames(args: argparse.Namespace):
    """FrameBatches of the pipeline figure: smooth random frames, one face box with landmarks."""
    from pipeline.core.types import FaceBox, FrameBatch
    from restore.align import face_template

    height, width = args.sizes["frame"]
    side = args.sizes["face_px"]
    top, left = (height - side) // 2, (width - side) // 2
    landmarks = (face_template(512) * (side / 512.0) + [left, top]).astype(np.float32)
    face = FaceBox(top, top + side, left, left + side, landmarks=landmarks)
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    frame = np.kron(base, np.ones((8, 8, 1), np.uint8))  # blocky, not noise: a cheap stand-in image
    batches = []
    for start in range(0, args.frames, args.frame_batch):
        n = min(args.frame_batch, args.frames - start)
        mel = rng.uniform(-4, 0, (n, 80, 16)).astype(np.float32)
        batches.append(FrameBatch(start, np.repeat(frame[None], n, 0), (face,) * n, mel))
    return batches


def bench_pipeline(args: argparse.Namespace) -> list[dict]:
    from restore.config import RestoreConfig
    from restore.stage import FaceRestoreStage

    lipsyncer = make_lipsyncer(args)
    stage = FaceRestoreStage(make_restorer(args, "auto"), RestoreConfig(), make_parser(args))
    batches = face_frames(args)
    outputs: list[np.ndarray] = []

    def run() -> int:
        outputs.clear()
        synced = (lipsyncer.process(batch) for batch in batches)
        outputs.extend(batch.frames for batch in stage.process_stream(synced))  # as a render runs it
        return sum(len(b) for b in batches)

    rate = timed_rate(run, args.seconds)
    height, width = args.sizes["frame"]
    row = {
        "size": f"{width}x{height}",
        "frames_per_s": round(rate, 1),
        "frame_batch": args.frame_batch,
        "lip_sync": lipsyncer.precision,
        "restore": stage.restorer.precision,
        "restore_batch": stage.batches.size,
    }
    return [row, *bench_encode(args, np.concatenate(outputs))]


def bench_encode(args: argparse.Namespace, frames: np.ndarray) -> list[dict]:
    """The chosen encoder alone on the pipeline's frames (none where ffmpeg is missing)."""
    import torch

    from pipeline.core.encoders import choose_encoder
    from pipeline.core.errors import FFmpegError
    from pipeline.core.media import FrameSize, VideoWriter
    from pipeline.core.types import AudioClip

    try:
        encoder = choose_encoder("auto", torch.device(args.device).type)
    except FFmpegError as exc:
        return [{"encode": f"skipped: {exc}"}]
    rows = []
    for name in sorted({encoder, "x264"}):
        audio = AudioClip(np.zeros(16000 * len(frames) // 25, np.float32), 16000)
        size = FrameSize(frames.shape[2], frames.shape[1])
        start = time.perf_counter()
        with VideoWriter(args.workdir / f"encode-{name}.mp4", size, 25, 18, "medium", audio, name) as writer:
            writer.write(frames)
            writer.commit()
        rows.append(
            {"encoder": name, "encode_frames_per_s": round(len(frames) / (time.perf_counter() - start), 1)}
        )
    return rows


# ---------------------------------------------------------------- 3. out-of-memory back-off


def bench_oom_backoff(args: argparse.Namespace) -> list[dict]:
    import torch

    from pipeline.core.adaptive_batch import AdaptiveBatch

    restorer = make_restorer(args, "fp32")
    asked = args.sizes["oom_batch"]
    faces = random_faces(asked, args.sizes["face"])
    reference = restorer.restore_aligned(faces)  # before the cap: one batch of them all fits
    tried: list[int] = []
    forward = restorer.restore_aligned

    def run(start: int, stop: int) -> np.ndarray:
        tried.append(stop - start)
        if args.dry_run and stop - start > DRY_OOM_LIMIT:  # no memory cap on a CPU: simulated
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated by --dry-run)")
        return forward(faces[start:stop])

    batches = AdaptiveBatch(asked, "face restoration")
    capped = not args.dry_run and args.cap_gib > 0
    if capped:
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(torch.device(args.device)).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gib * 2**30 / total), args.device)
    try:
        restored = np.concatenate(batches.map(asked, run))
    finally:
        if capped:
            torch.cuda.set_per_process_memory_fraction(1.0, args.device)
    return [
        {
            "cap_gib": args.cap_gib if capped else "simulated",
            "asked_batch": asked,
            "tried": tried,
            "settled_batch": batches.size,
            # batch size may change float rounding on a GPU (other kernels), not more than a level or so
            "max_level_difference_to_uncapped": int(np.abs(restored.astype(int) - reference).max()),
        }
    ]


# ---------------------------------------------------------------- 4. one GAN step under AMP


def bench_gan_amp(args: argparse.Namespace, steps: int = 3) -> list[dict]:
    import torch

    from wav2lip.models import Wav2LipDiscQual
    from wav2lip.training import objectives

    device = torch.device(args.device)
    disc = Wav2LipDiscQual().to(device)
    with torch.no_grad():
        disc.binary_pred[0].bias.fill_(30.0)  # saturated: float16 sigmoid(30) is exactly 1.0
    optimizer = torch.optim.Adam(disc.parameters(), lr=1e-4)
    scaler = objectives.make_scaler(device, True)
    before_bias = disc.binary_pred[0].bias.detach().clone()
    scales, skipped = [], 0
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with objectives.autocast(device, True):
            clips = torch.rand(args.sizes["disc_batch"], 3, 5, 96, 96, device=device)
            logits = disc(clips, logits=True)
            loss = objectives.bce_logits(logits, 0.0)
        scaler.scale(loss).backward()
        scale = scaler.get_scale() if scaler.is_enabled() else 1.0
        scaler.step(optimizer)
        scaler.update()
        after = scaler.get_scale() if scaler.is_enabled() else 1.0
        skipped += int(after < scale)
        scales.append(after)
    moved = not torch.equal(disc.binary_pred[0].bias.detach(), before_bias)
    return [
        {
            "amp": scaler.is_enabled(),
            "steps": steps,
            "skipped_steps": skipped,
            "loss_scales": scales,
            "loss": round(float(loss.detach()), 3),
            "weights_moved": moved,
        }
    ]


if __name__ == "__main__":
    sys.exit(main())
