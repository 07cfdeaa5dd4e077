#!/usr/bin/env python3
"""The restore stage's wall time against the sum of its parts, pasting in turn vs in a worker thread.

    python benchmarks/bench_restore_overlap.py --faces 4 --rounds 3

Seeded GFPGAN and ParseNet checkpoints in the official layouts (compute does not depend on the values),
720p frames with one face each, one face per forward (the CPU default). "parts" = the networks' time
(restorer + parser) + the worker's mask-and-paste time; the runs alternate A/B (the machine is shared,
so compare the ratios of neighbouring runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def build_batch(faces: int):
    from pipeline.core.types import FaceBox, FrameBatch
    from pipeline.faces.landmarks import landmarks_from_box

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (faces, 720, 1280, 3), dtype=np.uint8)
    boxes = []
    for _ in range(faces):
        box = FaceBox(200, 500, 500, 760)
        boxes.append(FaceBox(box.top, box.bottom, box.left, box.right, landmarks_from_box(box)))
    return FrameBatch(
        start_index=0, frames=frames, faces=tuple(boxes), mel=np.zeros((faces, 80, 16), np.float32)
    )


class StandIn(torch.nn.Module):
    """Three 3x3 convolutions (3 -> 16 -> 16 -> 3 channels): GFPGAN's call signature, far less compute."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1),
            torch.nn.ReLU(), torch.nn.Conv2d(16, 3, 3, padding=1), torch.nn.Tanh(),
        )  # fmt: skip

    def forward(self, x, return_rgb=False, randomize_noise=False):
        return (self.body(x),)


class StandInParser:
    """ParseNet's output contract without its compute: every face labelled skin (class 1) inside a
    centred ellipse, so the mask blurs and the paste do their full work."""

    device = torch.device("cpu")
    size = 512

    def parse(self, faces: np.ndarray) -> np.ndarray:
        side = faces.shape[1]
        yy, xx = np.mgrid[:side, :side]
        inside = ((yy - side / 2) / (0.45 * side)) ** 2 + ((xx - side / 2) / (0.38 * side)) ** 2 < 1
        return np.repeat(inside[None].astype(np.int64), len(faces), axis=0)


def timed_networks(stage) -> list[float]:
    """Wrap the stage's restorer and parser so their seconds are added to the returned list."""
    spent = [0.0]
    for owner, name in ((stage.restorer, "restore_aligned"), (stage.parser, "parse")):
        inner = getattr(owner, name)

        def timed(*args, inner=inner, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        setattr(owner, name, timed)
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--faces", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lipsync-bench"))
    parser.add_argument(
        "--restorer",
        choices=["gfpgan", "stand-in"],
        default="gfpgan",
        help="stand-in: a 3-layer convolution at 512x512 in GFPGAN's calling contract and fixed parsing "
        "labels, so the networks cost about as much as the masks and the paste (GFPGAN and ParseNet take "
        "tens of seconds per face on a loaded 2-core CPU)",
    )
    args = parser.parse_args(argv)

    from restore import load_restorer
    from restore.config import RestoreConfig
    from restore.parsing import load_parser
    from restore.restorers import FaceRestorer
    from restore.stage import FaceRestoreStage
    from tests.weights_fixtures import write_official_checkpoint

    paths = {}
    for layout in () if args.restorer == "stand-in" else ("gfpgan_v1_clean_512", "parsenet_512"):
        file_name = {"gfpgan_v1_clean_512": "GFPGANv1.4.pth", "parsenet_512": "parsing_parsenet.pth"}[layout]
        paths[layout] = args.workdir / "weights" / file_name
        if not paths[layout].exists():
            write_official_checkpoint(layout, paths[layout])
    batch = build_batch(args.faces)
    cfg = RestoreConfig(batch_size=1, parsing=True)
    rows = []
    for round_index in range(args.rounds):
        for overlap in (False, True):
            if args.restorer == "stand-in":
                restorer = FaceRestorer(StandIn(), "gfpgan", torch.device("cpu"), "fp32")
            else:
                restorer = load_restorer(paths["gfpgan_v1_clean_512"], "cpu")
            if args.restorer == "stand-in":
                face_parser = StandInParser()
            else:
                face_parser = load_parser(paths["parsenet_512"], "cpu")
            stage = FaceRestoreStage(restorer, cfg, face_parser, overlap=overlap)
            networks = timed_networks(stage)
            start = time.perf_counter()
            stage.process(batch)
            wall = time.perf_counter() - start
            parts = networks[0] + stage.paste_busy_seconds
            row = {"round": round_index, "overlap": overlap, "wall_s": round(wall, 3),
                   "networks_s": round(networks[0], 3), "paste_s": round(stage.paste_busy_seconds, 3),
                   "wall_over_parts": round(wall / parts, 3)}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    for overlap in (False, True):
        ratios = [r["wall_over_parts"] for r in rows if r["overlap"] == overlap]
        print(f"overlap={overlap}: wall / (networks + paste) = {np.median(ratios):.3f} (median of {ratios})")
    pairs = [b["wall_s"] / a["wall_s"] for a, b in zip(rows[::2], rows[1::2])]
    print(f"wall(overlap) / wall(in turn), per round: {[round(p, 3) for p in pairs]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
