"""Orchestration, media I/O, face tracking, weights and CLI logic.

``pipeline.run(config)`` renders one lip-synced video; it is the Python API behind
``run_pipeline.py``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# OpenMP threads that spin while waiting starve the ffmpeg encoder and decoder running beside the
# models (measured on 2 cores: lip-sync of a 10 s 720p clip 18 s spinning, 10 s passive). It only takes
# effect if set before torch is first imported; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig


def run(config: "PipelineConfig") -> Any:
    """Render the video described by ``config``; returns a :class:`pipeline.render.RunSummary`."""
    from pipeline.render import run_pipeline

    return run_pipeline(config)
