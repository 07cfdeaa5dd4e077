"""The one device rule: ``cuda:N``, the GPU of each training process, and a GPU torch cannot use."""

from __future__ import annotations

import argparse

import pytest
import torch

from pipeline import cli
from pipeline.config import build_config
from pipeline.core import devices
from pipeline.core.device_names import device_argument
from pipeline.core.errors import ConfigError, DeviceUnavailableError
from wav2lip.training.distributed import process_gpu


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def unusable_gpu(monkeypatch):
    """An NVIDIA GPU the installed torch cannot use (e.g. a driver older than torch's CUDA)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "nvidia_gpu_evidence", lambda: "/dev/nvidia0")


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:12"])
def test_device_names_are_accepted(name):
    assert device_argument(name) == name
    assert build_config({"device": name}).device == name


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:-1", "cuda:x", "cuda1", "mps"])
def test_other_device_names_are_refused(name):
    with pytest.raises(argparse.ArgumentTypeError, match="cuda:N"):
        device_argument(name)
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
        build_config({"device": name})


def test_the_cli_parses_cuda_n():
    assert cli.build_parser().parse_args(["--device", "cuda:1"]).device == "cuda:1"


def test_cuda_n_is_checked_against_the_visible_gpus(two_gpus, monkeypatch):
    assert devices.choose_device("cuda:1") == "cuda:1"
    assert devices.choose_device("auto") == "cuda"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    with pytest.raises(
        DeviceUnavailableError, match=r"sees 2 GPU\(s\), cuda:0 .. cuda:1 \(CUDA_VISIBLE_DEVICES=4,5"
    ):
        devices.choose_device("cuda:2")


@pytest.mark.parametrize(
    ("local_rank", "visible", "gpu"), [(0, 4, 0), (3, 4, 3), (3, 1, 0), (5, 2, 1), (2, 0, 0)]
)
def test_each_training_process_takes_local_rank_modulo_the_visible_gpus(local_rank, visible, gpu):
    assert process_gpu(local_rank, visible) == gpu


def test_an_unusable_gpu_is_named_with_torchs_cuda_version(unusable_gpu):
    with pytest.raises(DeviceUnavailableError, match="no CUDA device") as raised:
        devices.choose_device("cuda:0")
    message = str(raised.value)
    assert "/dev/nvidia0" in message and "nvidia-smi" in message and "--index-url" in message
    assert (f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build") in message
    with pytest.warns(UserWarning, match=r"running on the CPU \(much slower\): an NVIDIA GPU is present"):
        assert devices.choose_device("auto") == "cpu"


def test_no_gpu_at_all_falls_back_to_the_cpu_quietly(monkeypatch, recwarn):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "nvidia_gpu_evidence", lambda: None)
    assert devices.choose_device("auto") == "cpu" and devices.unusable_gpu_message() is None
    assert not [w for w in recwarn if "GPU" in str(w.message)]
    with pytest.raises(DeviceUnavailableError, match="use --device cpu"):
        devices.choose_device("cuda")


def _tool_commands(tmp_path):
    """(main, minimal argv) of the training and evaluation tools that take --device."""
    from wav2lip.eval import evaluate, generate
    from wav2lip.training import preprocess

    folder = str(tmp_path)
    return [
        (preprocess, ["--data-root", folder, "--out", str(tmp_path / "out")]),
        (evaluate, ["--videos", folder]),
        (
            generate,
            ["--filelist", str(tmp_path / "pairs.txt"), "--data-root", folder, "--results-dir", folder],
        ),
    ]


@pytest.mark.parametrize("tool", [0, 1, 2], ids=["preprocess", "evaluate", "generate"])
def test_training_and_evaluation_tools_take_cuda_n(tmp_path, monkeypatch, capsys, tool):
    module, argv = _tool_commands(tmp_path)[tool]
    assert module.build_parser().parse_args([*argv, "--device", "cuda:1"]).device == "cuda:1"
    with pytest.raises(SystemExit) as refused:
        module.build_parser().parse_args([*argv, "--device", "gpu"])
    assert refused.value.code == 2 and "cuda:N" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "nvidia_gpu_evidence", lambda: None)
    assert module.main([*argv, "--device", "cuda:1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --device cuda:1 was asked for, but no CUDA device is available (use --device cpu)\n"
