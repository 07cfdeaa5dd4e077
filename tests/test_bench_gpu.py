"""benchmarks/bench_gpu.py: its arguments, and each figure on tiny sizes on the CPU (``--dry-run``)."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import pytest

from tests.test_restore_support import one_torch_thread

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dry_args(bench, tmp_path):
    return bench.parse_args(["--dry-run", "--workdir", str(tmp_path)])


def test_defaults_are_the_gpu_run_and_dry_run_is_tiny_on_the_cpu(bench, tmp_path):
    full = bench.parse_args([])
    assert full.device == "cuda" and full.batches == [8, 16, 32] and full.seconds == 8.0
    assert full.sizes["frame"] == (720, 1280) and full.sizes["face"] == 512 and full.cap_gib == 4.0
    dry = bench.parse_args(["--dry-run", "--batches", "3", "--seconds", "0.5", "--skip", "gan_amp"])
    assert dry.device == "cpu" and dry.batches == [3] and dry.seconds == 0.5 and dry.skip == "gan_amp"
    assert dry.sizes["face"] == 64


def test_main_refuses_cuda_without_a_gpu(bench, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--skip", "restore,pipeline,oom_backoff,gan_amp"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_main_prints_one_json_line_per_row(bench, dry_args, monkeypatch, capsys):
    monkeypatch.setattr(bench, "bench_restore", lambda args: [{"faces_per_s": 1.0}, {"faces_per_s": 2.0}])
    code = bench.main(["--dry-run", "--skip", "pipeline,oom_backoff,gan_amp"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and [json.loads(line) for line in lines] == [
        {"figure": "restore", "faces_per_s": 1.0},
        {"figure": "restore", "faces_per_s": 2.0},
    ]


def test_restore_figure_gives_a_rate_per_precision_and_batch(bench, dry_args):
    with one_torch_thread():
        rows = bench.bench_restore(dry_args)
    assert [(r["precision"], r["batch"]) for r in rows] == [
        ("fp32", 1),
        ("fp32", 2),
        ("bf16", 1),
        ("bf16", 2),
    ]
    assert all(r["faces_per_s"] > 0 for r in rows)


def test_pipeline_figure_restores_and_times_the_encoder(bench, dry_args):
    with one_torch_thread():
        rows = bench.bench_pipeline(dry_args)
    assert rows[0]["size"] == "160x90" and rows[0]["frames_per_s"] > 0
    assert rows[1]["encoder"] == "x264" and rows[1]["encode_frames_per_s"] > 0  # a CPU run: x264


def test_oom_figure_backs_off_to_the_size_that_fits(bench, dry_args):
    with one_torch_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the back-off's own warnings
        (row,) = bench.bench_oom_backoff(dry_args)
    assert row["tried"] == [8, 4, 2, 2, 2, 2] and row["settled_batch"] == 2
    assert row["max_level_difference_to_uncapped"] <= 1


def test_gan_figure_steps_a_saturated_discriminator(bench, dry_args):
    with one_torch_thread():
        (row,) = bench.bench_gan_amp(dry_args, steps=1)
    assert row["amp"] is False and row["skipped_steps"] == 0 and row["weights_moved"]  # CPU: no scaler
