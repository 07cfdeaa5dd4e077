"""The checkpoints a run needs, found before any heavy work: nothing else in the render knows where a
checkpoint lives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.core.weight_store import path_of, resolve
from pipeline.dialogue import faces_need_detection

RESTORER_WEIGHTS = {"gfpgan": "gfpgan_v1.4", "codeformer": "codeformer"}
DETECTOR_WEIGHTS = {
    "retinaface_resnet50": "retinaface_resnet50",
    "retinaface_mobile0.25": "retinaface_mobile0.25",
    "s3fd": "s3fd",
}


@dataclass(frozen=True)
class WeightPaths:
    wav2lip: Path
    detector: Path | None
    restorer: Path | None
    parsing: Path | None
    bg_upsampler: Path | None


def resolve_weights(config: PipelineConfig) -> WeightPaths:
    """Every checkpoint the run needs, checked present before any heavy work (MissingWeightsError)."""
    wav2lip = resolve("wav2lip_gan", config.wav2lip.checkpoint)
    detector = None
    faces = config.speakers.faces  # a dialogue: its speakers' faces say whether the detector runs
    if faces_need_detection(faces) if faces else config.detect.box is None:
        detector = resolve(DETECTOR_WEIGHTS[config.detect.model], config.detect.checkpoint)
    restorer = parsing = bg = None
    restore = config.restore
    if restore.restorer != "none":
        restorer = resolve(RESTORER_WEIGHTS[restore.restorer], restore.checkpoint)
        parsing_file = path_of("parsenet")
        parsing = parsing_file if restore.parsing and parsing_file.is_file() else None
        if restore.bg_upsampler == "realesrgan":
            bg = resolve("realesrgan_x2plus")
    return WeightPaths(wav2lip, detector, restorer, parsing, bg)
