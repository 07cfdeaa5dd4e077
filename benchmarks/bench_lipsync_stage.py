#!/usr/bin/env python3
"""The lip-sync stage against the bare generator forward, at the same batch and precision, alternating.

The stage (``LipSyncer.process`` on a batch of 720p frames with a fixed box: crop, face and mel inputs,
the forward, the uint8 faces, the feathered paste) and the bare forward (the network alone on inputs
already in its dtype and layout) run in turn in one process, and the ratio of each pair is printed, with
the time of the stage's parts. The stage's time in a real render is larger than here by what the ffmpeg
decoder and encoder beside it take from the same cores.

    python benchmarks/bench_lipsync_stage.py                    # --precision auto, batch 16, 8 pairs
    python benchmarks/bench_lipsync_stage.py --precision fp32 --batch 16 --rounds 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_lipsync_stage"))
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    import pipeline
    from pipeline.core.devices import resolve_precision, to_channels_last
    from pipeline.core.types import FaceBox, FrameBatch
    from tests.weights_fixtures import write_official_checkpoint
    from wav2lip.config import Wav2LipConfig
    from wav2lip.inference import LipSyncer
    from wav2lip.loading import load_generator_for_inference
    from wav2lip.models.fusion import weight_dtype

    pipeline._return_freed_frames_to_the_system()  # the allocator settings a render runs with
    checkpoint = args.workdir / "wav2lip_seeded.pth"
    if not checkpoint.exists():
        write_official_checkpoint("wav2lip_generator", checkpoint)
    precision = resolve_precision(args.precision, "cpu")
    model = to_channels_last(load_generator_for_inference(checkpoint, "cpu", precision))
    syncer = LipSyncer(model, Wav2LipConfig(batch_size=args.batch), "cpu", precision, in_place=True)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (args.batch, 720, 1280, 3), np.uint8)
    mels = rng.uniform(-4, 4, (args.batch, 80, 16)).astype(np.float32)
    box = FaceBox(180, 540, 460, 820)
    dtype = weight_dtype(model)
    faces_in = torch.rand(args.batch, 6, 96, 96).to(dtype).contiguous(memory_format=torch.channels_last)
    mels_in = torch.rand(args.batch, 1, 80, 16).to(dtype)

    def bare() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model(mels_in, faces_in)
        return time.perf_counter() - start

    def stage() -> float:
        batch = FrameBatch(0, frames.copy(), (box,) * args.batch, mels)
        start = time.perf_counter()
        syncer.process(batch)
        return time.perf_counter() - start

    bare(), stage()  # warm-up: oneDNN builds its kernels on the first call
    pairs = [(bare(), stage()) for _ in range(args.rounds)]
    per_frame = 1000 / args.batch
    ratios = [s / b for b, s in pairs]
    bare_ms = statistics.median(b for b, _ in pairs) * per_frame
    stage_ms = statistics.median(s for _, s in pairs) * per_frame
    print(
        f"precision {precision}, batch {args.batch}: bare forward {bare_ms:.1f} ms/frame,"
        f" stage {stage_ms:.1f}"
        f" ms/frame; stage/bare per pair {' '.join(f'{r:.2f}' for r in ratios)}"
        f" (median {statistics.median(ratios):.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
