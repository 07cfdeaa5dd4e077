"""``benchmarks/bench_restore_overlap.py`` with its stand-in networks: it runs against the current stage
(a session found it broken by an old constructor argument) and reports the overlap it measures."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_restore_overlap.py"


def test_stand_in_run_reports_both_ways_per_round(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_restore_overlap", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    try:
        spec.loader.exec_module(bench)
        code = bench.main(
            ["--restorer", "stand-in", "--faces", "2", "--rounds", "1", "--workdir", str(tmp_path)]
        )
    finally:
        sys.modules.pop(spec.name, None)
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in lines if line.startswith("{")]
    assert [row["overlap"] for row in rows] == [False, True]
    for row in rows:
        assert row["networks_s"] > 0 and row["paste_s"] > 0
        assert row["wall_over_parts"] > 0
    assert rows[0]["wall_over_parts"] >= 0.95  # in turn, the wall is the sum of the parts
    assert any(line.startswith("wall(overlap) / wall(in turn)") for line in lines)
