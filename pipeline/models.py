"""Finding the checkpoints a run needs and building the models for each stage.

The stages get their models from here (built by loaders, passed in); nothing else in the pipeline
knows where a checkpoint lives.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.media import FrameSize
from pipeline.types import FaceBox, FrameBatch, StageClock

if TYPE_CHECKING:  # pipeline.faces imports torch: only the stages that run need it
    from pipeline.faces import FaceTrack

RESTORER_WEIGHTS = {"gfpgan": "gfpgan_v1.4", "codeformer": "codeformer"}
DETECTOR_WEIGHTS = {
    "retinaface_resnet50": "retinaface_resnet50",
    "retinaface_mobile0.25": "retinaface_mobile0.25",
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
    from pipeline.weights import path_of, resolve

    wav2lip = resolve("wav2lip_gan", config.wav2lip.checkpoint)
    detector = None
    if config.detect.box is None:
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


class Models:
    """The loaded stage models and the per-batch processing chain (lip-sync, then restoration)."""

    def __init__(self, config: PipelineConfig, lipsyncer: Any, detector: Any, restorer_stage: Any) -> None:
        self.config = config
        self.lipsyncer = lipsyncer
        self.detector = detector
        self.restorer_stage = restorer_stage

    def track_faces(self, batches, size: FrameSize, progress: bool) -> FaceTrack:
        """Face track over the frames in ``batches``; landmarks smoothed when restoration will use them."""
        from pipeline import faces

        frame_size = (size.height, size.width)
        track = faces.track_faces(batches, self.detector, self.config.detect, frame_size, progress)
        return self._for_restoration(track)

    def fixed_box_track(self, n_frames: int, size: FrameSize) -> FaceTrack:
        """The ``--box`` track of ``n_frames`` frames (no detection, no decoding needed)."""
        from pipeline import faces

        boxes = faces.fixed_box_track(self.config.detect.box, n_frames, (size.height, size.width))
        track = faces.FaceTrack(faces=tuple(boxes), frames_without_face=sum(box is None for box in boxes))
        return self._for_restoration(track)

    def _for_restoration(self, track: FaceTrack) -> FaceTrack:
        if self.restorer_stage is None:
            return track
        return prepare_landmarks(track, self.config.restore.landmark_smooth_window)

    def process(self, batch: FrameBatch, times: StageClock) -> FrameBatch:
        """Lip-sync then restore one batch, adding the seconds of each stage to ``times``."""
        start = time.perf_counter()
        batch = self.lipsyncer.process(batch)
        times.add("lip-sync", time.perf_counter() - start)
        if self.restorer_stage is not None:
            batch = self.restorer_stage.process(batch, times)
        return batch

    def output_size(self, size: FrameSize) -> FrameSize:
        if self.restorer_stage is None:
            return size
        width, height = self.restorer_stage.output_size(size.width, size.height)
        return FrameSize(width, height)


def prepare_landmarks(track: FaceTrack, window: int) -> FaceTrack:
    """Give every face landmarks for restoration and smooth them over each run of consecutive faces.

    A fixed ``--box`` has no detected landmarks: they are placed where a frontal face's eyes, nose and
    mouth corners sit in such a box (a warning says restoration is approximate then).
    """
    from restore import smooth_landmarks

    faces = list(track.faces)
    if any(face is not None and face.landmarks is None for face in faces):
        warnings.warn("no detected landmarks (--box): restoration aligns on estimated ones", stacklevel=2)
        faces = [
            None
            if f is None
            else (f if f.landmarks is not None else replace(f, landmarks=landmarks_from_box(f)))
            for f in faces
        ]
    for start, stop in _face_runs(faces):
        points = np.stack([faces[i].landmarks for i in range(start, stop)]).astype(np.float32)
        smoothed = smooth_landmarks(points, window)
        for offset, i in enumerate(range(start, stop)):
            faces[i] = replace(faces[i], landmarks=smoothed[offset])
    return replace(track, faces=tuple(faces))


# Where eyes, nose tip and mouth corners sit in a face box, as fractions of its width and height.
BOX_LANDMARK_FRACTIONS = np.array(
    [[0.31, 0.40], [0.69, 0.40], [0.50, 0.58], [0.35, 0.76], [0.65, 0.76]], np.float32
)


def landmarks_from_box(face: FaceBox) -> np.ndarray:
    """``(5, 2) float32`` estimated landmarks of a frontal face filling ``face``'s box."""
    scale = np.array([face.width, face.height], np.float32)
    return BOX_LANDMARK_FRACTIONS * scale + np.array([face.left, face.top], np.float32)


def _face_runs(faces: list[FaceBox | None]) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, face in enumerate(faces + [None]):
        if face is not None and start is None:
            start = i
        elif face is None and start is not None:
            runs.append((start, i))
            start = None
    return runs


def load_models(config: PipelineConfig, weights: WeightPaths, device: str) -> Models:
    import wav2lip
    from wav2lip.inference import LipSyncer

    generator = wav2lip.load_generator(weights.wav2lip, device)
    lipsyncer = LipSyncer(generator, config.wav2lip, device)
    detector = None
    if weights.detector is not None:
        from pipeline.faces import load_detector

        detector = load_detector(config.detect, weights.detector, device)
    stage = None
    if weights.restorer is not None:
        import restore

        stage = restore.build_stage(
            config.restore, weights.restorer, weights.parsing, weights.bg_upsampler, device
        )
    elif config.restore.upscale != 1:
        warnings.warn("--upscale needs a restorer; the output keeps the input size", stacklevel=2)
    return Models(config, lipsyncer, detector, stage)
