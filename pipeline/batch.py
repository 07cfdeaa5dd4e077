"""Many renders in one process: ``run_pipeline.py --batch jobs.csv|jobs.yaml`` or ``--batch-dir DIR``.

A job is one row: ``video``, one of ``text`` / ``text_string`` / ``audio``, an optional ``output``, and
any other option of the command line as a column (``restorer``, ``fidelity``, ``box`` as ``40 300 80
280``, ``nosmooth`` as ``true``...). Flags given on the command line apply to every job; a column
overrides them for its row. Input paths in a jobs file are relative to that file's folder; outputs are
relative to the output folder (``-o DIR``, default ``results/``). ``--batch-dir DIR`` makes one job of
each ``name.mp4`` (or another video, or a ``.jpg``/``.png`` photo) with its ``name.txt`` or ``name.wav``.

The models load once for all jobs (:class:`~pipeline.model_cache.ModelCache`); a failed job is
reported and the rest go on; a job whose output already exists is skipped unless ``--overwrite``; a
summary table ends the run. The exit code is 0 only when every job succeeded or was skipped.

On the CPU two jobs render at once (``--batch-workers``), each with its share of the cores: one job's
networks then run while the other's ffmpeg encoder flushes and its speech is made, and a network on one
core wastes less of it than on two (``benchmarks/RESULTS.md``). On a GPU the jobs run one after another.
"""

from __future__ import annotations

import argparse
import csv
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import build_config
from pipeline.core.config_io import deep_merge, drop_none
from pipeline.core.errors import EXIT_FAILURE, EXIT_OK, InputError, Interrupted, LipSyncError
from pipeline.model_cache import ModelCache

FACE_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".jpg", ".jpeg", ".png")
SPEECH_SUFFIXES = {".txt": "text", ".wav": "audio"}
INPUT_COLUMNS = ("video", "text", "audio", "voice_sample")  # paths relative to the jobs file
SPEECH_KEYS = ("text", "text_string", "audio")
NOT_A_COLUMN = {
    "batch", "batch_dir", "batch_workers", "overwrite", "config", "print_config", "check", "help", "debug"
}  # fmt: skip
CPU_WORKERS = 2  # jobs in flight on the CPU (more gave nothing on 2 cores: the cores are then all busy)
TRUE_WORDS, FALSE_WORDS = {"1", "true", "yes", "y", "on"}, {"", "0", "false", "no", "n", "off"}
DEFAULT_OUTPUT_DIR = Path("results")

# Turns parsed flags into nested config overrides: pipeline.cli.overrides_from_args.
ToOverrides = Callable[[argparse.Namespace], dict[str, Any]]


@dataclass(frozen=True)
class Job:
    name: str  # how the summary names it: "row 2" of a jobs file, the file stem in a folder
    row: dict[str, Any]  # column (an option name, "_" or "-") -> cell value
    base_dir: Path  # relative input paths start here


@dataclass(frozen=True)
class JobResult:
    job: str
    status: str  # "done", "skipped" (output already there) or "failed"
    exit_code: int
    seconds: float
    output: Path | None
    message: str = ""


@dataclass(frozen=True)
class _Planned:
    """A job ready to render: its config and output."""

    config: Any  # pipeline.config.PipelineConfig
    output: Path


@dataclass
class BatchRunner:
    """Runs jobs with one model cache, ``workers`` at a time (each with ``threads`` CPU compute threads,
    0 = torch's default); ``parser`` reads each row's options."""

    parser: argparse.ArgumentParser
    to_overrides: ToOverrides
    base: dict[str, Any]  # overrides from the command line (every job)
    config_path: str | None
    output_dir: Path
    overwrite: bool = False
    models: ModelCache = field(default_factory=ModelCache)
    workers: int = 1
    threads: int = 0

    def run(self, jobs: Sequence[Job], quiet: bool = False) -> list[JobResult]:
        """Each job's result, in the jobs' order. Jobs are checked one by one in this thread, in order,
        as a worker comes free; Ctrl-C cancels the renders in flight (no partial output) and re-raises."""
        results: dict[int, JobResult] = {}
        claimed: dict[Path, str] = {}  # output -> the job that writes it
        cancel = threading.Event()
        in_flight: dict[Future, int] = {}
        pool = ThreadPoolExecutor(max_workers=max(1, self.workers), thread_name_prefix="batch-job")
        try:
            for index, job in enumerate(jobs):
                while len(in_flight) >= max(1, self.workers):
                    self._collect(in_flight, jobs, results, quiet)
                if not quiet:
                    print(f"job {index + 1}/{len(jobs)}: {job.name}", file=sys.stderr)
                planned = self._plan(job, claimed)
                if isinstance(planned, JobResult):
                    self._record(index, planned, results)
                else:
                    in_flight[pool.submit(self._render, job, planned, cancel)] = index
            while in_flight:
                self._collect(in_flight, jobs, results, quiet)
        except BaseException:  # Ctrl-C, SIGTERM: stop the renders in flight, keep what finished
            cancel.set()
            wait(in_flight)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if not quiet:
                print(format_table([results[i] for i in sorted(results)]))
        return [results[i] for i in sorted(results)]

    def _plan(self, job: Job, claimed: dict[Path, str]) -> _Planned | JobResult:
        start, output = time.perf_counter(), None
        try:
            overrides = self.job_overrides(job)
            if self.workers > 1:  # two progress bars at once would garble each other
                overrides["quiet"] = True
            output = Path(overrides["output"]["path"])
            if output.resolve() in claimed:
                raise InputError(f"output {output} is also the output of {claimed[output.resolve()]}")
            claimed[output.resolve()] = job.name
            if output.exists() and not self.overwrite:
                return JobResult(job.name, "skipped", EXIT_OK, 0.0, output, "output exists (--overwrite)")
            return _Planned(build_config(overrides, self.config_path), output)
        except LipSyncError as exc:
            return _failed(job, exc.exit_code, str(exc), start, output)
        except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the others
            return _failed(job, EXIT_FAILURE, f"{type(exc).__name__}: {exc}", start, output)

    def _render(self, job: Job, planned: _Planned, cancel: threading.Event) -> JobResult:
        """One job in a worker thread; ``cancel`` set stops it at its next progress report."""
        start = time.perf_counter()

        def progress(stage: str, done: int, total: int) -> None:
            if cancel.is_set():
                raise Interrupted("cancelled; no output was written")

        try:
            if self.threads:
                from pipeline.core.devices import use_cpu_threads

                use_cpu_threads(self.threads)
            import pipeline

            pipeline.run(planned.config, models=self.models, progress=progress)
            return JobResult(job.name, "done", EXIT_OK, time.perf_counter() - start, planned.output)
        except LipSyncError as exc:
            return _failed(job, exc.exit_code, str(exc), start, planned.output)
        except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the others
            return _failed(job, EXIT_FAILURE, f"{type(exc).__name__}: {exc}", start, planned.output)

    def _collect(
        self, in_flight: dict[Future, int], jobs: Sequence[Job], results: dict[int, JobResult], quiet: bool
    ) -> None:
        """Wait for at least one render in flight to end and record it."""
        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        for future in sorted(done, key=in_flight.__getitem__):
            index = in_flight.pop(future)
            result = future.result()
            self._record(index, result, results)
            if not quiet and self.workers > 1 and result.status == "done":
                line = f"job {index + 1}/{len(jobs)}: {result.job} done, {result.seconds:.1f} s"
                print(line, file=sys.stderr)

    @staticmethod
    def _record(index: int, result: JobResult, results: dict[int, JobResult]) -> None:
        results[index] = result
        if result.status == "failed":
            print(f"error: {result.job}: {result.message}", file=sys.stderr)

    def job_overrides(self, job: Job) -> dict[str, Any]:
        """The command line's overrides with the row's on top, its output path filled in."""
        row = drop_none(self.to_overrides(self._parse_row(job)))
        base = drop_none(self.base)
        if any(key in row for key in SPEECH_KEYS):  # the row's speech replaces the command line's
            base = {key: value for key, value in base.items() if key not in SPEECH_KEYS}
        merged = deep_merge(base, row)
        if not merged.get("video"):
            raise InputError("no video: give a video column")
        output = Path(row.get("output", {}).get("path") or f"{Path(merged['video']).stem}_lipsync.mp4")
        merged["output"] = {**merged.get("output", {}), "path": str(self.output_dir / output)}
        return merged

    def _parse_row(self, job: Job) -> argparse.Namespace:
        argv: list[str] = []
        for column, value in job.row.items():
            argv += self._cell_flags(str(column).strip(), value, job.base_dir)
        try:
            return self.parser.parse_args(argv)
        except InputError as exc:  # pipeline.cli's parser raises instead of exiting
            raise InputError(f"bad row: {exc}".replace(" (see run_pipeline.py --help)", "")) from None

    def _cell_flags(self, column: str, value: Any, base_dir: Path) -> list[str]:
        """The command-line tokens that one cell means (none for an empty cell)."""
        key = column.lower().replace("-", "_")
        if value is None or (isinstance(value, str) and not value.strip()):
            return []
        flag = "--" + key.replace("_", "-")
        action = _action_for(self.parser, flag)
        if key in NOT_A_COLUMN or action is None:
            raise InputError(f"unknown column {column!r}: use the name of an option of run_pipeline.py")
        if action.nargs == 0:  # an on/off switch
            return [flag] if _truth(column, value) else []
        if key in INPUT_COLUMNS:
            value = str(base_dir / Path(str(value).strip()))
        words = [str(v) for v in value] if isinstance(value, list) else [str(value).strip()]
        if isinstance(action.nargs, int) and len(words) == 1:
            words = words[0].replace(",", " ").split()
        return [f"{flag}={words[0]}"] if len(words) == 1 else [flag, *words]


def _action_for(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    for action in parser._actions:  # argparse has no public lookup by option string
        if flag in action.option_strings:
            return action
    return None


def _truth(column: str, value: Any) -> bool:
    word = str(value).strip().lower()
    if word not in TRUE_WORDS | FALSE_WORDS:
        raise InputError(f"column {column!r} is on/off: write true or false, not {value!r}")
    return word in TRUE_WORDS


def _failed(job: Job, code: int, message: str, start: float, output: Path | None) -> JobResult:
    line = message.strip().splitlines()[0] if message.strip() else "failed"
    return JobResult(job.name, "failed", code, time.perf_counter() - start, output, line)


def read_jobs_file(path: Path) -> list[Job]:
    """The jobs of a ``.csv`` (a header row of column names) or ``.yaml`` (a list of mappings, or a
    mapping with a ``jobs:`` list) file; the first job is "row 1"."""
    if not path.is_file():
        raise InputError(f"jobs file {path} not found; give a .csv or .yaml file to --batch")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as handle:
                rows: Any = list(csv.DictReader(handle))
        elif suffix in (".yaml", ".yml"):
            rows = yaml.safe_load(path.read_text(encoding="utf-8")) or []
            rows = rows.get("jobs", []) if isinstance(rows, dict) else rows
        else:
            raise InputError(f"jobs file {path} must end in .csv, .yaml or .yml")
    except (UnicodeDecodeError, csv.Error, yaml.YAMLError) as exc:
        raise InputError(f"cannot read jobs file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise InputError(f"jobs file {path} must hold a list of jobs, each a mapping of option to value")
    if not rows:
        raise InputError(f"jobs file {path} has no jobs")
    return [Job(f"row {i}", row, path.parent) for i, row in enumerate(rows, 1)]


def jobs_from_folder(folder: Path) -> list[Job]:
    """One job per face file (video or photo) that has a ``.txt`` script or ``.wav`` speech of the
    same name; files without a partner are listed as ignored on stderr."""
    if not folder.is_dir():
        raise InputError(f"--batch-dir {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    faces = {p.stem: p for p in files if p.suffix.lower() in FACE_SUFFIXES}
    speech = {p.stem: p for p in files if p.suffix.lower() in SPEECH_SUFFIXES}
    jobs = []
    for stem, face in faces.items():
        if stem in speech:
            kind = SPEECH_SUFFIXES[speech[stem].suffix.lower()]
            jobs.append(Job(stem, {"video": str(face), kind: str(speech[stem])}, Path()))
    paired = faces.keys() & speech.keys()
    unpaired = [p.name for p in [*faces.values(), *speech.values()] if p.stem not in paired]
    if unpaired:
        names = ", ".join(unpaired)
        print(f"warning: --batch-dir ignores {names} (no partner of the same name)", file=sys.stderr)
    if not jobs:
        raise InputError(f"--batch-dir {folder} has no name.mp4/name.jpg with a name.txt/name.wav beside it")
    return jobs


def format_table(results: Sequence[JobResult]) -> str:
    """The summary: one line per job (job, status, exit code, seconds, output) and a total line."""
    header = ("job", "status", "exit", "seconds", "output")
    rows = [header] + [
        (r.job, r.status, str(r.exit_code), f"{r.seconds:.1f}", str(r.output or "-")) for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    counts = {status: sum(r.status == status for r in results) for status in ("done", "skipped", "failed")}
    lines.append(", ".join(f"{n} {status}" for status, n in counts.items()))
    return "\n".join(lines)


def run_batch_command(
    args: argparse.Namespace, parser: argparse.ArgumentParser, to_overrides: ToOverrides
) -> int:
    """``--batch FILE`` / ``--batch-dir DIR`` as parsed by ``parser``; the process exit code (0 when no
    job failed, else 1; 2 for a jobs file that cannot be read)."""
    if args.batch and args.batch_dir:
        raise InputError("give --batch FILE or --batch-dir DIR, not both")
    base = drop_none(to_overrides(args))
    output_dir = Path(base.get("output", {}).pop("path", None) or DEFAULT_OUTPUT_DIR)
    if output_dir.suffix.lower() in (".mp4", ".mov", ".mkv"):
        raise InputError(f"with --batch, -o/--output names the output folder, not a file ({output_dir})")
    jobs = read_jobs_file(Path(args.batch)) if args.batch else jobs_from_folder(Path(args.batch_dir))
    config = build_config(base, args.config)  # the command line's settings: its device decides the workers
    workers, threads = batch_workers(getattr(args, "batch_workers", None), config.device, len(jobs))
    runner = BatchRunner(parser, to_overrides, base, args.config, output_dir, bool(args.overwrite))
    runner.workers, runner.threads = workers, threads
    results = runner.run(jobs, quiet=bool(args.quiet))
    return EXIT_OK if all(r.status != "failed" for r in results) else EXIT_FAILURE


def batch_workers(requested: int | None, device: str, n_jobs: int) -> tuple[int, int]:
    """``(jobs rendered at once, CPU compute threads of each)``. ``requested`` None or 0: on the CPU
    ``CPU_WORKERS`` (where the cores allow), on a GPU 1. Threads: the cores shared out among the workers
    (0 = leave torch's default, for a single worker)."""
    if requested is not None and requested < 0:
        raise InputError(f"--batch-workers must be 0 (auto) or more, not {requested}")
    from pipeline.core.device_names import check_device_name

    cores = _cpu_cores()
    if requested:
        workers = requested
    elif check_device_name(device) == "cpu" or (device == "auto" and not _torch_sees_a_gpu()):
        workers = min(CPU_WORKERS, cores)
    else:
        workers = 1
    workers = max(1, min(workers, n_jobs))
    return workers, (max(1, cores // workers) if workers > 1 else 0)


def _cpu_cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _torch_sees_a_gpu() -> bool:
    import torch  # the first job imports it anyway

    return torch.cuda.is_available()
