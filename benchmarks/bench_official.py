#!/usr/bin/env python3
"""This project against the official Wav2Lip ``inference.py``, alternating on one machine in one sitting.

Both render the same clip (``testsrc2`` at 25 fps with a voiced synthetic speech signal) with the same
seeded checkpoint in the official layout, a fixed face box and no restoration, on the CPU. Runs alternate
(official, project, official, project, ...) and the figure that counts is the ratio of each pair, since
absolute times differ several-fold between machines and drift with the load of the moment. Each run is
timed from the outside: wall seconds, CPU seconds and the peak resident memory of its whole process
tree (ffmpeg children included), sampled from /proc.

The official tree is not part of this project: fetch it yourself (``git clone
https://github.com/Rudrabha/Wav2Lip``) and give its folder. It is copied into the work folder (it writes
``temp/`` and ``results/`` where it runs) and run unmodified, with one shim applied at run time: librosa
0.10 takes ``librosa.filters.mel``'s arguments by keyword only, and the official ``audio.py`` passes
them by position. The official code muxes with a shell ``ffmpeg`` command, so the ffmpeg this project
uses is put first on its ``PATH``.

    python benchmarks/bench_official.py --official-tree ~/src/Wav2Lip                 # 10 s 720p, 3 pairs
    python benchmarks/bench_official.py --official-tree ~/src/Wav2Lip --seconds 10,40 --rounds 2
    python benchmarks/bench_official.py --seconds 10,40 --skip-official               # memory vs length
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SAMPLE_INTERVAL_S = 0.05
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """One measured run: who, which clip, and what it cost."""

    tool: str  # "official" or "project"
    seconds: float  # clip length
    round: int
    wall_s: float
    cpu_s: float  # user + system seconds of the whole tree
    peak_tree_mb: float
    returncode: int
    stages: str = ""  # the project's own per-stage line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--official-tree", type=Path, help="a checkout of Rudrabha/Wav2Lip (not part of this project)"
    )
    parser.add_argument(
        "--skip-official", action="store_true", help="time this project only (memory vs length)"
    )
    parser.add_argument("--seconds", default="10", help="clip lengths, comma separated (default 10)")
    parser.add_argument("--size", default="1280x720", help="clip size WxH (default 1280x720)")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of runs per clip (default 3)")
    parser.add_argument("--precision", default="auto", help="this project's --precision (default auto)")
    parser.add_argument("--batch-size", type=int, help="this project's --batch-size (default: its own)")
    parser.add_argument("--official-batch", type=int, default=128, help="official --wav2lip_batch_size (128)")
    parser.add_argument("--project-args", default="", help="more run_pipeline.py arguments, space separated")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_official"))
    parser.add_argument("--json", type=Path, help="also write every run as JSON here")
    parser.add_argument("--run-official", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_official is None and not args.skip_official and args.official_tree is None:
        parser.error("give --official-tree PATH (a Wav2Lip checkout) or --skip-official")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_official is not None:
        return run_official_in_process(Path(args.run_official[0]), args.run_official[1:])
    args.workdir.mkdir(parents=True, exist_ok=True)
    checkpoint = seeded_checkpoint(args.workdir)
    tree = None if args.skip_official else copy_official_tree(args.official_tree, args.workdir)
    print(machine_line(), flush=True)
    runs: list[Run] = []
    for seconds in (float(s) for s in args.seconds.split(",")):
        video, audio = clip(args.workdir, args.size, seconds)
        box = centre_box(args.size)
        for round_index in range(1, args.rounds + 1):
            if tree is not None:
                runs.append(time_official(tree, video, audio, checkpoint, box, args, seconds, round_index))
                print(format_run(runs[-1]), flush=True)
            runs.append(time_project(video, audio, checkpoint, box, args, seconds, round_index))
            print(format_run(runs[-1]), flush=True)
    print(summary(runs))
    if args.json:
        args.json.write_text(json.dumps([asdict(run) for run in runs], indent=1))
    return 0 if all(run.returncode == 0 for run in runs) else 1


# ---- inputs -------------------------------------------------------------------------------------------


def seeded_checkpoint(workdir: Path) -> Path:
    """A seeded generator checkpoint in the official file layout (compute does not depend on values)."""
    from tests.weights_fixtures import write_official_checkpoint

    path = workdir / "wav2lip_seeded.pth"
    if not path.exists():
        write_official_checkpoint("wav2lip_generator", path)
    return path


def clip(workdir: Path, size: str, seconds: float) -> tuple[Path, Path]:
    from benchmarks.bench_pipeline import make_clip

    return make_clip(workdir, size, seconds)


def centre_box(size: str) -> tuple[int, int, int, int]:
    """A face-sized (top, bottom, left, right) box in the middle of the frame."""
    width, height = (int(v) for v in size.split("x"))
    return height // 4, height // 4 + height // 2, width // 2 - height // 4, width // 2 + height // 4


def copy_official_tree(tree: Path, workdir: Path) -> Path:
    """A copy of the official checkout to run in (it writes temp/ and results/ where it runs)."""
    if not (tree / "inference.py").is_file() or not (tree / "models").is_dir():
        raise SystemExit(f"{tree} is not a Wav2Lip checkout (no inference.py and models/)")
    copy = workdir / "official_tree"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(tree, copy, ignore=shutil.ignore_patterns(".git"))
    for folder in ("temp", "results"):
        (copy / folder).mkdir(exist_ok=True)
    return copy


# ---- the two tools ------------------------------------------------------------------------------------


def time_official(tree, video, audio, checkpoint, box, args, seconds, round_index) -> Run:
    out = tree / "results" / "out.mp4"
    out.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--run-official", str(tree), "--checkpoint_path", str(checkpoint)]
    command += ["--face", str(video), "--audio", str(audio), "--outfile", str(out)]
    command += ["--box", *map(str, box), "--wav2lip_batch_size", str(args.official_batch)]
    env = dict(
        os.environ,
        CUDA_VISIBLE_DEVICES="",
        PATH=f"{ffmpeg_folder(args.workdir)}{os.pathsep}{os.environ['PATH']}",
    )
    wall, cpu, peak, code, _ = measure_tree(command, tree, env)
    if code == 0 and not out.exists():
        code = -1
    return Run("official", seconds, round_index, wall, cpu, peak, code)


def time_project(video, audio, checkpoint, box, args, seconds, round_index) -> Run:
    out = args.workdir / "project_out.mp4"
    command = [sys.executable, str(REPO / "run_pipeline.py"), "--audio", str(audio), "--video", str(video)]
    command += ["--box", *map(str, box), "--restorer", "none", "--wav2lip-checkpoint", str(checkpoint)]
    command += ["-o", str(out), "--precision", args.precision]
    if args.batch_size:
        command += ["--batch-size", str(args.batch_size)]
    command += args.project_args.split()
    wall, cpu, peak, code, output = measure_tree(command, REPO, dict(os.environ))
    lines = [line for line in output.splitlines() if line.startswith(("time:", "precision:"))]
    return Run("project", seconds, round_index, wall, cpu, peak, code, " | ".join(lines))


def ffmpeg_folder(workdir: Path) -> Path:
    """A folder whose ``ffmpeg`` is the one this project uses (the official code calls it by name)."""
    from pipeline.core.ffmpeg import ffmpeg_exe

    folder = workdir / "bin"
    folder.mkdir(exist_ok=True)
    link = folder / "ffmpeg"
    if not link.exists():
        link.symlink_to(ffmpeg_exe())
    return folder


def run_official_in_process(tree: Path, argv: list[str]) -> int:
    """Run ``tree/inference.py`` as ``__main__`` with ``argv``, after the librosa keyword shim."""
    import functools
    import runpy

    import librosa.filters

    original = librosa.filters.mel

    @functools.wraps(original)
    def mel(*positional, **keywords):
        keywords.update(zip(("sr", "n_fft"), positional))
        return original(**keywords)

    librosa.filters.mel = mel
    os.chdir(tree)
    sys.path.insert(0, str(tree))
    sys.argv = [str(tree / "inference.py"), *argv]
    runpy.run_path(str(tree / "inference.py"), run_name="__main__")
    return 0


# ---- measuring ----------------------------------------------------------------------------------------


def measure_tree(command: list[str], cwd: Path, env: dict) -> tuple[float, float, float, int, str]:
    """Run ``command``; ``(wall s, CPU s of the tree, peak tree RSS MB, return code, stdout+stderr)``."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], sum(rss_pages(pid) for pid in tree_pids(process.pid)))
            stop.wait(SAMPLE_INTERVAL_S)

    sampler = threading.Thread(target=sample, daemon=True)
    before = os.times()
    sampler.start()
    output = process.communicate()[0].decode(errors="replace")
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu, peak[0] * PAGE_BYTES / 2**20, process.returncode, output


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_pages(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0


# ---- reporting ----------------------------------------------------------------------------------------


def machine_line() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    shown = sorted(f for f in flags if re.fullmatch(r"avx2|fma|avx512(f|_bf16|_vnni)|amx_(bf16|tile)", f))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    return (
        f"# {platform.processor() or platform.machine()} cores={os.cpu_count()} flags={','.join(shown)} "
        f"load={load} python={platform.python_version()} date={time.strftime('%Y-%m-%d %H:%M')}"
    )


def format_run(run: Run) -> str:
    return (
        f"{run.tool:8s} {run.seconds:g}s round {run.round}: wall {run.wall_s:.1f} s, cpu {run.cpu_s:.1f} s, "
        f"peak tree {run.peak_tree_mb:.0f} MB, rc {run.returncode} {run.stages}"
    )


def summary(runs: list[Run]) -> str:
    """Per clip length: the median of the per-round ratios official/project (wall and CPU), and memory."""
    lines = []
    for seconds in sorted({run.seconds for run in runs}):
        pairs = _pairs([run for run in runs if run.seconds == seconds])
        project = [run for run in runs if run.seconds == seconds and run.tool == "project"]
        line = (
            f"{seconds:g} s clip: project wall median {statistics.median(r.wall_s for r in project):.1f} s, "
            f"peak tree {max(r.peak_tree_mb for r in project):.0f} MB"
        )
        if pairs:
            wall = [o.wall_s / p.wall_s for o, p in pairs]
            cpu = [o.cpu_s / p.cpu_s for o, p in pairs]
            line += (
                f"; official/project wall ratio per pair {', '.join(f'{r:.2f}' for r in wall)} "
                f"(median {statistics.median(wall):.2f}), CPU ratio median {statistics.median(cpu):.2f}, "
                f"official peak tree {max(o.peak_tree_mb for o, _ in pairs):.0f} MB"
            )
        lines.append(line)
    return "\n".join(lines)


def _pairs(runs: list[Run]) -> list[tuple[Run, Run]]:
    by_round: dict[int, dict[str, Run]] = {}
    for run in runs:
        by_round.setdefault(run.round, {})[run.tool] = run
    return [(r["official"], r["project"]) for r in by_round.values() if {"official", "project"} <= r.keys()]


if __name__ == "__main__":
    raise SystemExit(main())
