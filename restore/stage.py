"""The face-restoration stage of the pipeline: align, restore, paste back, for a batch of frames.

For every frame whose face has landmarks (already smoothed over time by the pipeline:
:func:`pipeline.faces.landmarks.smooth_landmarks`), the face is aligned to the FFHQ template, restored
together with the other faces of the batch (``cfg.batch_size`` per forward pass: by default 1 on CPU, 8
on CUDA),
warped back and blended into the frame (upscaled ``cfg.upscale`` times, by Real-ESRGAN when given, else
Lanczos). Frames without a face, or whose face has no landmarks or eyes closer than 5 pixels (as the
official tools skip them), are only upscaled. There is no second face detection.

Flicker: three things keep restored video steady. Landmark smoothing steadies the crop; GFPGAN uses the
checkpoint's fixed noise maps instead of fresh random noise per frame; and CodeFormer's ``fidelity``
(``w``) trades sharpness for faithfulness: about 1.0 is what its authors suggest for video, lower values
are sharper but less faithful to the input face and flicker more.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
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
from restore.parsing import FaceParser, load_parser
from restore.restorers import FaceRestorer, load_restorer
from restore.upsample import BackgroundUpsampler, load_bg_upsampler

UPSCALE_FACTORS = (1, 2, 4)  # output sizes the stage supports, times the input size
# Faces per forward pass when restore.batch_size is unset. On 2 CPU cores a batch of 4 is no faster than
# one face at a time (GFPGAN 1.64 vs 1.41 s per face) and nearly doubles peak memory (4.1 vs 2.2 GB).
DEFAULT_BATCH_SIZE_CPU = 1
DEFAULT_BATCH_SIZE_CUDA = 8
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

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """Output frame ``(width, height)`` in pixels for an input of ``width`` x ``height``."""
        return width * self.cfg.upscale, height * self.cfg.upscale

    def process(self, batch: FrameBatch, times: StageClock | None = None) -> FrameBatch:
        """Restore the faces of ``batch`` (frames ``(N, H, W, 3) uint8`` BGR) -> frames
        ``(N, H * upscale, W * upscale, 3) uint8`` BGR, same faces, mel and start index.

        ``times``, when given, gets the seconds of "restore" (align, network, parsing) and "paste"
        (upscaling the frames and blending the faces back)."""
        start = time.perf_counter()
        # 1. Align every face that has landmarks.
        indices, crops, affines = self._align(batch)
        # 2. Restore (and parse) the crops, cfg.batch_size at a time.
        restored, masks = self._restore(crops)
        restored_at = time.perf_counter()
        # 3. Upscale the frames, then blend each restored face back.
        frames = self._upscale(batch.frames)
        for index, face, affine, mask in zip(indices, restored, affines, masks):
            inverse = inverse_affine(affine, self.cfg.upscale)
            paste_restored_face_into(frames[index], face, inverse, self.cfg.upscale, mask)
        if times is not None:
            times.add("restore", restored_at - start)
            times.add("paste", time.perf_counter() - restored_at)
        return batch.with_frames(frames)

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

    def _restore(self, crops: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """Restored faces and their blend masks (``None``: square mask), ``self.batches.size`` faces per
        forward pass (halved and retried when the GPU runs out of memory)."""
        restored: list[np.ndarray] = []
        masks: list[np.ndarray | None] = []
        for faces, face_masks in self.batches.map(len(crops), lambda a, b: self._restore_batch(crops[a:b])):
            restored.extend(faces)
            masks.extend(face_masks)
        return restored, masks

    def _restore_batch(self, crops: np.ndarray) -> tuple[np.ndarray, list[np.ndarray | None]]:
        faces = self.restorer.restore_aligned(crops, self.cfg.fidelity)
        if self.parser is None:
            return faces, [None] * len(faces)
        size = self.restorer.face_size
        return faces, [parsing_face_mask(labels, size) for labels in self.parser.parse(faces)]

    def _upscale(self, frames: np.ndarray) -> np.ndarray:
        factor = self.cfg.upscale
        if factor == 1:
            return frames.copy()
        if self.bg_upsampler is not None:
            return self.bg_upsampler.upsample(frames, factor)
        height, width = frames.shape[1:3]
        size = (width * factor, height * factor)
        return np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_LANCZOS4) for frame in frames])


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
    load: Callable[..., Any] = lambda loader, *args: loader(*args),
) -> FaceRestoreStage:
    """Load the models ``cfg`` asks for and build the stage (``cfg.restorer == "none"`` is not a stage).

    ``load(loader, path, device)`` runs each model loader; a caller that keeps models between renders
    passes one that returns the model it already has (``pipeline.model_cache.ModelCache.load``).

    ``parsing_path``: ``parsing_parsenet.pth`` or ``None`` (square soft mask, with a warning when
    ``cfg.parsing``); ``bg_path``: ``RealESRGAN_x2plus.pth`` or ``None`` (Lanczos background).
    """
    if cfg.restorer == "none":
        raise ConfigError("restore.restorer is none: there is no restoration stage to build")
    restorer = load(load_restorer, restorer_path, device)
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
            upsampler = load(load_bg_upsampler, bg_path, device)
    return FaceRestoreStage(restorer, cfg, parser, upsampler)
