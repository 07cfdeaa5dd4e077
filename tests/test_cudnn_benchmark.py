"""cuDNN autotuning is switched on where the render's device is chosen, and only for CUDA."""

from __future__ import annotations

import pytest
import torch

from pipeline import render
from pipeline.core import devices


@pytest.fixture
def benchmark_flag(monkeypatch):
    """The real ``cudnn.benchmark`` flag, put back afterwards."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)


@pytest.mark.parametrize("chosen, expected", [("cuda", True), ("cuda:1", True), ("cpu", False)])
def test_benchmark_is_set_once_for_the_chosen_device(monkeypatch, benchmark_flag, chosen, expected):
    torch.backends.cudnn.benchmark = not expected
    requests: list[str] = []
    monkeypatch.setattr(devices, "choose_device", lambda requested: requests.append(requested) or chosen)
    assert render._choose_device("auto") == chosen
    assert requests == ["auto"] and torch.backends.cudnn.benchmark is expected


def test_a_cpu_run_after_a_cuda_one_turns_it_off(benchmark_flag):
    devices.configure_backends("cuda:0")
    assert torch.backends.cudnn.benchmark is True
    devices.configure_backends(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
