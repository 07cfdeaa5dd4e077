"""Wav2Lip on video frames: crop each face, generate its mouth for the frame's mel window, paste it back.

The steps follow the official ``inference.py``: the face box (already padded by the tracker) is cut
from the BGR frame and resized to 96x96 with OpenCV's default bilinear filter; the generator sees the
crop with its lower half zeroed plus the crop itself; its output is scaled to uint8, resized back to the
box with the same filter and written into the frame. ``paste="hard"`` writes the whole box like the
official code; ``paste="feather"`` blends with a mask that is 1 over the lower face and ramps to 0 over
``feather_px`` (96-pixel units) toward the box sides, the bottom edge and above the mouth line, so no
box edge shows. Pixels outside the box are never touched.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from pipeline.core.adaptive_batch import AdaptiveBatch
from pipeline.core.devices import (
    batch_size_for,
    precision_autocast,
    resolve_precision,
    to_channels_last,
    upload,
)
from pipeline.core.errors import AudioError, ConfigError, NoFaceError
from pipeline.core.finite import NonFiniteFrames, nonfinite_items
from pipeline.core.types import FaceBox, FrameBatch
from wav2lip.audio import MEL_STEP_SIZE, N_MELS
from wav2lip.config import Wav2LipConfig
from wav2lip.face_input import (
    MASK_START_ROW,
    WAV2LIP_FACE_SIZE,
    face_input_tensor,
    postprocess_faces,
    prepare_face_inputs,
)
from wav2lip.models.fusion import weight_dtype

__all__ = [
    "LipSyncer",
    "crop_face",
    "feather_mask",
    "forward_generator",
    "lipsync_frames",
    "paste_generated_face",
    "postprocess_faces",
    "prepare_face_inputs",
    "prepare_mel_inputs",
    "resolve_batch_size",
]

DEFAULT_BATCH_SIZE_CUDA = 128  # faces per generator forward on a GPU (the official default)
DEFAULT_BATCH_SIZE_CPU = 16  # faces per generator forward on the CPU
PASTE_MODES = ("feather", "hard")


def resolve_batch_size(batch_size: int | None, device: str | torch.device) -> int:
    """``batch_size`` when given, else 128 on CUDA and 16 elsewhere."""
    return batch_size_for(
        device, batch_size, DEFAULT_BATCH_SIZE_CUDA, DEFAULT_BATCH_SIZE_CPU, "wav2lip.batch_size"
    )


def clip_box(box: FaceBox, frame_shape: tuple[int, ...], frame_index: int = 0) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of ``box`` clipped to the frame; raises if nothing is left."""
    height, width = frame_shape[:2]
    top, bottom = max(0, int(box.top)), min(height, int(box.bottom))
    left, right = max(0, int(box.left)), min(width, int(box.right))
    if bottom <= top or right <= left:
        raise NoFaceError(
            f"face box {box.as_tuple()} of frame {frame_index} is empty inside the {width}x{height} frame",
            frame_index=frame_index,
        )
    return top, bottom, left, right


def crop_face(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``frame (H, W, 3) uint8`` cut to ``box (top, bottom, left, right)`` -> ``(96, 96, 3) uint8``.

    Resized with ``cv2.resize``'s default bilinear filter, as the official inference does.
    """
    top, bottom, left, right = box
    return cv2.resize(frame[top:bottom, left:right], (WAV2LIP_FACE_SIZE, WAV2LIP_FACE_SIZE))


def prepare_mel_inputs(mels: np.ndarray) -> np.ndarray:
    """``(N, 80, 16)`` mel windows in [-4, 4] -> ``(N, 1, 80, 16) float32`` generator audio input."""
    mels = np.asarray(mels, dtype=np.float32)
    if mels.ndim != 3 or mels.shape[1:] != (N_MELS, MEL_STEP_SIZE):
        raise AudioError(f"mel windows must be (N, {N_MELS}, {MEL_STEP_SIZE}), got {mels.shape}")
    if not np.isfinite(mels).all():
        raise AudioError("mel windows contain NaN or infinite values; recompute them from finite audio")
    return mels[:, None]


def forward_generator(
    model: nn.Module,
    face_inputs: np.ndarray,
    mel_inputs: np.ndarray,
    batch_size: int | AdaptiveBatch,
    device: str | torch.device,
    precision: str = "fp32",
) -> np.ndarray:
    """Run ``model`` (eval mode) over faces and ``(N, 1, 80, 16)`` mels in batches.

    ``face_inputs``: ``(N, 96, 96, 3) uint8`` BGR crops, made into the generator's input per batch by
    :func:`~wav2lip.face_input.face_input_tensor` (on CUDA: uploaded as uint8, pinned, and converted on
    the GPU), or an already prepared ``(N, 6, 96, 96) float32`` input.

    Returns ``(N, 3, 96, 96) float32`` BGR in [0, 1]. The forward runs under ``precision``'s autocast
    ("fp32", "bf16" or "fp16", already resolved).
    The faces go in channels-last, the layout oneDNN and cuDNN convolve fastest (same values).
    Each face is computed independently, so the result does not depend on ``batch_size``. Out of GPU
    memory, the batch is halved and retried (an :class:`AdaptiveBatch` passed in keeps the smaller size).
    """
    device = torch.device(device)
    batches = batch_size if isinstance(batch_size, AdaptiveBatch) else AdaptiveBatch(batch_size, "lip-sync")

    # A model stored in a lower precision (bfloat16 on the CPU) takes its inputs in that dtype, no autocast.
    dtype = weight_dtype(model)
    autocast = precision if dtype == torch.float32 else "fp32"

    def run(start: int, stop: int) -> np.ndarray:
        faces = (
            _face_batch(face_inputs[start:stop], device)
            .to(dtype)
            .contiguous(memory_format=torch.channels_last)
        )
        mels = upload(mel_inputs[start:stop], device).to(dtype)
        with torch.inference_mode(), precision_autocast(device, autocast):
            pred = model(mels, faces)
        return pred.float().cpu().numpy()

    outputs = batches.map(len(face_inputs), run)
    if not outputs:
        return np.zeros((0, 3, WAV2LIP_FACE_SIZE, WAV2LIP_FACE_SIZE), np.float32)
    return np.concatenate(outputs)


def _face_batch(face_inputs: np.ndarray, device: torch.device) -> torch.Tensor:
    if face_inputs.dtype == np.uint8:
        return face_input_tensor(face_inputs, device)
    return upload(face_inputs, device)


def feather_mask(height: int, width: int, feather_px: float) -> np.ndarray:
    """Blend weights ``(height, width) float32`` in [0, 1] for a generated face pasted into a box.

    Measured in 96x96 face units at each pixel centre: 1 from the mouth line (row 48) down, ramping
    linearly to 0 over ``feather_px`` toward the left, right and bottom box edges and upward to row
    ``48 - feather_px``. ``feather_px == 0`` gives a hard lower-half mask.
    """
    if feather_px < 0:
        raise ConfigError(f"wav2lip.feather_px must be >= 0, got {feather_px}")
    rows = (np.arange(height, dtype=np.float64) + 0.5) * (WAV2LIP_FACE_SIZE / height)
    cols = (np.arange(width, dtype=np.float64) + 0.5) * (WAV2LIP_FACE_SIZE / width)
    if feather_px == 0:
        return np.repeat((rows >= MASK_START_ROW)[:, None], width, axis=1).astype(np.float32)
    top = np.clip((rows - (MASK_START_ROW - feather_px)) / feather_px, 0.0, 1.0)
    bottom = np.clip((WAV2LIP_FACE_SIZE - rows) / feather_px, 0.0, 1.0)
    sides = np.clip(np.minimum(cols, WAV2LIP_FACE_SIZE - cols) / feather_px, 0.0, 1.0)
    return np.minimum(np.minimum(top, bottom)[:, None], sides[None, :]).astype(np.float32)


def paste_generated_face(
    frame: np.ndarray,
    face: np.ndarray,
    box: tuple[int, int, int, int],
    paste: str,
    feather_px: float,
    strength: float = 1.0,
) -> None:
    """Write generated ``face (96, 96, 3) uint8`` into ``frame`` at ``box`` in place.

    The face is resized to the box with ``cv2.resize``'s default bilinear filter. ``"hard"`` replaces
    the box; ``"feather"`` blends with :func:`feather_mask` and rounds to uint8. ``strength`` in [0, 1]
    scales the blend (the cross-fade into a held silence). Only pixels inside the box can change.
    """
    top, bottom, left, right = box
    resized = cv2.resize(face, (right - left, bottom - top))
    if paste == "hard" and strength >= 1:
        frame[top:bottom, left:right] = resized
        return
    if paste not in PASTE_MODES:
        raise ConfigError(f"wav2lip.paste must be one of {', '.join(PASTE_MODES)}, got {paste!r}")
    first_row, weight = _paste_weights(bottom - top, right - left, paste, feather_px)
    if strength < 1:
        weight = weight * np.float32(strength)
    blend_into(frame[top + first_row : bottom, left:right], resized[first_row:], weight)


def blend_into(region: np.ndarray, source: np.ndarray, weight: np.ndarray) -> None:
    """``region <- rint(region + (source - region) * weight)`` in place, for uint8 images.

    ``region`` and ``source``: ``(h, w, 3) uint8``; ``weight (h, w, 1) float32`` in [0, 1]. One float32
    buffer, no other temporaries (a blend costs no more than a few passes over the region).
    """
    mixed = source.astype(np.float32)
    np.subtract(mixed, region, out=mixed)
    np.multiply(mixed, weight, out=mixed)
    np.add(mixed, region, out=mixed)  # a convex combination of two uint8 values: stays in [0, 255]
    np.rint(mixed, out=mixed)
    region[...] = mixed


@functools.lru_cache(maxsize=32)
def _paste_weights(height: int, width: int, paste: str, feather_px: float) -> tuple[int, np.ndarray]:
    """``(first_row, weight (height - first_row, width, 1) float32)``: the blend weights of a box (all
    ones for ``"hard"``, else :func:`feather_mask`) without their leading rows of zero weight (those
    pixels keep the frame's values). Cached: a tracked face keeps its box size for many frames, and the
    weights depend on nothing else. Read-only."""
    if paste == "hard":
        mask = np.ones((height, width), np.float32)
    else:
        mask = feather_mask(height, width, feather_px)
    rows = np.flatnonzero(mask.any(axis=1))
    first_row = int(rows[0]) if len(rows) else height
    weight = np.ascontiguousarray(mask[first_row:, :, None])
    weight.flags.writeable = False
    return first_row, weight


def lipsync_frames(
    model: nn.Module,
    frames: np.ndarray,
    boxes: Sequence[FaceBox | None],
    mels: np.ndarray,
    batch_size: int | AdaptiveBatch,
    device: str | torch.device,
    paste: str = "feather",
    feather_px: float = 6,
    *,
    first_index: int = 0,
    nonfinite: NonFiniteFrames | None = None,
    precision: str = "fp32",
    mouth_weight: np.ndarray | None = None,
    in_place: bool = False,
) -> np.ndarray:
    """Lip-sync each frame's face to its mel window; frames without a face pass through unchanged.

    ``frames (N, H, W, 3) uint8`` BGR, ``boxes[i]`` the padded face box of frame i or ``None``,
    ``mels (N, 80, 16) float32``. Returns new ``(N, H, W, 3) uint8`` frames and leaves the input as it was,
    or with ``in_place`` writes into ``frames`` and returns them (no copy of the batch).
    ``first_index`` (the video index of ``frames[0]``) labels errors and warnings. A face the generator
    returns NaN or infinity for is not pasted (that frame keeps its input face); ``nonfinite`` (one per
    stage, so it warns once) collects those frame numbers.
    ``precision`` is the generator's resolved compute precision (see :func:`forward_generator`).
    ``mouth_weight (N,)`` in [0, 1] scales the paste per frame (0: the frame is left as it is and its
    face not generated).
    """
    # 1. Check inputs
    if not (len(frames) == len(boxes) == len(mels)):
        raise ValueError(f"got {len(frames)} frames, {len(boxes)} boxes and {len(mels)} mel windows")
    if paste not in PASTE_MODES:
        raise ConfigError(f"wav2lip.paste must be one of {', '.join(PASTE_MODES)}, got {paste!r}")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (N, H, W, 3) uint8 BGR, got {frames.shape} {frames.dtype}")
    output = frames if in_place else frames.copy()
    weights = np.ones(len(frames), np.float32) if mouth_weight is None else np.asarray(mouth_weight)
    with_face = [i for i, box in enumerate(boxes) if box is not None and weights[i] > 0]
    if not with_face:
        return output
    # 2. Crop and prepare
    clipped = {i: clip_box(boxes[i], frames[i].shape, first_index + i) for i in with_face}
    crops = np.stack([crop_face(frames[i], clipped[i]) for i in with_face])
    mel_inputs = prepare_mel_inputs(np.asarray(mels)[with_face])
    # 3. Generate
    pred = forward_generator(model, crops, mel_inputs, batch_size, device, precision)
    # 4. Paste back, except where the generator returned NaN or infinity (the frame keeps its face)
    replaced = nonfinite_items(pred)
    (nonfinite or NonFiniteFrames("lip-sync")).report(first_index + np.asarray(with_face)[replaced])
    for face, i, skip in zip(postprocess_faces(pred), with_face, replaced):
        if not skip:
            paste_generated_face(output[i], face, clipped[i], paste, feather_px, float(weights[i]))
    return output


class LipSyncer:
    """The lip-sync stage: ``FrameBatch`` in, ``FrameBatch`` with generated mouths out.

    ``model`` is a loaded :class:`~wav2lip.models.Wav2Lip` (put into eval mode here; the pipeline gives
    it the inference form of :func:`wav2lip.loading.load_generator_for_inference`), ``cfg`` the
    ``wav2lip`` config section, ``device`` where the model lives, ``precision`` "auto" / "fp32" / "bf16" /
    "fp16" (resolved here for the device; :attr:`precision` says what runs).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: Wav2LipConfig,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        *,
        in_place: bool = False,
    ) -> None:
        if cfg.paste not in PASTE_MODES:
            raise ConfigError(f"wav2lip.paste must be one of {', '.join(PASTE_MODES)}, got {cfg.paste!r}")
        if cfg.feather_px < 0:
            raise ConfigError(f"wav2lip.feather_px must be >= 0, got {cfg.feather_px}")
        # Channels-last: oneDNN runs the 10 s 720p lip-sync about 20 % faster in it on 2 CPU cores (same
        # values to float rounding); cuDNN prefers it in float16.
        self.model = to_channels_last(model.eval())
        self.cfg = cfg
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.batches = AdaptiveBatch(resolve_batch_size(cfg.batch_size, self.device), "lip-sync")
        self.nonfinite = NonFiniteFrames("lip-sync")
        self.in_place = in_place  # paste into the batch's own frames (a render owns its decoded frames)

    @property
    def batch_size(self) -> int:
        """Faces per generator forward now (halved from the configured size after out-of-memory errors)."""
        return self.batches.size

    def process(self, batch: FrameBatch) -> FrameBatch:
        """Lip-sync one batch (see :func:`lipsync_frames`); returns a new batch, same faces and mel (its
        frames are the given batch's own, changed, when the stage was made ``in_place``)."""
        frames = lipsync_frames(
            self.model,
            batch.frames,
            batch.faces,
            batch.mel,
            self.batches,
            self.device,
            self.cfg.paste,
            self.cfg.feather_px,
            first_index=batch.start_index,
            nonfinite=self.nonfinite,
            precision=self.precision,
            mouth_weight=batch.mouth_weight,
            in_place=self.in_place,
        )
        return batch.with_frames(frames)

    def __call__(self, batches: Iterable[FrameBatch]) -> Iterator[FrameBatch]:
        """Process a stream of batches lazily."""
        for batch in batches:
            yield self.process(batch)
