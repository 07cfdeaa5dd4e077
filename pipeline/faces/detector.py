"""Face detection with facexlib's RetinaFace, and the face track of a whole video.

:func:`load_detector` builds facexlib's own ``RetinaFace`` module (ResNet-50 or MobileNet-0.25) and
loads the official ``detection_Resnet50_Final.pth`` / ``detection_mobilenet0.25_Final.pth`` strictly
(``detect.model = "s3fd"`` loads the official preprocessing's S3FD instead, :mod:`pipeline.faces.s3fd`).
:class:`FaceDetector` runs it in batches on copies of the frames downscaled to at most
``detect_max_side`` pixels and maps boxes and the five landmarks back to full-resolution pixels; the
anchors, decoding, score threshold and NMS are facexlib's. :func:`track_faces` runs the detector over a
video's frame batches and returns one chosen, smoothed, padded box per frame (the pure rules
are in :mod:`pipeline.faces.tracking`).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np
import torch
from tqdm import tqdm

from pipeline.core.adaptive_batch import AdaptiveBatch
from pipeline.core.checkpoints import load_state_dict
from pipeline.core.devices import precision_autocast, resolve_precision, upload
from pipeline.core.errors import ConfigError, EngineUnavailableError, InputError, NoFaceError, WrongModelError
from pipeline.core.types import FaceBox
from pipeline.faces.config import DetectConfig
from pipeline.faces.tracking import FaceTrack, choose_faces, fixed_box_track, pad_boxes, smooth_boxes

if TYPE_CHECKING:
    from pipeline.faces.s3fd import S3FDDetector

__all__ = [
    "DETECTOR_MODELS",
    "FaceDetector",
    "check_detector_state_dict",
    "check_frames",
    "decode_detections",
    "detect_faces",
    "detection_size",
    "detections_to_faces",
    "downscale_frames",
    "load_detector",
    "track_faces",
]

RETINAFACE_MEAN_BGR = (104.0, 117.0, 123.0)  # 0-255 pixel values subtracted per channel, B, G, R order
NMS_IOU_THRESHOLD = 0.4  # IoU above which the lower-scored of two boxes is dropped (facexlib default)
NETWORK_NAMES = {"retinaface_resnet50": "resnet50", "retinaface_mobile0.25": "mobile0.25"}
DETECTOR_MODELS = (*NETWORK_NAMES, "s3fd")  # every detect.model; S3FD lives in pipeline.faces.s3fd
N_LANDMARKS = 5  # eyes, nose tip, mouth corners
DETECTION_COLUMNS = 15  # x1, y1, x2, y2, score, then 5 landmarks as x, y pairs


class Detector(Protocol):
    def detect(self, frames: np.ndarray) -> list[list[FaceBox]]: ...


class FaceDetector:
    """RetinaFace in eval mode, run in batches on downscaled frames.

    ``network`` follows facexlib's test-phase contract: ``(N, 3, h, w)`` float32 BGR minus
    ``RETINAFACE_MEAN_BGR`` -> ``(loc (N, P, 4), softmax scores (N, P, 2), landmarks (N, P, 10))``;
    ``anchor_cfg`` is facexlib's config dict of that network (``min_sizes``, ``steps``, ``variance``,
    ``clip``).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        anchor_cfg: dict[str, Any],
        config: DetectConfig,
        device: Any,
        precision: str = "fp32",
    ) -> None:
        self.network = network
        self.anchor_cfg = anchor_cfg
        self.config = config
        self.device = torch.device(device)
        self.precision = precision  # "fp32" | "bf16" | "fp16", already resolved
        self._priors: dict[tuple[int, int], torch.Tensor] = {}
        # Frames per forward; halved (and kept smaller) when the GPU runs out of memory.
        self.batches = AdaptiveBatch(max(1, int(config.batch_size)), "face detection")

    def detect(self, frames: np.ndarray) -> list[list[FaceBox]]:
        """Faces of each frame of ``(N, H, W, 3) uint8`` BGR ``frames``, best score first.

        Boxes are integer full-resolution pixels clipped to the frame; landmarks ``(5, 2)`` float32
        full-resolution pixels (not clipped); scores in (score_threshold, 1].
        """
        frame_size = (int(frames.shape[1]), int(frames.shape[2]))
        return [detections_to_faces(rows, frame_size) for rows in self.detect_raw(frames)]

    def detect_raw(self, frames: np.ndarray) -> list[np.ndarray]:
        """Per frame a ``(k, 15)`` float32 array in facexlib's ``detect_faces`` layout.

        Columns: x1, y1, x2, y2, score, then landmark x, y pairs, all in full-resolution pixels (not
        clipped), rows by descending score after the score threshold and NMS.
        """
        check_frames(frames)
        parts = self.batches.map(len(frames), lambda start, stop: self._detect_batch(frames[start:stop]))
        return [rows for part in parts for rows in part]

    def _detect_batch(self, frames: np.ndarray) -> list[np.ndarray]:
        small = downscale_frames(frames, self.config.detect_max_side)
        loc, scores, landmarks = self._forward(small)
        priors = self._priors_for((small.shape[1], small.shape[2]))
        frame_size = (int(frames.shape[1]), int(frames.shape[2]))
        variance = tuple(self.anchor_cfg["variance"])
        return decode_detections(
            loc, scores, landmarks, priors, variance, frame_size, self.config.score_threshold
        )

    def _forward(self, small: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean = torch.tensor(RETINAFACE_MEAN_BGR, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        inputs = upload(small, self.device)  # uint8; converted on the device
        inputs = inputs.permute(0, 3, 1, 2).float() - mean
        with torch.inference_mode(), precision_autocast(self.device, self.precision):
            loc, scores, landmarks = self.network(inputs)
        return loc.float(), scores.float(), landmarks.float()

    def _priors_for(self, size: tuple[int, int]) -> torch.Tensor:
        if size not in self._priors:
            self._priors[size] = retinaface_priors(self.anchor_cfg, size).to(self.device)
        return self._priors[size]


def load_detector(
    config: DetectConfig, checkpoint_path: str | Path, device: Any, precision: str = "fp32"
) -> FaceDetector | S3FDDetector:
    """Build ``config.model``'s detector (RetinaFace, or S3FD: :func:`pipeline.faces.s3fd.load_s3fd`),
    load ``checkpoint_path`` strictly, move it to ``device``.

    ``precision``: "auto" / "fp32" / "bf16" / "fp16" (:func:`~pipeline.core.devices.resolve_precision`).

    The official files are bare state dicts whose keys may carry ``module.``. Raises
    MissingWeightsError / WeightsError for unreadable files, WrongModelError for a checkpoint of
    another network, ConfigError for an unknown model name, EngineUnavailableError without facexlib.
    """
    if config.model == "s3fd":
        from pipeline.faces.s3fd import load_s3fd

        return load_s3fd(config, checkpoint_path, device, precision)
    network_name = NETWORK_NAMES.get(config.model)
    if network_name is None:
        raise ConfigError(f"detect.model must be one of {', '.join(DETECTOR_MODELS)}, got {config.model!r}")
    network = build_retinaface(network_name)
    state = load_state_dict(checkpoint_path, what=f"RetinaFace {network_name} face detector")
    check_detector_state_dict(network, state, checkpoint_path, config.model)
    network.load_state_dict(state, strict=True)
    network.to(device).eval()
    chosen = resolve_precision(precision, device)
    return FaceDetector(network, dict(network.cfg), config, device, chosen)


def build_retinaface(network_name: str) -> torch.nn.Module:
    """facexlib's ``RetinaFace(network_name)`` on the CPU, random weights, nothing downloaded."""
    retinaface = _facexlib_module("facexlib.detection.retinaface")
    with warnings.catch_warnings():
        # facexlib passes the deprecated `pretrained=False` to torchvision's resnet50 (no weights fetched)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.models\._utils")
        network = retinaface.RetinaFace(network_name=network_name, half=False, phase="test", device="cpu")
    return network.eval()


def retinaface_priors(anchor_cfg: dict[str, Any], size: tuple[int, int]) -> torch.Tensor:
    """facexlib's anchors for a ``(height, width)`` input: ``(P, 4)`` float32 cx, cy, w, h in [0, 1]."""
    utils = _facexlib_module("facexlib.detection.retinaface_utils")
    return utils.PriorBox(anchor_cfg, image_size=size).forward()


def decode_detections(
    loc: torch.Tensor,
    scores: torch.Tensor,
    landmarks: torch.Tensor,
    priors: torch.Tensor,
    variance: tuple[float, float],
    frame_size: tuple[int, int],
    score_threshold: float,
    nms_iou: float = NMS_IOU_THRESHOLD,
) -> list[np.ndarray]:
    """facexlib's decoding, threshold (score > threshold) and NMS, in full-resolution pixels.

    ``loc (N, P, 4)``, ``scores (N, P, 2)`` softmax, ``landmarks (N, P, 10)``, ``priors (P, 4)``.
    Decoded coordinates are fractions of the detection input, so multiplying by the full
    ``frame_size = (height, width)`` maps them back from any downscaled copy. Returns per frame a
    ``(k, 15)`` float32 array (x1, y1, x2, y2, score, 5 x/y landmark pairs) by descending score.

    The whole batch is decoded where the tensors are, suppressed by one ``batched_nms`` with the frame
    as the group (boxes of different frames never suppress each other), and copied to the CPU once.
    """
    rows = _batch_detections(loc, scores, landmarks, priors, variance, frame_size, score_threshold, nms_iou)
    return _split_by_frame(rows.cpu().numpy(), len(loc))


def _batch_detections(
    loc: torch.Tensor,
    scores: torch.Tensor,
    landmarks: torch.Tensor,
    priors: torch.Tensor,
    variance: tuple[float, float],
    frame_size: tuple[int, int],
    score_threshold: float,
    nms_iou: float,
) -> torch.Tensor:
    """``(k, 16)`` float32 on the input's device: frame index, then the 15 detection columns, rows
    grouped by frame in frame order and by descending score within a frame."""
    utils = _facexlib_module("facexlib.detection.retinaface_utils")
    height, width = frame_size
    scale = torch.tensor([width, height], dtype=torch.float32, device=loc.device)
    batch_priors = priors.unsqueeze(0)
    boxes = utils.batched_decode(loc, batch_priors, list(variance)) * scale.repeat(2)
    points = utils.batched_decode_landm(landmarks, batch_priors, list(variance)) * scale.repeat(N_LANDMARKS)
    face_scores = scores[:, :, 1]
    frame_ids, prior_ids = torch.nonzero(face_scores > score_threshold, as_tuple=True)
    boxes, points = boxes[frame_ids, prior_ids], points[frame_ids, prior_ids]
    face_scores = face_scores[frame_ids, prior_ids]
    order = _batched_nms(boxes, face_scores, frame_ids, nms_iou)  # by descending score over the batch
    order = order[torch.sort(frame_ids[order], stable=True).indices]  # frames in order, scores kept
    columns = [frame_ids.unsqueeze(1).float(), boxes, face_scores.unsqueeze(1), points]
    return torch.cat(columns, dim=1)[order]


def _split_by_frame(rows: np.ndarray, n_frames: int) -> list[np.ndarray]:
    """:func:`_batch_detections`' rows -> per frame a ``(k, 15)`` float32 array (k may be 0)."""
    counts = np.bincount(rows[:, 0].astype(np.int64), minlength=n_frames)
    detections = np.ascontiguousarray(rows[:, 1:], dtype=np.float32).reshape(-1, DETECTION_COLUMNS)
    return np.split(detections, np.cumsum(counts)[:-1])


def detections_to_faces(rows: np.ndarray, frame_size: tuple[int, int]) -> list[FaceBox]:
    """``(k, 15)`` detections -> FaceBoxes with rounded box edges clipped to the ``(height, width)``
    frame (boxes left empty by clipping, and rows with non-finite numbers, are dropped) and ``(5, 2)``
    float32 landmarks."""
    height, width = frame_size
    rows = np.asarray(rows, np.float32).reshape(-1, DETECTION_COLUMNS)
    rows = rows[np.isfinite(rows).all(axis=1)]
    # Round and clip all edges at once (a detector with a low threshold can report thousands of rows).
    edges = np.rint(rows[:, :4].astype(np.float64))
    left, right = (np.clip(edges[:, i], 0, width).astype(int) for i in (0, 2))
    top, bottom = (np.clip(edges[:, i], 0, height).astype(int) for i in (1, 3))
    keep = np.flatnonzero((bottom > top) & (right > left))
    points = rows[:, 5:DETECTION_COLUMNS].reshape(-1, N_LANDMARKS, 2)
    return [
        FaceBox(
            int(top[i]),
            int(bottom[i]),
            int(left[i]),
            int(right[i]),
            landmarks=points[i].copy(),
            score=float(rows[i, 4]),
        )
        for i in keep
    ]


def detection_size(frame_size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``(height, width)`` of the detection copy: longer side at most ``max_side``, aspect kept."""
    height, width = frame_size
    scale = max_side / float(max(height, width))
    if scale >= 1.0:
        return height, width
    return max(1, round(height * scale)), max(1, round(width * scale))


def downscale_frames(frames: np.ndarray, max_side: int) -> np.ndarray:
    """``(N, H, W, 3) uint8`` -> ``(N, h, w, 3) uint8`` per :func:`detection_size` (area filter);
    the input itself when it is small enough already."""
    height, width = int(frames.shape[1]), int(frames.shape[2])
    small_h, small_w = detection_size((height, width), max_side)
    if (small_h, small_w) == (height, width):
        return frames
    return np.stack([cv2.resize(f, (small_w, small_h), interpolation=cv2.INTER_AREA) for f in frames])


def track_faces(
    frame_batches: Iterable[np.ndarray],
    detector: Detector | None,
    cfg: DetectConfig,
    frame_size: tuple[int, int],
    progress: bool = True,
    total_frames: int | None = None,
) -> FaceTrack:
    """Detect in every frame, then choose -> smooth -> pad; one entry per frame of the video.

    ``frame_batches`` yields ``(n, H, W, 3) uint8`` BGR arrays with ``frame_size = (H, W)``;
    ``total_frames`` only sizes the progress bar. With ``cfg.box`` set no detection runs (``detector``
    may be None; a caller that knows the frame count can call :func:`fixed_box_track` directly).
    Raises NoFaceError when no frame has a usable face; warns when some frames have none.
    """
    if cfg.box is not None:
        n_frames = sum(len(batch) for batch in frame_batches)
        return _finish(fixed_box_track(cfg.box, n_frames, frame_size), cfg)
    if detector is None:
        raise ValueError("track_faces needs a detector unless cfg.box is set")
    per_frame = detect_faces(frame_batches, detector, frame_size, progress, total_frames)
    if not any(per_frame):
        raise NoFaceError(_no_face_message(len(per_frame), cfg))
    chosen = choose_faces(per_frame, cfg.face, frame_size)
    window = 1 if cfg.nosmooth else cfg.smooth_window
    return _finish(pad_boxes(smooth_boxes(chosen, window), cfg.pads, frame_size), cfg)


def detect_faces(
    frame_batches: Iterable[np.ndarray],
    detector: Detector | None,
    frame_size: tuple[int, int],
    progress: bool = True,
    total_frames: int | None = None,
) -> list[list[FaceBox]]:
    """All faces of every frame of ``frame_batches`` (``(n, H, W, 3) uint8`` BGR, ``frame_size = (H,
    W)``), best score first; raises InputError for a frame of another size or no frames at all."""
    if detector is None:
        raise ValueError("detect_faces needs a detector")
    per_frame: list[list[FaceBox]] = []
    with tqdm(total=total_frames, desc="Detecting faces", unit="frame", disable=not progress) as bar:
        for batch in frame_batches:
            if tuple(batch.shape[1:3]) != tuple(frame_size):
                raise InputError(
                    f"frame {len(per_frame)} is {batch.shape[2]}x{batch.shape[1]} but the video is "
                    f"{frame_size[1]}x{frame_size[0]}; re-encode it to one frame size"
                )
            per_frame.extend(detector.detect(batch))
            bar.update(len(batch))
    if not per_frame:
        raise InputError("the face video has no frames to detect faces in")
    return per_frame


def _finish(track: list[FaceBox | None], cfg: DetectConfig) -> FaceTrack:
    missing = sum(face is None for face in track)
    if track and missing == len(track):
        raise NoFaceError(_no_face_message(len(track), cfg))
    if missing:
        warnings.warn(
            f"{missing} of {len(track)} frames have no usable face (detect.face={cfg.face!r}); "
            "they are passed through without lip-sync",
            stacklevel=3,
        )
    return FaceTrack(faces=tuple(track), frames_without_face=missing)


def _no_face_message(n_frames: int, cfg: DetectConfig) -> str:
    return (
        f"no face found in any of the {n_frames} frames (detector {cfg.model}, score threshold "
        f"{cfg.score_threshold}, face choice {cfg.face!r}); use a well-lit, frontal face video, pick "
        "another face with --face, lower detect.score_threshold, or give the face box with --box"
    )


def check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[3] != 3:
        shape = getattr(frames, "shape", None)
        raise InputError(f"frames must be an (N, H, W, 3) BGR array, got shape {shape}")
    if frames.dtype != np.uint8:
        raise InputError(f"frames must be uint8, got {frames.dtype}")


def check_detector_state_dict(
    network: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, model: str
) -> None:
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    problems = [
        f"{label} {names[0]!r} (+{len(names) - 1} more)"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
        if names
    ]
    if problems:
        others = ", ".join(name for name in DETECTOR_MODELS if name != model)
        raise WrongModelError(
            f"{path} is not a {model} checkpoint ({'; '.join(problems)}); give the matching file or set "
            f"detect.model to the detector it belongs to ({others})"
        )


def _batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou: float) -> torch.Tensor:
    # torchvision is imported here, not at the top: it costs ~170 MB and seconds, and a run with a
    # fixed --box never detects.
    import torchvision

    return torchvision.ops.batched_nms(boxes, scores, groups, iou)


def _facexlib_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise EngineUnavailableError(
            f"face detection needs facexlib ({exc}); install it with: pip install --no-deps facexlib==0.3.0"
        ) from exc
