"""Orchestration, media I/O, face tracking, weights and CLI logic.

``pipeline.run(config)`` renders one lip-synced video; it is the Python API behind
``run_pipeline.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig


def run(config: "PipelineConfig") -> Any:
    """Render the video described by ``config``; returns a :class:`pipeline.render.RunSummary`."""
    from pipeline.render import run_pipeline

    return run_pipeline(config)
