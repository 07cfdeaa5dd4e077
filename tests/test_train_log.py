"""Training logs without tensorboard (the JSONL fallback) and on ranks other than 0. The TensorBoard
event files of real runs are checked in test_training.py."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest

from wav2lip.training import log as train_log


def test_metrics_fall_back_to_jsonl_without_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    with pytest.warns(UserWarning, match="tensorboard is not installed"):
        logger = train_log.MetricLogger(tmp_path, enabled=True)
    assert not logger.uses_tensorboard
    logger.scalars({"train/loss": 0.5, "train/lr": 1e-4}, 1)
    logger.scalars({"val/loss": 0.25}, 2)
    grid = np.full((96, 384, 3), (10, 120, 240), np.uint8)
    saved = logger.image("samples", grid, 2)
    logger.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 1, "train/loss": 0.5, "train/lr": 1e-4},
        {"step": 2, "val/loss": 0.25},
    ]
    assert saved == tmp_path / "samples" / "samples_step000000002.jpg"
    assert np.abs(cv2.imread(str(saved)).astype(int) - grid).max() <= 3
    assert not list(tmp_path.glob("events.out.tfevents.*"))


def test_rank_other_than_zero_writes_no_logs(tmp_path):
    logger = train_log.MetricLogger(tmp_path / "logs", enabled=False)
    logger.scalars({"train/loss": 1.0}, 1)
    assert logger.image("samples", np.zeros((8, 8, 3), np.uint8), 1) is None
    logger.close()
    assert not (tmp_path / "logs").exists()
