"""The typed chain of stage models a render runs per batch (lip-sync, then restoration), built by
loaders and passed in."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from pipeline.config import PipelineConfig
from pipeline.core.media import FrameSize
from pipeline.core.types import FaceBox, FrameBatch, StageClock
from pipeline.faces.landmarks import prepare_landmarks
from pipeline.faces.tracking import FaceTrack, fixed_box_track
from pipeline.model_cache import ModelCache, call_loader
from pipeline.stage_weights import WeightPaths

if TYPE_CHECKING:  # these import torch: only the stages that run need it
    from pipeline.faces.detector import FaceDetector
    from restore.stage import FaceRestoreStage
    from wav2lip.inference import LipSyncer


class StageChain:
    """The loaded stage models and the per-batch processing chain (lip-sync, then restoration)."""

    def __init__(
        self,
        config: PipelineConfig,
        lipsyncer: LipSyncer,
        detector: FaceDetector | None,
        restorer_stage: FaceRestoreStage | None,
    ) -> None:
        self.config = config
        self.lipsyncer = lipsyncer
        self.detector = detector
        self.restorer_stage = restorer_stage

    def track_faces(self, batches, size: FrameSize, progress: bool) -> FaceTrack:
        """Face track over the frames in ``batches``; landmarks smoothed when restoration will use them."""
        from pipeline.faces.detector import track_faces

        frame_size = (size.height, size.width)
        track = track_faces(batches, self.detector, self.config.detect, frame_size, progress)
        return self._for_restoration(track)

    def detect_faces(self, batches, size: FrameSize, progress: bool) -> list[list[FaceBox]]:
        """Every face the detector finds in each frame of ``batches`` (a dialogue's speakers pick theirs)."""
        from pipeline.faces.detector import detect_faces

        return detect_faces(batches, self.detector, (size.height, size.width), progress)

    def fixed_box_track(self, n_frames: int, size: FrameSize) -> FaceTrack:
        """The ``--box`` track of ``n_frames`` frames (no detection, no decoding needed)."""
        boxes = fixed_box_track(self.config.detect.box, n_frames, (size.height, size.width))
        track = FaceTrack(faces=tuple(boxes), frames_without_face=sum(box is None for box in boxes))
        return self._for_restoration(track)

    def fixed_faces(self, boxes) -> FaceTrack:
        """A track of the given per-frame boxes (a dialogue's speaking faces)."""
        track = FaceTrack(faces=tuple(boxes), frames_without_face=sum(box is None for box in boxes))
        return self._for_restoration(track)

    def _for_restoration(self, track: FaceTrack) -> FaceTrack:
        if self.restorer_stage is None:
            return track
        return prepare_landmarks(track, self.config.restore.landmark_smooth_window)

    def process(self, batch: FrameBatch, times: StageClock) -> FrameBatch:
        """Lip-sync then restore one batch, adding the seconds of each stage to ``times``."""
        batch = self._lipsync(batch, times)
        if self.restorer_stage is not None:
            batch = self.restorer_stage.process(batch, times)
        return batch

    def process_stream(self, batches: Iterable[FrameBatch], times: StageClock) -> Iterator[FrameBatch]:
        """:meth:`process` over a stream, in order; the restorer fills its network batches across
        stream batches (:meth:`restore.FaceRestoreStage.process_stream`)."""
        synced = (self._lipsync(batch, times) for batch in batches)
        if self.restorer_stage is None:
            yield from synced
        else:
            yield from self.restorer_stage.process_stream(synced, times)

    def _lipsync(self, batch: FrameBatch, times: StageClock) -> FrameBatch:
        start = time.perf_counter()
        batch = self.lipsyncer.process(batch)
        times.add("lip-sync", time.perf_counter() - start)
        return batch

    def precisions(self) -> dict[str, str]:
        """The resolved compute precision of each loaded network (the run summary's "precision" line)."""
        found = {"lip-sync": self.lipsyncer.precision}
        if self.detector is not None:
            found["detection"] = self.detector.precision
        if self.restorer_stage is not None:
            restorer = self.restorer_stage.restorer
            backend = " (OpenVINO)" if getattr(restorer, "backend", "torch") == "openvino" else ""
            found["restoration"] = restorer.precision + backend
            if self.restorer_stage.bg_upsampler is not None:
                found["background upscaling"] = self.restorer_stage.bg_upsampler.precision
        return found

    def output_size(self, size: FrameSize) -> FrameSize:
        if self.restorer_stage is None:
            return size
        width, height = self.restorer_stage.output_size(size.width, size.height)
        return FrameSize(width, height)


def load_stages(
    config: PipelineConfig, weights: WeightPaths, device: str, models: ModelCache | None = None
) -> StageChain:
    """The stage models ``weights`` names, loaded on ``device`` and chained. With ``models`` the
    networks come from (and stay in) that cache; the light per-run wrappers are built anew."""
    import wav2lip
    from wav2lip.inference import LipSyncer

    load = models.load if models is not None else call_loader
    from pipeline.core.devices import resolve_precision

    precision = resolve_precision(config.precision, device)  # a bf16 CPU keeps the weights in bf16
    generator = load(wav2lip.load_generator_for_inference, weights.wav2lip, device, precision)
    # A render's decoded frames belong to it alone: the mouths are pasted into them, not into a copy.
    lipsyncer = LipSyncer(generator, config.wav2lip, device, precision, in_place=True)
    detector = None
    if weights.detector is not None:
        from pipeline.faces.detector import load_detector

        # keyed by the whole detect section: jobs with other detection settings get their own wrapper
        detector = load(load_detector, config.detect, weights.detector, device, config.precision)
    stage = None
    if weights.restorer is not None:
        import restore

        stage = restore.build_stage(
            config.restore,
            weights.restorer,
            weights.parsing,
            weights.bg_upsampler,
            device,
            config.precision,
            load,
        )
    elif config.restore.upscale != 1:
        warnings.warn("--upscale needs a restorer; the output keeps the input size", stacklevel=2)
    return StageChain(config, lipsyncer, detector, stage)
