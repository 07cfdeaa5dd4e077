"""Training logs: scalars and sample grids as TensorBoard event files, or a JSONL file without tensorboard.

``tensorboard --logdir <checkpoint_dir>`` shows them. A resumed run hides the events an earlier run
wrote after the step it resumes from (TensorBoard's purge step), so a curve never doubles back.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

METRICS_FILE = "metrics.jsonl"  # fallback log when tensorboard is not installed
SAMPLES_DIR = "samples"  # sample grids as JPEG files, under the log directory


def _summary_writer_class():
    """``torch.utils.tensorboard.SummaryWriter``, or None when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter


class MetricLogger:
    """Scalars and sample images of one training process.

    TensorBoard event files in ``log_dir`` when ``tensorboard`` imports, else ``log_dir/metrics.jsonl``
    (one ``{"step": n, tag: value, ...}`` object per call; a warning says so). Sample grids are also
    written as JPEG files under ``log_dir/samples``. ``resume_step`` > 0 (a run continuing from the
    checkpoint of that step) hides the events that earlier runs logged after it, so TensorBoard shows
    each step once. Does nothing when ``enabled`` is false (ranks > 0).
    """

    def __init__(self, log_dir: str | Path, enabled: bool, resume_step: int = 0) -> None:
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        self._writer = None
        self._jsonl = None
        if not enabled:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        writer_class = _summary_writer_class()
        if writer_class is None:
            warnings.warn(
                f"tensorboard is not installed; training metrics go to {self.log_dir / METRICS_FILE}",
                stacklevel=2,
            )
            self._jsonl = open(self.log_dir / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        else:
            purge_step = resume_step + 1 if resume_step > 0 else None  # first step this run logs
            self._writer = writer_class(str(self.log_dir), purge_step=purge_step)

    @property
    def uses_tensorboard(self) -> bool:
        return self._writer is not None

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Log ``{tag: value}`` at global ``step`` (tags like ``train/loss``)."""
        if not self.enabled:
            return
        if self._writer is not None:
            for tag, value in values.items():
                self._writer.add_scalar(tag, float(value), step)
        else:
            record = {"step": int(step), **{k: float(v) for k, v in values.items()}}
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()

    def image(self, tag: str, grid_bgr: np.ndarray, step: int) -> Path | None:
        """Save ``(H, W, 3) uint8`` BGR ``grid_bgr`` as ``samples/<tag>_step<step>.jpg`` and, with
        TensorBoard, as image ``tag`` at ``step``. Returns the JPEG path (None when disabled)."""
        if not self.enabled:
            return None
        path = self.log_dir / SAMPLES_DIR / f"{tag}_step{step:09d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), grid_bgr)
        if self._writer is not None:
            self._writer.add_image(tag, np.ascontiguousarray(grid_bgr[..., ::-1]), step, dataformats="HWC")
        return path

    def close(self) -> None:
        """Flush and close the event file / JSONL file."""
        if self._writer is not None:
            self._writer.close()
        if self._jsonl is not None:
            self._jsonl.close()
