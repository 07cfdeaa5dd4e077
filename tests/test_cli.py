"""CLI behaviour that needs no render: help, resolved config, environment check."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_help_explains_and_exits_zero(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--text", "--video", "--restorer", "--fidelity", "--box", "--pads", "--face", "--check"):
        assert flag in out
    assert "Exit codes: 0 success, 2 bad input or usage, 3 missing or bad weights" in out


def test_print_config_shows_flags_over_yaml_defaults(capsys):
    argv = ["--print-config", "--restorer", "codeformer", "--fidelity", "0.9", "--pads", "0", "20", "0", "0"]
    assert main(argv) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["restore"]["restorer"] == "codeformer"
    assert config["restore"]["fidelity"] == 0.9
    assert config["detect"]["pads"] == [0, 20, 0, 0]
    assert config["output"]["crf"] == 18  # from configs/inference.yaml


def test_check_reports_ffmpeg_tts_device_and_each_weight(tmp_path):
    env = {**os.environ, "LIPSYNC_WEIGHTS_DIR": str(tmp_path)}
    (tmp_path / "GFPGANv1.4.pth").write_bytes(b"x")
    result = subprocess.run(
        [sys.executable, str(REPO / "run_pipeline.py"), "--check"], capture_output=True, text=True, env=env
    )
    out = result.stdout
    assert "ffmpeg" in out and "version" in out
    assert "tts espeak" in out and "voices" in out
    assert "device:" in out
    # a one-byte file is not GFPGAN v1.4: its size and SHA-256 do not match; each says where it comes from
    assert re.search(r"gfpgan_v1.4 +mismatch +from: https://github.com/TencentARC/GFPGAN/releases/", out)
    assert re.search(
        r"wav2lip_gan +missing +from: https://drive.google.com/file/d/15G3U08c8xsCkOqQxE38Z2XXDnPcOptNk", out
    )
    assert result.returncode == 2  # the default render cannot run without its weights
    assert "not ready:" in out and str(tmp_path / "wav2lip_gan.pth") in out


def test_sigterm_is_not_swallowed_by_library_except_exception():
    from pipeline.cli import Terminated

    def library_code():
        try:
            raise Terminated
        except Exception:  # what a third-party model loader might do
            return "swallowed"

    try:
        library_code()
    except KeyboardInterrupt as exc:
        assert isinstance(exc, Terminated)
    else:
        raise AssertionError("SIGTERM was swallowed")
