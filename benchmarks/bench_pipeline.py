#!/usr/bin/env python3
"""Stage-by-stage speed and memory of the real pipeline, with seeded full-size checkpoints.

Compute does not depend on weight values, so seeded checkpoints in the official layouts (the same files
the tests write) give the real cost of every stage. Each render runs in its own process so that its
peak resident memory is its own. Clips are generated with ffmpeg (``testsrc2`` at 25 fps plus a voiced
synthetic signal as speech); a fixed ``--box`` stands in for the face, since a seeded detector finds
no real face; detection is timed separately on a face image.

    python benchmarks/bench_pipeline.py                       # CPU: 640x360 and 1280x720, 10 s and 60 s
    python benchmarks/bench_pipeline.py --device cuda --restorers none,gfpgan,codeformer
    python benchmarks/bench_pipeline.py --sizes 1280x720 --durations 10 --restorers gfpgan --restore-seconds 2

Prints one JSON line per measurement and a Markdown table at the end (copy it into RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHECKPOINTS = {  # name -> (layout, file name)
    "wav2lip": ("wav2lip_generator", "wav2lip_gan.pth"),
    "gfpgan": ("gfpgan_v1_clean_512", "GFPGANv1.4.pth"),
    "codeformer": ("codeformer", "codeformer.pth"),
    "detector": ("retinaface_resnet50", "detection_Resnet50_Final.pth"),
}
# Compute in the main thread; "decode" and "encode" in a render are only the waits on the ffmpeg processes.
MODEL_STAGES = ("detect", "lip-sync", "restore", "paste")
ENCODE_SAMPLE_FRAMES = 100  # frames held in memory to time the encoder alone
OFFICIAL_CPU = {  # the official tool on our 2-core CPU, fixed box, no restoration (issue 8)
    "10 s 720p wall": 29.0,
    "10 s 720p peak GB": 3.4,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", default="640x360,1280x720")
    parser.add_argument("--durations", default="10,60", help="clip lengths in seconds")
    parser.add_argument("--restorers", default="none", help="comma list of none,gfpgan,codeformer")
    parser.add_argument(
        "--restore-seconds",
        type=float,
        default=None,
        help="clip length used for restorer runs (CPU restoration costs seconds per face)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="lip-sync batch size")
    parser.add_argument("--restore-batch", type=int, default=None)
    parser.add_argument("--preset", default=None, help="x264 preset (default: the config's)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lipsync-bench"))
    parser.add_argument(
        "--detect-frames", type=int, default=32, help="frames for the detection timing (0: skip)"
    )
    parser.add_argument(
        "--detect-clips",
        default="",
        help="comma list of SIZE:SECONDS clips (e.g. 1280x720:10) also rendered with face detection on "
        "(score threshold 0, so that the seeded detector keeps a face in every frame)",
    )
    parser.add_argument("--run-one", help=argparse.SUPPRESS)  # internal: one render in this process
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_one:
        print(json.dumps(run_one(json.loads(args.run_one))))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    weights = write_checkpoints(args.workdir / "weights")
    rows = []
    if args.detect_frames:
        rows.append(bench_detection(weights["detector"], args))
        print(json.dumps(rows[-1]), flush=True)
    for restorer in args.restorers.split(","):
        for size in args.sizes.split(","):
            durations = (
                [args.restore_seconds]
                if (restorer != "none" and args.restore_seconds)
                else [float(d) for d in args.durations.split(",")]
            )
            for seconds in durations:
                clip = make_clip(args.workdir, size, seconds)
                rows.append(render_in_subprocess(clip, size, seconds, restorer, weights, args))
                print(json.dumps(rows[-1]), flush=True)
    for clip_spec in filter(None, args.detect_clips.split(",")):
        size, seconds = clip_spec.split(":")
        clip = make_clip(args.workdir, size, float(seconds))
        rows.append(render_in_subprocess(clip, size, float(seconds), "none", weights, args, detect=True))
        print(json.dumps(rows[-1]), flush=True)
    print(markdown(rows, args))
    return 0


def write_checkpoints(folder: Path) -> dict[str, Path]:
    from tests.weights_fixtures import write_official_checkpoint

    out = {}
    for name, (layout, file_name) in CHECKPOINTS.items():
        path = folder / file_name
        if not path.exists():
            write_official_checkpoint(layout, path)
        out[name] = path
    return out


def make_clip(workdir: Path, size: str, seconds: float) -> tuple[Path, Path]:
    """A ``testsrc2`` video and a voiced speech-like signal (a 140 Hz voice with a formant, modulated)."""
    from tests.media_fixtures import lavfi_command

    video = workdir / f"clip_{size}_{seconds:g}s.mp4"
    audio = workdir / f"speech_{seconds:g}s.wav"
    if not video.exists():
        encode = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", str(video)]
        subprocess.run(lavfi_command(f"testsrc2=size={size}:rate=25:duration={seconds}") + encode, check=True)
    if not audio.exists():
        expr = "0.4*sin(2*PI*140*t)*(0.6+0.4*sin(2*PI*3*t))+0.2*sin(2*PI*900*t)*(0.5+0.5*sin(2*PI*5*t))"
        subprocess.run(lavfi_command(f"aevalsrc={expr}:s=16000:d={seconds}") + [str(audio)], check=True)
    return video, audio


def render_in_subprocess(
    clip, size: str, seconds: float, restorer: str, weights, args, detect: bool = False
) -> dict:
    width, height = (int(v) for v in size.split("x"))
    box = [height // 4, height // 4 + height // 2, width // 2 - height // 4, width // 2 + height // 4]
    job = {
        "video": str(clip[0]),
        "audio": str(clip[1]),
        "device": args.device,
        "restorer": restorer,
        "box": None if detect else box,
        "weights": {k: str(v) for k, v in weights.items()},
        "batch_size": args.batch_size,
        "restore_batch": args.restore_batch,
        "preset": args.preset,
        "output": str(args.workdir / f"out_{size}_{seconds:g}s_{restorer}{'_detect' if detect else ''}.mp4"),
    }
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, __file__, "--run-one", json.dumps(job)], capture_output=True, text=True, cwd=REPO
    )
    if result.returncode != 0:
        raise SystemExit(f"render failed: {result.stderr.strip().splitlines()[-1:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row.update(
        face="detected" if detect else "fixed box",
        size=size,
        seconds=seconds,
        restorer=restorer,
        device=args.device,
        process_wall_s=round(time.perf_counter() - started, 2),
    )
    return row


def run_one(job: dict) -> dict:
    """One render in this process; returns per-stage seconds, frames/s, real-time factor, peak RSS."""
    import pipeline
    from pipeline.config import build_config

    overrides = {
        "video": job["video"],
        "audio": job["audio"],
        "device": job["device"],
        "quiet": True,
        "detect": {"box": job["box"]}
        if job["box"]
        else {"score_threshold": 0.0, "checkpoint": job["weights"]["detector"]},
        "wav2lip": {"checkpoint": job["weights"]["wav2lip"], "batch_size": job["batch_size"]},
        "restore": {
            "restorer": job["restorer"],
            "batch_size": job["restore_batch"],
            "checkpoint": job["weights"].get(job["restorer"]),
        },
        "output": {"path": job["output"], "preset": job["preset"]},
    }
    summary = pipeline.run(build_config(overrides))
    peak_kb = peak_rss_kb()
    stages = {k: round(v, 2) for k, v in summary.stage_seconds.items()}
    model_s = sum(stages.get(k, 0.0) for k in MODEL_STAGES)
    stage_fps = {k: round(summary.frames / stages[k], 1) for k in MODEL_STAGES if stages.get(k)}
    return {
        "frames": summary.frames,
        "wall_s": round(summary.total_seconds, 2),
        "stages_s": stages,
        "stage_fps": {**time_ffmpeg_alone(job, summary.frames), **stage_fps},
        "fps": round(summary.frames / summary.total_seconds, 1),
        "realtime_factor": round(summary.duration_s / summary.total_seconds, 2),
        "model_stages_s": round(model_s, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


def time_ffmpeg_alone(job: dict, frames: int) -> dict[str, float]:
    """Frames per second of the decoder alone (the whole clip, streamed) and of the encoder alone (the
    first ``ENCODE_SAMPLE_FRAMES`` frames from memory, with the speech), after the render (so that the
    render's peak memory is its own)."""
    import numpy as np

    from pipeline.config import OutputConfig
    from pipeline.core.media import FrameSize, VideoReader, VideoWriter, read_first_frame
    from pipeline.core.types import AudioClip

    first = read_first_frame(job["video"], 25)
    size = FrameSize(first.shape[1], first.shape[0])
    kept, start = [], time.perf_counter()
    with VideoReader(job["video"], size, 25, 16, max_frames=frames) as reader:
        for batch in reader:
            if sum(map(len, kept)) < ENCODE_SAMPLE_FRAMES:
                kept.append(batch)
    decode_fps = frames / (time.perf_counter() - start)
    sample = np.concatenate(kept)[:ENCODE_SAMPLE_FRAMES]
    out = OutputConfig()
    audio = AudioClip(np.zeros(int(16000 * len(sample) / 25), np.float32), 16000)
    target, preset = Path(job["output"]).with_suffix(".encode.mp4"), job["preset"] or out.preset
    start = time.perf_counter()
    with VideoWriter(target, size, 25, out.crf, preset, audio) as writer:
        for i in range(0, len(sample), 16):
            writer.write(sample[i : i + 16])
        writer.commit()
    target.unlink()
    return {"decode": round(decode_fps, 1), "encode": round(len(sample) / (time.perf_counter() - start), 1)}


def peak_rss_kb() -> int:
    """This process's peak resident memory. VmHWM belongs to the process image, whereas ru_maxrss
    carries over the parent's peak across fork+exec on Linux (the parent wrote big checkpoints)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def bench_detection(checkpoint: Path, args) -> dict:
    """RetinaFace on 1280x720 face frames, detection on the downscaled copy, batched."""
    import numpy as np

    from pipeline.core.media import read_first_frame
    from pipeline.faces.config import DetectConfig
    from pipeline.faces.detector import load_detector

    face = read_first_frame(REPO / "examples" / "face.mp4", 25)
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[40:680, 320:960] = np.asarray(__import__("cv2").resize(face, (640, 640)))
    cfg = DetectConfig()
    detector = load_detector(cfg, checkpoint, args.device)
    frames = np.repeat(frame[None], args.detect_frames, axis=0)
    detector.detect(frames[: cfg.batch_size])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(frames), cfg.batch_size):
        detector.detect(frames[i : i + cfg.batch_size])
    seconds = time.perf_counter() - start
    return {
        "stage": "detect",
        "device": args.device,
        "frames": len(frames),
        "frame_size": "1280x720",
        "detect_max_side": cfg.detect_max_side,
        "fps": round(len(frames) / seconds, 2),
        "ms_per_frame": round(1000 * seconds / len(frames), 1),
    }


def markdown(rows: list[dict], args) -> str:
    import torch

    lines = [
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, device {args.device}"
        + (f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else ""),
        f"command: python benchmarks/bench_pipeline.py {' '.join(sys.argv[1:])}",
        "",
        "| clip | restorer | frames | wall s | fps | x real time | model stages s | peak RSS MB "
        "| stages (s) | stage frames/s (decode, encode: ffmpeg alone) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.get("stage") == "detect":
            continue
        stages = ", ".join(f"{k} {v}" for k, v in row["stages_s"].items())
        stage_fps = ", ".join(f"{k} {v}" for k, v in row["stage_fps"].items())
        lines.append(
            f"| {row['size']} {row['seconds']:g} s, {row['face']} | {row['restorer']} | {row['frames']} "
            f"| {row['wall_s']} "
            f"| {row['fps']} | {row['realtime_factor']} | {row['model_stages_s']} | {row['peak_rss_mb']} "
            f"| {stages} | {stage_fps} |"
        )
    for row in rows:
        if row.get("stage") == "detect":
            lines.append(
                f"\ndetection: RetinaFace ResNet50 on {row['frame_size']} frames (detected at "
                f"{row['detect_max_side']} px), {row['ms_per_frame']} ms/frame ({row['fps']} frames/s)"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
