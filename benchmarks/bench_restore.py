#!/usr/bin/env python3
"""Restored faces per second for GFPGAN / CodeFormer at 512x512, by precision, memory layout and batch.

    python benchmarks/bench_restore.py --device cuda --batches 1,8,32 --restorers gfpgan,codeformer
    python benchmarks/bench_restore.py --device cpu --batches 1 --iters 2

Uses seeded checkpoints in the official layouts (compute does not depend on the values) and the
project's own loader and calling contract (``FaceRestorer.restore_aligned``: uint8 BGR in and out, so
the figures include pre/post-processing and the host/device copies).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LAYOUTS = {
    "gfpgan": ("gfpgan_v1_clean_512", "GFPGANv1.4.pth"),
    "codeformer": ("codeformer", "codeformer.pth"),
}
GFPGAN_TFLOP_PER_FACE = 0.4  # issue 8's estimate for a 512x512 GFPGAN forward


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--restorers", default="gfpgan,codeformer")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lipsync-bench"))
    args = parser.parse_args(argv)

    from restore import load_restorer
    from tests.weights_fixtures import write_official_checkpoint

    # The layout is the restorer's own (channels-last for CodeFormer; GFPGAN's view() needs the default).
    # GFPGAN / CodeFormer do not support float16 (spandrel's flags): fp32 against bf16 autocast.
    modes = ["fp32", "bf16"]
    faces_all = np.random.default_rng(0).integers(
        0, 256, (max(map(int, args.batches.split(","))), 512, 512, 3), dtype=np.uint8
    )
    for name in args.restorers.split(","):
        layout, file_name = LAYOUTS[name]
        path = args.workdir / "weights" / file_name
        if not path.exists():
            write_official_checkpoint(layout, path)
        for mode in modes:
            restorer = load_restorer(path, args.device, mode)
            for batch in map(int, args.batches.split(",")):
                print(
                    json.dumps(time_restorer(restorer, faces_all[:batch], args.iters, name, mode)), flush=True
                )
    return 0


def time_restorer(restorer, faces: np.ndarray, iters: int, name: str, mode: str) -> dict:
    import torch

    restorer.restore_aligned(faces, fidelity=0.7)  # warm-up (cuDNN autotune, allocator)
    if restorer.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(iters):
        restorer.restore_aligned(faces, fidelity=0.7)
    if restorer.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / iters
    row = {
        "restorer": name,
        "mode": mode,
        "batch": len(faces),
        "faces_per_s": round(len(faces) / seconds, 1),
        "ms_per_face": round(1000 * seconds / len(faces), 2),
    }
    if restorer.device.type == "cuda":
        row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        if name == "gfpgan":
            row["approx_tflops"] = round(GFPGAN_TFLOP_PER_FACE * len(faces) / seconds, 1)
    return row


if __name__ == "__main__":
    raise SystemExit(main())
