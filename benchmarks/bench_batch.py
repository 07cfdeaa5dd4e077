#!/usr/bin/env python3
"""A batch of short jobs in one process (models loaded once) against the same jobs as separate CLI runs.

Each job: ``examples/face.mp4`` speaking a 2 s tone-free synthetic speech clip, fixed ``--box``,
``--restorer none``, seeded full-size Wav2Lip checkpoint. The two ways alternate ``--rounds`` times so
that load from other users of a shared machine hits both alike; the ratio of each round is printed.

    python benchmarks/bench_batch.py --jobs 10 --rounds 2
    python benchmarks/bench_batch.py --workers 0,1   # also the batch with one job at a time (0 = auto)
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BOX = ["60", "260", "60", "260"]  # top, bottom, left, right in the 320x320 example
SPEECH_SECONDS = 2.0


def _speech(path: Path) -> Path:
    from tests.media_fixtures import lavfi_command

    # a voiced, amplitude-modulated signal: speech-like energy, no TTS time in the measurement
    source = f"sine=frequency=180:duration={SPEECH_SECONDS}:sample_rate=16000"
    subprocess.run([*lavfi_command(source), "-af", "tremolo=f=4:d=0.8", str(path)], check=True)
    return path


def _flags(checkpoint: Path) -> list[str]:
    return ["--wav2lip-checkpoint", str(checkpoint), "--restorer", "none", "--device", "cpu", "--box", *BOX]


def _timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", default="0", help="--batch-workers values to time, comma-separated")
    args = parser.parse_args()
    from tests.weights_fixtures import write_official_checkpoint

    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    checkpoint = write_official_checkpoint("wav2lip_generator", work / "wav2lip_gan.pth")
    speech = _speech(work / "speech.wav")
    video = REPO / "examples" / "face.mp4"
    jobs = work / "jobs.csv"
    jobs.write_text(
        "video,audio,output\n" + "".join(f"{video},{speech},job{i}.mp4\n" for i in range(args.jobs))
    )
    python = [sys.executable, str(REPO / "run_pipeline.py"), "--quiet"]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"
    )
    for round_index in range(args.rounds):
        batch_s = {
            workers: _timed([*python, "--batch", str(jobs), "-o", str(work / f"batch{round_index}w{workers}"),
                             "--batch-workers", workers, *_flags(checkpoint)])
            for workers in args.workers.split(",")
        }  # fmt: skip
        single_s = sum(
            _timed([*python, "--video", str(video), "--audio", str(speech),
                    "-o", str(work / f"single{round_index}" / f"job{i}.mp4"), *_flags(checkpoint)])
            for i in range(args.jobs)
        )  # fmt: skip
        ways = ", ".join(
            f"batch (--batch-workers {w}) {t:.1f} s, ratio {single_s / t:.2f}x" for w, t in batch_s.items()
        )
        print(f"round {round_index + 1}: {args.jobs} CLI runs {single_s:.1f} s; {ways}", flush=True)


if __name__ == "__main__":
    main()
