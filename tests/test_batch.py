"""``run_pipeline.py --batch`` / ``--batch-dir``: many jobs in one process, the models loaded once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import wav2lip
from pipeline.batch import BatchRunner, Job, jobs_from_folder, read_jobs_file
from pipeline.cli import build_parser, main, overrides_from_args
from pipeline.core.errors import InputError
from tests.media_fixtures import make_tone, make_video, read_all_frames
from tests.weights_fixtures import write_official_checkpoint

REPO = Path(__file__).resolve().parent.parent
BOX = "40 100 50 110"  # top, bottom, left, right in the 160x120 test clips


@pytest.fixture(scope="module")
def wav2lip_checkpoint(tmp_path_factory) -> Path:
    return write_official_checkpoint("wav2lip_generator", tmp_path_factory.mktemp("w") / "wav2lip_gan.pth")


def _flags(checkpoint: Path, out_dir: Path) -> list[str]:
    return [
        "--wav2lip-checkpoint", str(checkpoint), "--restorer", "none", "--device", "cpu",
        "--box", *BOX.split(), "-o", str(out_dir),
    ]  # fmt: skip


def _count_generator_loads(monkeypatch) -> list[Path]:
    loads: list[Path] = []
    original = wav2lip.load_generator_for_inference

    def counting(path, device="cpu", precision="fp32"):
        loads.append(path)
        return original(path, device, precision)

    monkeypatch.setattr(wav2lip, "load_generator_for_inference", counting)
    return loads


def test_three_jobs_one_bad_two_outputs_exit_1_and_a_rerun_skips(
    wav2lip_checkpoint, tmp_path, capsys, monkeypatch
):
    make_video(tmp_path / "a.mp4", seconds=0.4)
    make_tone(tmp_path / "a.wav", seconds=0.4)
    make_tone(tmp_path / "b.wav", seconds=0.6)
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(
        "video,audio,output,crf\n"
        "a.mp4,a.wav,first.mp4,\n"
        "missing.mp4,a.wav,second.mp4,\n"  # the bad job: no such video
        "a.mp4,b.wav,third.mp4,30\n"  # a column overrides the command line's --crf
    )
    out = tmp_path / "out"
    loads = _count_generator_loads(monkeypatch)
    assert main(["--batch", str(jobs), "--crf", "20", *_flags(wav2lip_checkpoint, out)]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["first.mp4", "third.mp4"]
    assert len(read_all_frames(out / "first.mp4")) == 10 and len(read_all_frames(out / "third.mp4")) == 15
    assert len(loads) == 1  # the models loaded once for both renders
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "row 2" in errors[0] and "missing.mp4" in errors[0]
    table = captured.out.splitlines()
    assert table[0].split() == ["job", "status", "exit", "seconds", "output"]
    assert [line.split()[2] for line in table[1:4]] == ["done", "failed", "done"]
    assert table[2].split()[3] == "2"  # the bad input's own exit code
    assert table[-1] == "2 done, 0 skipped, 1 failed"

    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["--batch", str(jobs), *_flags(wav2lip_checkpoint, out)]) == 1
    rerun = capsys.readouterr().out.splitlines()
    assert [line.split()[2] for line in rerun[1:4]] == ["skipped", "failed", "skipped"]
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_batch_dir_pairs_faces_with_scripts_and_speech(wav2lip_checkpoint, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    make_video(folder / "one.mp4", seconds=0.4)
    make_tone(folder / "one.wav", seconds=0.4)
    make_video(folder / "two.mp4", seconds=0.4)
    (folder / "two.txt").write_text("Hi.")
    (folder / "lonely.txt").write_text("Nobody speaks me.")
    out = tmp_path / "out"
    assert main(["--batch-dir", str(folder), "--quiet", *_flags(wav2lip_checkpoint, out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["one_lipsync.mp4", "two_lipsync.mp4"]
    assert "ignores lonely.txt" in capsys.readouterr().err


def _runner(tmp_path: Path, *flags: str) -> BatchRunner:
    parser = build_parser()
    base = overrides_from_args(parser.parse_args(list(flags)))
    return BatchRunner(parser, overrides_from_args, base, None, tmp_path / "out")


def test_a_row_overrides_the_command_line_and_its_inputs_are_relative_to_the_jobs_file(tmp_path):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        "- {video: v.mp4, text_string: Hello, box: [1, 2, 3, 4], nosmooth: true, fidelity: 0.9}\n"
        "- {video: /abs/w.mp4}\n"
    )
    first, second = read_jobs_file(jobs)
    runner = _runner(tmp_path, "--audio", "speech.wav", "--fidelity", "0.3", "--restorer", "codeformer")
    row = runner.job_overrides(first)
    assert row["video"] == str(tmp_path / "v.mp4") and row["text_string"] == "Hello"
    assert "audio" not in row  # the row's speech replaces the command line's
    assert row["detect"]["box"] == [1, 2, 3, 4] and row["detect"]["nosmooth"] is True
    assert row["restore"] == {"restorer": "codeformer", "fidelity": 0.9}
    assert row["output"]["path"] == str(tmp_path / "out" / "v_lipsync.mp4")
    other = runner.job_overrides(second)
    assert other["audio"] == "speech.wav" and other["restore"]["fidelity"] == 0.3


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"video": "v.mp4", "colour": "red"}, "unknown column 'colour'"),
        ({"video": "v.mp4", "nosmooth": "maybe"}, "write true or false"),
        ({"video": "v.mp4", "fidelity": "high"}, "bad row: argument --fidelity: invalid float value"),
        ({"video": "v.mp4", "overwrite": "true"}, "unknown column 'overwrite'"),
        ({"text": "t.txt"}, "no video"),
    ],
)
def test_a_bad_row_is_a_one_line_input_error(tmp_path, row, message):
    with pytest.raises(InputError, match=message):
        _runner(tmp_path).job_overrides(Job("row 1", row, tmp_path))


def test_bad_jobs_files_are_input_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("video,audio\n")
    (tmp_path / "scalar.yaml").write_text("just text\n")
    with pytest.raises(InputError, match="has no jobs"):
        read_jobs_file(tmp_path / "empty.csv")
    with pytest.raises(InputError, match="list of jobs"):
        read_jobs_file(tmp_path / "scalar.yaml")
    with pytest.raises(InputError, match="not found"):
        read_jobs_file(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="has no name.mp4"):
        jobs_from_folder(tmp_path)


def test_batch_output_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "jobs.csv").write_text("video,audio\nv.mp4,a.wav\n")
    assert main(["--batch", str(tmp_path / "jobs.csv"), "-o", str(tmp_path / "x.mp4")]) == 2
    assert "names the output folder" in capsys.readouterr().err


def test_the_model_cache_loads_once_per_file_and_device_and_again_when_the_file_changes(tmp_path):
    from pipeline.model_cache import ModelCache

    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"one")
    calls = []
    cache = ModelCache()

    def loader(path, device):
        calls.append((path, device))
        return object()

    first = cache.load(loader, checkpoint, "cpu")
    assert cache.load(loader, checkpoint, "cpu") is first
    assert cache.load(loader, checkpoint, "cuda") is not first
    checkpoint.write_bytes(b"changed")  # a new file of another size: loaded afresh
    assert cache.load(loader, checkpoint, "cpu") is not first
    assert len(calls) == cache.loads == 3


def _dated_back(path: Path) -> Path:
    """The file as one not written this very second (the batch keeps what it learns only of such)."""
    past = time.time() - 60
    os.utime(path, (past, past))
    return path


def test_a_batch_job_in_a_warm_process_renders_the_frames_a_cli_run_does(wav2lip_checkpoint, tmp_path):
    from pipeline.core import media

    video = _dated_back(make_video(tmp_path / "face.mp4", seconds=0.4))
    speech = _dated_back(make_tone(tmp_path / "speech.wav", seconds=0.8))
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"video,audio,output\n{video},{speech},first.mp4\n{video},{speech},second.mp4\n")
    out = tmp_path / "batch"
    assert main(["--batch", str(jobs), "--quiet", *_flags(wav2lip_checkpoint, out)]) == 0
    assert media._FRAME_COUNTS.find(video, 25.0) is not None  # the second job took the kept count
    cli = tmp_path / "cli" / "one.mp4"
    flags = _flags(wav2lip_checkpoint, cli)
    command = [sys.executable, str(REPO / "run_pipeline.py"), "--quiet", "--video", str(video)]
    subprocess.run([*command, "--audio", str(speech), *flags], check=True, cwd=REPO)
    from_cli = read_all_frames(cli)
    assert len(from_cli) == 20
    assert np.array_equal(read_all_frames(out / "second.mp4"), from_cli)
    assert np.array_equal(read_all_frames(out / "first.mp4"), from_cli)


def test_the_cpu_renders_two_jobs_at_once_each_on_its_share_of_the_cores(monkeypatch):
    from pipeline import batch

    monkeypatch.setattr(batch, "_cpu_cores", lambda: 8)
    assert batch.batch_workers(None, "cpu", 10) == (2, 4)
    assert batch.batch_workers(0, "cpu", 1) == (1, 0)  # one job: one worker, torch's own thread count
    assert batch.batch_workers(3, "cpu", 10) == (3, 2)
    assert batch.batch_workers(None, "cuda:1", 10) == (1, 0)
    monkeypatch.setattr(batch, "_torch_sees_a_gpu", lambda: True)
    assert batch.batch_workers(None, "auto", 10) == (1, 0)
    monkeypatch.setattr(batch, "_torch_sees_a_gpu", lambda: False)
    assert batch.batch_workers(None, "auto", 10) == (2, 4)
    monkeypatch.setattr(batch, "_cpu_cores", lambda: 1)
    assert batch.batch_workers(None, "cpu", 10) == (1, 0)
    with pytest.raises(InputError, match="--batch-workers must be 0"):
        batch.batch_workers(-1, "cpu", 10)


def _jobs(tmp_path: Path, n: int) -> list[Job]:
    return [
        Job(f"row {i}", {"video": "v.mp4", "audio": "a.wav", "output": f"{i}.mp4"}, tmp_path)
        for i in range(n)
    ]


def test_two_workers_overlap_their_renders_and_keep_the_jobs_order(tmp_path, monkeypatch, capsys):
    import threading

    import torch

    import pipeline

    active, most, threads, lock = [0], [0], [], threading.Lock()
    both_started = threading.Barrier(2, timeout=10)  # fails unless two renders run at the same time

    def fake_run(config, models, progress):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        threads.append(torch.get_num_threads())
        if config.output.path.endswith(("0.mp4", "1.mp4")):
            both_started.wait()
        time.sleep(0.05 if config.output.path.endswith("0.mp4") else 0.0)  # row 0 finishes last
        Path(config.output.path).write_bytes(b"video")
        with lock:
            active[0] -= 1

    monkeypatch.setattr(pipeline, "run", fake_run)
    runner = _runner(tmp_path, "--device", "cpu")
    runner.workers, runner.threads = 2, 1
    (tmp_path / "out").mkdir()
    results = runner.run(_jobs(tmp_path, 4))
    assert [r.job for r in results] == ["row 0", "row 1", "row 2", "row 3"]
    assert [r.status for r in results] == ["done"] * 4 and most[0] == 2 and threads == [1] * 4
    err = capsys.readouterr().err
    assert "job 1/4: row 0 done," in err and err.index("job 2/4: row 1 done") < err.index(
        "job 1/4: row 0 done"
    )


def test_ctrl_c_cancels_the_renders_in_flight_and_shows_what_finished(tmp_path, monkeypatch, capsys):
    import signal
    import threading

    import pipeline
    from pipeline.core.errors import Interrupted

    cancelled = []
    rendering = threading.Barrier(2, timeout=10)

    def fake_run(config, models, progress):
        if config.output.path.endswith("0.mp4"):
            Path(config.output.path).write_bytes(b"video")
            return
        rendering.wait()  # rows 1 and 2 are both rendering when Ctrl-C comes
        if config.output.path.endswith("1.mp4"):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
        try:
            for _ in range(1000):  # a render that is never cancelled ends after 10 s: the test fails
                progress("render", 0, 10)
                time.sleep(0.01)
        except Interrupted:
            cancelled.append(config.output.path)
            raise

    monkeypatch.setattr(pipeline, "run", fake_run)
    runner = _runner(tmp_path, "--device", "cpu")
    runner.workers = 2
    (tmp_path / "out").mkdir()
    with pytest.raises(KeyboardInterrupt):
        runner.run(_jobs(tmp_path, 4))
    assert sorted(Path(p).name for p in cancelled) == ["1.mp4", "2.mp4"]
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in table[1:-1]] == [["row", "0", "done"]] and table[-1].startswith(
        "1 done"
    )


def test_ctrl_c_on_a_real_batch_exits_130_and_leaves_only_finished_outputs(wav2lip_checkpoint, tmp_path):
    import signal

    make_video(tmp_path / "a.mp4", seconds=0.4)
    make_tone(tmp_path / "short.wav", seconds=0.4)
    make_tone(tmp_path / "long.wav", seconds=20.0)
    rows = "".join(f"a.mp4,long.wav,{i}.mp4\n" for i in range(1, 4))
    (tmp_path / "jobs.csv").write_text(f"video,audio,output\na.mp4,short.wav,0.mp4\n{rows}")
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "run_pipeline.py"), "--batch", str(tmp_path / "jobs.csv")]
    process = subprocess.Popen([*command, *_flags(wav2lip_checkpoint, out)], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "0.mp4").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # the long jobs are rendering
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.splitlines()[-1] == "error: interrupted; the jobs in flight wrote no output"
    assert sorted(p.name for p in out.iterdir()) == ["0.mp4"]  # no partial file of the jobs cut short
    assert stdout.splitlines()[-1] == "1 done, 0 skipped, 0 failed"
