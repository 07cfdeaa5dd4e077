"""One render, start to finish: ``run_pipeline(config) -> RunSummary``.

1. Check the inputs and that every needed checkpoint is present (before any heavy work).
2. Speech: synthesise the script or decode the given audio (16 kHz mono), with its mel windows, while
   a thread imports torch and loads the models.
3. First pass over the video: detect and track the face in every frame that will be shown.
4. Second pass: stream frames in output order through lip-sync and restoration into the encoder.
5. Rename the finished file onto the output path and report what was written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from pipeline import timeline
from pipeline.config import PipelineConfig
from pipeline.core.encoders import choose_encoder
from pipeline.core.errors import FFmpegError
from pipeline.core.media import FrameCounter, FrameSize, VideoWriter, read_first_frame
from pipeline.core.types import FrameBatch
from pipeline.dialogue import (
    DialoguePlan,
    SpeakerFaces,
    fixed_tracks,
    follow_speaker_faces,
    format_segments,
    plan_dialogue,
    speaker_faces,
)
from pipeline.faces.tracking import FaceTrack
from pipeline.frames import iter_input_frames, iter_output_frames
from pipeline.inputs import RenderInputs, check_inputs
from pipeline.model_cache import ModelCache
from pipeline.output_files import output_folder
from pipeline.prefetch import BackgroundConsumer, prefetch
from pipeline.speech import SpeechTrack, dialogue_audio, save_wav, speech_audio, speech_track
from pipeline.stage_weights import WeightPaths, resolve_weights
from pipeline.stages import StageChain, load_stages

T = TypeVar("T")
Progress = Callable[[str, int, int], None]  # (stage, frames done, frames in all or 0) -> None

# Bytes of decoded BGR frames per streaming batch (64 MiB: 32 frames at 480p, 10 at 1080p, 2 at 4K).
# The decoder thread, the models and the encoder thread hold up to about eight batches between them.
FRAME_BATCH_MAX_BYTES = 64 << 20


@dataclass
class StageTimes:
    """Wall-clock seconds spent in each stage (blocking time of the decoder and encoder included)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def timed(self, stage: str, iterator: Iterator) -> Iterator:
        """Wrap ``iterator`` so the time spent producing each item counts toward ``stage``."""
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                self.add(stage, time.perf_counter() - start)
                return
            self.add(stage, time.perf_counter() - start)
            yield item


@dataclass(frozen=True)
class RunSummary:
    output: Path
    duration_s: float
    frames: int
    width: int
    height: int
    frames_without_face: int
    stage_seconds: dict[str, float]
    total_seconds: float
    audio_saved: Path | None = None
    fps: float = 25.0
    precisions: dict[str, str] = field(default_factory=dict)  # network -> "fp32" | "bf16" | "fp16" it ran in
    speakers: tuple[str, ...] = ()  # one summary line per dialogue speaker

    def format(self) -> str:
        stages = ", ".join(f"{name} {secs:.1f}s" for name, secs in self.stage_seconds.items())
        lines = [
            f"wrote {self.output} ({self.duration_s:.2f} s, {self.frames} frames at {self.fps:g} fps, "
            f"{self.width}x{self.height})",
            f"frames without a face (passed through unchanged): {self.frames_without_face}",
            f"time: {self.total_seconds:.1f}s total; {stages}",
        ]
        if self.precisions:
            lines.append("precision: " + ", ".join(f"{net} {kind}" for net, kind in self.precisions.items()))
        lines[2:2] = self.speakers
        if self.audio_saved:
            lines.insert(1, f"speech saved to {self.audio_saved}")
        return "\n".join(lines)


def run_pipeline(
    config: PipelineConfig, models: ModelCache | None = None, progress: Progress | None = None
) -> RunSummary:
    """Render the video ``config`` describes. ``models`` keeps the loaded models for later renders (a
    batch, the web UI); ``progress(stage, frames_done, frames_total)`` is called as the work goes on
    (``frames_total`` 0 when not known yet) and may raise to stop the render, which then leaves no
    output behind."""
    started = time.perf_counter()
    times = StageTimes()
    report = progress or _no_progress
    # 1. Check inputs and weights before any heavy work.
    inputs = check_inputs(config)
    sp = config.speakers
    plan = plan_dialogue(sp.faces, sp.voices, sp.segments, inputs.script, inputs.audio is not None)
    weights = resolve_weights(config)
    # 2. Speech, first frame and models (prepared side by side).
    report("speech and models", 0, 0)
    ready = _prepare(config, inputs, weights, times, models, plan)
    models, speech, first = ready.models, ready.speech, ready.first
    size = FrameSize(first.shape[1], first.shape[0])
    # 3. Detect and track the face (or take the fixed box); a dialogue tracks each speaker's face.
    faces: SpeakerFaces | None = None
    if plan is not None:
        faces = _speaker_faces(config, inputs, models, plan, ready, size, speech.frame_count, times, report)
        n_input = len(next(iter(faces.tracks.values())))
    else:
        if ready.box_frames is not None:
            track = models.fixed_box_track(ready.box_frames, size)
        else:
            run = partial(models.track_faces, size=size, progress=not config.quiet)
            track = _detect_pass(config, inputs, size, speech.frame_count, first, times, report, run)
        n_input = len(track.faces)
    # 4. Stream the render.
    indices = timeline.source_indices(n_input, speech.frame_count)
    if faces is not None:  # the speaking face of each output frame (by input index: one per output frame)
        track = models.fixed_faces(speaker_faces(ready.segments, config.output.fps, indices, faces.tracks))
        indices_faces = np.arange(speech.frame_count)
    else:
        indices_faces = indices
    out_size = models.output_size(size)
    with output_folder(inputs.output.parent):  # created now, removed again if the render fails
        _render(
            config,
            inputs,
            models,
            speech,
            track,
            (indices, indices_faces),
            size,
            out_size,
            first,
            times,
            report,
        )
    # 5. The speech is kept only once the video exists, so a failed run leaves nothing behind.
    saved_audio = save_wav(speech.audio, Path(config.output.save_audio)) if config.output.save_audio else None
    return RunSummary(
        output=inputs.output,
        duration_s=speech.frame_count / config.output.fps,
        frames=speech.frame_count,
        width=out_size.width,
        height=out_size.height,
        frames_without_face=int(sum(track.faces[i] is None for i in indices_faces)),
        stage_seconds=dict(times.seconds),
        total_seconds=time.perf_counter() - started,
        audio_saved=saved_audio,
        fps=config.output.fps,
        precisions=models.precisions(),
        speakers=tuple(format_segments(plan, ready.segments, faces)) if plan else (),
    )


@dataclass(frozen=True)
class _Prepared:
    models: StageChain
    speech: SpeechTrack
    first: np.ndarray  # the first video frame, (H, W, 3) uint8 BGR
    box_frames: int | None  # input frames to show with --box; None when the face is detected
    segments: list = field(default_factory=list)  # the dialogue's segments (empty for one face)


def _choose_device(requested: str) -> str:
    """:func:`pipeline.core.devices.choose_device` and that device's backend settings
    (:func:`~pipeline.core.devices.configure_backends`), imported here: it imports torch (about a second),
    so the render calls it in the model-loading thread, beside its ffmpeg work."""
    from pipeline.core.devices import choose_device, configure_backends

    device = choose_device(requested)
    configure_backends(device)
    return device


def _prepare(
    config: PipelineConfig,
    inputs: RenderInputs,
    weights: WeightPaths,
    times: StageTimes,
    cache: ModelCache | None,
    plan=None,
) -> _Prepared:
    """One thread imports torch, picks the device and loads the models (seconds) while this thread makes
    the speech and reads the first frame through ffmpeg; with ``--box`` another ffmpeg counts the frames."""
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-models")
    counter: FrameCounter | None = None
    try:
        device = loader.submit(_choose_device, config.device)
        loading = loader.submit(lambda: load_stages(config, weights, device.result(), cache))
        t0 = time.perf_counter()
        segments: list = []
        if plan is None:
            audio = speech_audio(config, inputs, device.result)
        else:
            audio, segments = dialogue_audio(plan, config, inputs)
        times.add("speech", time.perf_counter() - t0)
        n_output = timeline.output_frame_count(audio.duration_s, config.output.fps)
        fixed = plan is not None and plan.fixed
        counter = _start_count(config, inputs, n_output, fixed)
        first = read_first_frame(inputs.video, config.output.fps)
        device.result()  # a --device that cannot be had is reported now, before the rest of the work
        t0 = time.perf_counter()
        speech = speech_track(audio, config.output.fps, config.wav2lip.hold_silence)
        times.add("speech", time.perf_counter() - t0)
        t0 = time.perf_counter()
        box_frames = _box_frame_count(config, counter, fixed)
        times.add("decode", time.perf_counter() - t0)  # the wait left for the count
        t0 = time.perf_counter()
        models = loading.result()
        times.add("load models", time.perf_counter() - t0)  # the wait left after the work above
    finally:
        if counter is not None:
            counter.close()  # kills ffmpeg when leaving early (an error, Ctrl-C)
        loader.shutdown(wait=False, cancel_futures=True)
    return _Prepared(models, speech, first, box_frames, segments)


def _start_count(
    config: PipelineConfig, inputs: RenderInputs, n_output: int, fixed: bool = False
) -> FrameCounter | None:
    """With ``--box`` only the number of input frames (up to ``n_output``) matters: start ffmpeg counting
    them (no pixels kept). None when the face is to be detected or the input is a photo."""
    if (config.detect.box is None and not fixed) or inputs.is_still:
        return None
    return FrameCounter(inputs.video, config.output.fps, n_output)


def _box_frame_count(config: PipelineConfig, counter: FrameCounter | None, fixed: bool = False) -> int | None:
    """Input frames a ``--box`` run shows (1 for a photo); None when the face is to be detected."""
    if config.detect.box is None and not fixed:
        return None
    return 1 if counter is None else counter.result()


def _speaker_faces(
    config: PipelineConfig,
    inputs: RenderInputs,
    models: StageChain,
    plan: DialoguePlan,
    ready: _Prepared,
    size: FrameSize,
    n_output: int,
    times: StageTimes,
    report: Progress,
) -> SpeakerFaces:
    """Each speaker's face over the input frames the output will show: fixed boxes as given (only the
    frame count matters), faces by position or index detected in every frame, then followed."""
    if plan.fixed:
        return SpeakerFaces(fixed_tracks(plan, ready.box_frames or 1))
    run = partial(models.detect_faces, size=size, progress=not config.quiet)
    per_frame = _detect_pass(config, inputs, size, n_output, ready.first, times, report, run)
    return follow_speaker_faces(plan, per_frame, config.detect, (size.height, size.width))


def _detect_pass(
    config: PipelineConfig,
    inputs: RenderInputs,
    size: FrameSize,
    n_output: int,
    first: np.ndarray,
    times: StageTimes,
    report: Progress,
    run: Callable[[Iterator[np.ndarray]], T],
) -> T:
    """``run(frame batches)`` over the input frames the output will show (decoded in a thread), its
    time counted as detection apart from the decoding."""
    fps = config.output.fps
    batch = frames_per_batch(config.detect.batch_size, size)
    if inputs.is_still:
        batches = prefetch(iter([first[None]]))
    else:
        batches = prefetch(iter_input_frames(inputs.video, size, fps, batch, n_output))
    decode_before, start = times.seconds.get("decode", 0.0), time.perf_counter()
    try:
        result = run(_reported("detect", times.timed("decode", batches), n_output, report))
    finally:
        batches.close()  # stop the decoder thread and ffmpeg now, also on an error
    decode_spent = times.seconds.get("decode", 0.0) - decode_before
    times.add("detect", time.perf_counter() - start - decode_spent)
    return result


def _render(
    config: PipelineConfig,
    inputs: RenderInputs,
    models: StageChain,
    speech: SpeechTrack,
    track: FaceTrack,
    indices: tuple[np.ndarray, np.ndarray],
    size: FrameSize,
    out_size: FrameSize,
    first: np.ndarray,
    times: StageTimes,
    report: Progress,
) -> None:
    """Decode (thread) -> lip-sync -> restore (this thread) -> encode (thread), batch by batch.

    ``indices``: the input frame of each output frame, and the face-track entry of each output frame."""
    indices, face_indices = indices
    largest = max(size, out_size, key=lambda s: s.frame_bytes)
    batch = frames_per_batch(config.frame_batch, largest, models.lipsyncer.batch_size)
    batches = prefetch(
        _frame_batches(config, inputs, speech, track, (indices, face_indices), size, first, batch)
    )
    out = config.output
    video_encoder = choose_encoder(out.encoder, models.lipsyncer.device.type)  # "x264" | "nvenc"
    # The bar is closed on any way out, so that an error message starts on a line of its own.
    with (
        tqdm(total=len(indices), desc="render", unit="frame", disable=config.quiet) as bar,
        VideoWriter(
            inputs.output, out_size, out.fps, out.crf, out.preset, speech.audio, video_encoder
        ) as writer,
    ):
        encoder = BackgroundConsumer(writer.write)
        stream = models.process_stream(times.timed("decode", batches), times)
        try:
            for item in stream:
                t0 = time.perf_counter()
                encoder.put(item.frames)
                times.add("encode", time.perf_counter() - t0)
                bar.update(len(item))
                report("render", bar.n, len(indices))
            t0 = time.perf_counter()
            encoder.finish()
            if writer.frames_written != len(indices):
                raise FFmpegError(
                    f"decoding {inputs.video} gave {writer.frames_written} frames where {len(indices)} were "
                    "expected; the file may be damaged (try re-encoding it with ffmpeg)"
                )
            writer.commit()
            times.add("encode", time.perf_counter() - t0)
        finally:
            try:
                stream.close()  # the restorer's paste worker stops before the frames it writes into go
            finally:
                encoder.cancel()
                batches.close()


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def _reported(
    stage: str, batches: Iterator[np.ndarray], total: int, report: Progress
) -> Iterator[np.ndarray]:
    """``batches`` unchanged, with ``report(stage, frames so far, total)`` after each batch."""
    done = 0
    report(stage, done, total)
    for batch in batches:
        yield batch
        done += len(batch)
        report(stage, done, total)


def _frame_batches(
    config: PipelineConfig,
    inputs: RenderInputs,
    speech: SpeechTrack,
    track: FaceTrack,
    indices: tuple[np.ndarray, np.ndarray],
    size: FrameSize,
    first: np.ndarray,
    batch: int,
) -> Iterator[FrameBatch]:
    """Output frames in order, each batch with its faces and mel windows.

    A video of one frame is repeated from memory like a photo (not decoded again for every frame).
    """
    indices, face_indices = indices
    still = first if inputs.is_still or len(set(indices.tolist())) == 1 else None
    frames = iter_output_frames(inputs.video, size, config.output.fps, indices, batch, still)
    start = 0
    for chunk in frames:
        faces = tuple(track.faces[i] for i in face_indices[start : start + len(chunk)])
        mel, weight = speech.mel_windows(start, len(chunk)), speech.mouth_weights(start, len(chunk))
        yield FrameBatch(start, chunk, faces, mel, weight)
        start += len(chunk)


def frames_per_batch(requested: int, size: FrameSize, model_batch: int = 1) -> int:
    """``requested`` frames per streaming batch, fewer for large frames so that one batch of frames of
    ``size`` (the larger of input and output) stays under ``FRAME_BATCH_MAX_BYTES`` (a few batches are
    in flight at once); at least 1. Above ``model_batch`` (faces per lip-sync forward) the count is cut
    to a multiple of it: 24 frames at 720p with 16 per forward would hold 8 frames more for a forward of
    8, no faster per face."""
    frames = max(1, min(int(requested), FRAME_BATCH_MAX_BYTES // size.frame_bytes))
    return frames - frames % model_batch if frames > model_batch else frames
