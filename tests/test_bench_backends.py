"""``benchmarks/bench_backends.py``: its arguments, and a dry run that needs neither ONNX Runtime nor
OpenVINO (absent back-ends are skipped with the reason printed)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_backends.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_backends", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_arguments_are_parsed_and_checked(bench):
    args = bench.parse_args(
        ["--networks", "gfpgan,codeformer", "--backends", "torch_fp32,ort", "--batches", "8"]
    )
    assert args.networks == ("gfpgan", "codeformer")
    assert args.backends == ("torch_fp32", "ort")
    assert args.batches == (8,)
    assert args.restorer_batches == (1,)
    dry = bench.parse_args(["--dry-run"])
    assert (dry.networks, dry.batches, dry.rounds, dry.repeats) == (("wav2lip",), (2,), 1, 1)
    for bad in (["--networks", "esrgan"], ["--backends", "tensorrt"], ["--rounds", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_dry_run_times_torch_and_skips_the_other_backends_with_a_reason(bench, tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--dry-run", "--workdir", str(tmp_path), "--json", str(tmp_path / "r.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    for backend in ("ort", "ov_fp32", "ov_bf16"):
        assert f"skip {backend}: " in printed
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [(r["network"], r["batch"], r["backend"]) for r in rows] == [
        ("wav2lip", 2, "torch_fp32"),
        ("wav2lip", 2, "torch_bf16"),
        ("wav2lip", 2, "torch_project"),
        ("wav2lip", 2, "torch_unpacked"),
    ]
    assert rows[0]["mean_grey"] == 0 and rows[0]["speedup_vs_torch_fp32"] == 1.0
    assert rows[1]["mean_grey"] < 1.0  # bf16 within a grey level of fp32 on real face crops
    assert rows[2]["mean_grey"] < 1.0  # the pipeline's inference form (fused; bf16 weights on a bf16 CPU)
    assert abs(rows[3]["mean_grey"] - rows[2]["mean_grey"]) < 0.1  # the same without pre-packed weights
    assert all(r["ms_per_item"] > 0 for r in rows)
