"""The face-restoration stage of the pipeline: align, restore, paste back, for a batch of frames.

For every frame whose face has landmarks (already smoothed over time by the pipeline:
:func:`pipeline.faces.landmarks.smooth_landmarks`), the face is aligned to the FFHQ template, restored
together with the other faces of the batch (``cfg.batch_size`` per forward pass: by default 1 on CPU, 8
on CUDA),
warped back and blended into the frame (upscaled ``cfg.upscale`` times, by Real-ESRGAN when given, else
Lanczos). Frames without a face, or whose face has no landmarks or eyes closer than 5 pixels (as the
official tools skip them), are only upscaled. There is no second face detection. Over a stream of
batches (:meth:`FaceRestoreStage.process_stream`, what a render runs) the faces of several streaming
batches fill one forward pass: at 720p with ``upscale`` 2 a streaming batch holds about 6 frames, a GPU
forward 8 faces.

Flicker: three things keep restored video steady. Landmark smoothing steadies the crop; GFPGAN uses the
checkpoint's fixed noise maps instead of fresh random noise per frame; and CodeFormer's ``fidelity``
(``w``) trades sharpness for faithfulness: about 1.0 is what its authors suggest for video, lower values
are sharper but less faithful to the input face and flicker more.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from pipeline.core.adaptive_batch import AdaptiveBatch
from pipeline.core.devices import batch_size_for
from pipeline.core.errors import ConfigError, WrongModelError
from pipeline.core.types import FrameBatch, StageClock
from restore.align import estimate_affine, inverse_affine, warp_face
from restore.blend import parsing_face_mask, paste_restored_face_into
from restore.config import RestoreConfig
from restore.convert import pixels_to_tensor
from restore.device_masks import mask_from_levels, parsing_masks_on_device
from restore.parsing import FaceParser, load_parser
from restore.restorers import FaceRestorer, load_restorer
from restore.upsample import BackgroundUpsampler, load_bg_upsampler

UPSCALE_FACTORS = (1, 2, 4)  # output sizes the stage supports, times the input size
# Faces per forward pass when restore.batch_size is unset. On 2 CPU cores a batch of 4 is no faster than
# one face at a time (GFPGAN 1.64 vs 1.41 s per face) and nearly doubles peak memory (4.1 vs 2.2 GB).
DEFAULT_BATCH_SIZE_CPU = 1
DEFAULT_BATCH_SIZE_CUDA = 8
# Streaming batches process_stream holds at most while faces queue for a full forward (each batch of frames
# is at most pipeline.render's 64 MiB).
MAX_HELD_BATCHES = 3
MIN_EYE_DISTANCE = (
    5.0  # pixels: smaller faces (tiny or in profile) are left as they are, like the official tools
)


class FaceRestoreStage:
    """``process(FrameBatch) -> FrameBatch`` with restored faces; frames grow ``cfg.upscale`` times."""

    def __init__(
        self,
        restorer: FaceRestorer,
        cfg: RestoreConfig,
        parser: FaceParser | None = None,
        bg_upsampler: BackgroundUpsampler | None = None,
        overlap: bool = True,
        masks_on_device: bool | None = None,
    ) -> None:
        if cfg.upscale not in UPSCALE_FACTORS:
            raise ConfigError(f"restore.upscale must be one of 1, 2, 4, got {cfg.upscale}")
        if not 0.0 <= cfg.fidelity <= 1.0:
            raise ConfigError(f"restore.fidelity must be in [0, 1], got {cfg.fidelity}")
        self.restorer = restorer
        self.cfg = cfg
        self.parser = parser if cfg.parsing else None
        self.bg_upsampler = bg_upsampler if cfg.upscale > 1 else None
        self.batches = AdaptiveBatch(restore_batch_size(cfg.batch_size, restorer.device), "face restoration")
        self.overlap = overlap  # paste in a worker thread while the networks run (False: in turn)
        # Parsing masks made where the parser runs (restore.device_masks), one uint8 mask per face coming
        # down; default on CUDA. On the CPU the paste worker makes them in float64 (the official recipe).
        on_cuda = self.parser is not None and self.parser.device.type == "cuda"
        self.masks_on_device = on_cuda if masks_on_device is None else masks_on_device
        self.paste_busy_seconds = 0.0  # mask + paste time of every batch so far (see process)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """Output frame ``(width, height)`` in pixels for an input of ``width`` x ``height``."""
        return width * self.cfg.upscale, height * self.cfg.upscale

    def process(self, batch: FrameBatch, times: StageClock | None = None) -> FrameBatch:
        """Restore the faces of ``batch`` (frames ``(N, H, W, 3) uint8`` BGR) -> frames
        ``(N, H * upscale, W * upscale, 3) uint8`` BGR, same faces, mel and start index.

        The CPU work of each restored batch of faces (parsing-mask blurs, warping and blending back) runs
        in a worker thread while the networks compute the next batch (with ``overlap``; same result).
        ``times``, when given, gets the wall seconds of "restore" (align, upscaling, the networks, and the
        pastes that overlap them) and "paste" (the wait for the worker after the last network batch);
        :attr:`paste_busy_seconds` adds up the worker's own time, overlapped or not."""
        (restored,) = self.process_stream([batch], times)
        return restored

    def process_stream(
        self, batches: Iterable[FrameBatch], times: StageClock | None = None
    ) -> Iterator[FrameBatch]:
        """:meth:`process` over a stream of batches, in order, with the network's batches filled across
        them: faces wait in a queue until ``batch_size`` of them are there (the last ones go at the end
        of the stream), so a stream of batches of 5 frames with ``batch_size`` 8 runs forwards of 8, not of
        5. A batch comes out once all its faces are pasted and holds its output frames until then; when
        ``MAX_HELD_BATCHES`` batches are held (faces are sparse: few per batch, or long stretches
        without one) the queued faces go in a short forward instead. With ``batch_size`` 1 (the CPU
        default) every face is a full forward, so each batch comes out as soon as it is pasted.
        ``times``: as for :meth:`process`.
        """
        pasting = _PasteWorker(self._paste_faces, self.overlap)
        held: deque[_HeldBatch] = deque()
        queue: list[_QueuedFace] = []
        try:
            for batch in batches:
                start = time.perf_counter()
                queue += self._take_in(batch, held)
                queue = self._restore_queued(queue, pasting, full_only=True)
                if len(held) >= MAX_HELD_BATCHES and held[0].waiting:  # sparse faces: a short forward
                    queue = self._restore_queued(queue, pasting, full_only=False)
                _add(times, "restore", time.perf_counter() - start)
                yield from self._finished(held, times)
            start = time.perf_counter()
            self._restore_queued(queue, pasting, full_only=False)
            _add(times, "restore", time.perf_counter() - start)
            yield from self._finished(held, times)
        finally:
            self.paste_busy_seconds += pasting.finish()

    def _take_in(self, batch: FrameBatch, held: deque[_HeldBatch]) -> list[_QueuedFace]:
        """Align ``batch``'s faces and upscale its frames; the batch joins ``held``, its faces the queue."""
        indices, crops, affines = self._align(batch)
        entry = _HeldBatch(batch, self._upscale(batch.frames, batch.start_index), waiting=len(indices))
        held.append(entry)
        numbers = batch.start_index + np.asarray(indices, np.int64)
        return [_QueuedFace(entry, *face) for face in zip(indices, crops, affines, numbers)]

    def _restore_queued(
        self, queue: list[_QueuedFace], pasting: _PasteWorker, full_only: bool
    ) -> list[_QueuedFace]:
        """Restore the queued faces (only whole network batches when ``full_only``), hand each batch to
        the paste worker, and return the faces still queued."""
        count = len(queue) - len(queue) % self.batches.size if full_only else len(queue)

        def run(a: int, b: int) -> None:
            chunk = queue[a:b]
            crops = np.stack([face.crop for face in chunk])
            numbers = np.array([face.frame_number for face in chunk], np.int64)
            faces, masks = self._restore_batch(crops, numbers)
            for entry in dict.fromkeys(face.entry for face in chunk):  # each held batch once, in order
                mine = [k for k, face in enumerate(chunk) if face.entry is entry]
                future = pasting.submit(
                    entry.frames,
                    [chunk[k].index for k in mine],
                    faces[mine],
                    [masks[k] for k in mine],
                    [chunk[k].affine for k in mine],
                )
                entry.pastes.append(future)
                entry.waiting -= len(mine)

        self.batches.map(count, run)
        return queue[count:]

    def _finished(self, held: deque[_HeldBatch], times: StageClock | None) -> Iterator[FrameBatch]:
        """The held batches at the front whose faces have all been handed to the paster, once their own
        pastes are done (later batches' pastes go on overlapping the next forward)."""
        while held and held[0].waiting == 0:
            entry = held.popleft()
            start = time.perf_counter()
            for future in filter(None, entry.pastes):
                future.result()
            _add(times, "paste", time.perf_counter() - start)
            yield entry.batch.with_frames(entry.frames)

    def _paste_faces(self, frames, indices, faces, masks, affines) -> None:
        """Blend restored ``faces`` into ``frames[indices]`` (in place) with the masks of
        :meth:`_restore_batch`."""
        for index, face, mask_source, affine in zip(indices, faces, masks, affines):
            mask = self._blend_mask(mask_source)
            inverse = inverse_affine(affine, self.cfg.upscale)
            paste_restored_face_into(frames[index], face, inverse, self.cfg.upscale, mask)

    def _align(self, batch: FrameBatch) -> tuple[list[int], np.ndarray, list[np.ndarray]]:
        indices, crops, affines = [], [], []
        size = self.restorer.face_size
        for i, face in enumerate(batch.faces):
            if face is None or face.landmarks is None or eye_distance(face.landmarks) < MIN_EYE_DISTANCE:
                continue
            affine = estimate_affine(face.landmarks, size)
            if affine is None:
                warnings.warn(
                    f"frame {batch.start_index + i}: degenerate face landmarks, face left unrestored",
                    stacklevel=3,
                )
                continue
            indices.append(i)
            affines.append(affine)
            crops.append(warp_face(batch.frames[i], affine, size))
        stacked = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
        return indices, stacked, affines

    def _restore_batch(self, crops: np.ndarray, frame_numbers: np.ndarray) -> tuple[np.ndarray, list]:
        """Restored faces and, for each, what its blend mask comes from: ``None`` without a parser (the
        square mask), its parsing labels ``(S, S) int64`` (masked by the paste worker), or with
        :attr:`masks_on_device` its mask ``(S, S) uint8``, made where the parser ran."""
        fidelity = self.cfg.fidelity
        if self.parser is None:
            return self.restorer.restore_aligned(crops, fidelity, frame_numbers), [None] * len(crops)
        if not (self.masks_on_device and self.parser.size == self.restorer.face_size):
            faces = self.restorer.restore_aligned(crops, fidelity, frame_numbers)
            return faces, list(self.parser.parse(faces))
        faces, pixels = self.restorer.restore_aligned_on_device(crops, fidelity, frame_numbers)
        labels = self.parser.parse_on_device(pixels_to_tensor(pixels.to(self.parser.device)))
        return faces, list(parsing_masks_on_device(labels).cpu().numpy())

    def _blend_mask(self, source: np.ndarray | None) -> np.ndarray | None:
        """The float ``[0, 1]`` mask the paste takes, from what :meth:`_restore_batch` gave for a face."""
        if source is None:
            return None
        if source.dtype == np.uint8:  # made on the device
            return mask_from_levels(source)
        return parsing_face_mask(source, self.restorer.face_size)

    def _upscale(self, frames: np.ndarray, first_frame: int) -> np.ndarray:
        factor = self.cfg.upscale
        if factor == 1:
            return frames.copy()
        if self.bg_upsampler is not None:
            return self.bg_upsampler.upsample(frames, factor, first_frame)
        height, width = frames.shape[1:3]
        size = (width * factor, height * factor)
        return np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_LANCZOS4) for frame in frames])


@dataclass(eq=False)  # compared and hashed by identity: one entry per batch in flight
class _HeldBatch:
    """A batch in :meth:`FaceRestoreStage.process_stream`: its output frames, and how many of its faces
    are not yet handed to the paste worker."""

    batch: FrameBatch
    frames: np.ndarray
    waiting: int
    pastes: list[Future] = field(default_factory=list)  # the paste worker's jobs into these frames


@dataclass
class _QueuedFace:
    """An aligned face waiting for a full network batch."""

    entry: _HeldBatch
    index: int  # frame within entry.batch
    crop: np.ndarray
    affine: np.ndarray
    frame_number: int


def _add(times: StageClock | None, stage: str, seconds: float) -> None:
    if times is not None:
        times.add(stage, seconds)


class _PasteWorker:
    """Runs ``paste(*args)`` calls in order: in one worker thread with ``overlap``, else at once."""

    def __init__(self, paste, overlap: bool) -> None:
        self._paste = paste
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="restore-paste") if overlap else None
        self._pending: list[Future] = []
        self.busy_seconds = 0.0

    def submit(self, *args) -> Future | None:
        """Queue one paste; its future (``None`` without ``overlap``: it has already run)."""
        if self._pool is None:
            self._timed(*args)
            return None
        future = self._pool.submit(self._timed, *args)
        self._pending.append(future)
        return future

    def _timed(self, *args) -> None:
        start = time.perf_counter()
        self._paste(*args)
        self.busy_seconds += time.perf_counter() - start  # one worker: no concurrent updates

    def finish(self) -> float:
        """Wait for every paste (re-raising the first failure); returns the seconds spent pasting."""
        try:
            for future in self._pending:
                future.result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
        return self.busy_seconds


def restore_batch_size(batch_size: int | None, device: torch.device | str) -> int:
    """``batch_size`` when set, else the default for ``device`` (see ``DEFAULT_BATCH_SIZE_*``)."""
    return batch_size_for(
        device, batch_size, DEFAULT_BATCH_SIZE_CUDA, DEFAULT_BATCH_SIZE_CPU, "restore.batch_size"
    )


def eye_distance(landmarks: np.ndarray) -> float:
    """Distance in pixels between the two eye landmarks of a ``(5, 2)`` set."""
    return float(np.hypot(*(np.asarray(landmarks[0], np.float64) - landmarks[1])))


def build_stage(
    cfg: RestoreConfig,
    restorer_path: str | Path,
    parsing_path: str | Path | None = None,
    bg_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    load: Callable[..., Any] = lambda loader, *args: loader(*args),
) -> FaceRestoreStage:
    """Load the models ``cfg`` asks for and build the stage (``cfg.restorer == "none"`` is not a stage).

    ``load(loader, path, device)`` runs each model loader; a caller that keeps models between renders
    passes one that returns the model it already has (``pipeline.model_cache.ModelCache.load``).

    ``parsing_path``: ``parsing_parsenet.pth`` or ``None`` (square soft mask, with a warning when
    ``cfg.parsing``); ``bg_path``: ``RealESRGAN_x2plus.pth`` or ``None`` (Lanczos background).
    ``precision`` is resolved per network (restorer, upsampler) against its architecture's flags.
    """
    if cfg.restorer == "none":
        raise ConfigError("restore.restorer is none: there is no restoration stage to build")
    restorer = load(load_restorer, restorer_path, device, precision, cfg.backend)
    if restorer.kind != cfg.restorer:
        raise WrongModelError(
            f"restore.restorer is {cfg.restorer} but {restorer_path} holds a {restorer.kind} model; "
            f"set restore.restorer to {restorer.kind} or point restore.checkpoint at a {cfg.restorer} file"
        )
    parser = None
    if cfg.parsing and parsing_path is not None:
        parser = load(load_parser, parsing_path, device)
    elif cfg.parsing:
        warnings.warn(
            "parsing_parsenet.pth not found: faces are blended with the square soft mask", stacklevel=2
        )
    upsampler = None
    if cfg.upscale > 1 and cfg.bg_upsampler == "realesrgan":
        if bg_path is None:
            warnings.warn(
                "RealESRGAN_x2plus.pth not found: the background is upscaled with Lanczos", stacklevel=2
            )
        else:
            upsampler = load(load_bg_upsampler, bg_path, device, precision)
    return FaceRestoreStage(restorer, cfg, parser, upsampler)
