"""S3FD's pre- and post-processing as pure NumPy functions (no network, no torch).

The rules are those of face-alignment's ``sfd`` detector as the official Wav2Lip preprocessing runs it
(``face_detection/detection/sfd``, ``face_detection/api.py``):

1. input: the frame's channels minus ``S3FD_MEAN`` (0-255 scale, no scaling to [0, 1]); the official
   batch path hands the network cv2's BGR frames flipped to RGB (:data:`OFFICIAL_CHANNEL_ORDER`);
2. six heads; head ``i`` has anchors every ``S3FD_STRIDES[i]`` pixels, centred at
   ``stride / 2 + index * stride``, square, ``ANCHOR_STRIDES * stride`` pixels wide;
3. a head cell whose face probability (softmax of its two scores) exceeds ``CANDIDATE_SCORE`` gives a
   box decoded SSD-style with ``BOX_VARIANCES``;
4. non-maximum suppression at IoU ``NMS_IOU`` (areas counted with the +1 pixel convention), then boxes
   with a score above ``FACE_SCORE`` are kept, best first;
5. the crop of a frame is its best box, clipped at 0 and truncated to integer pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.core.types import FaceBox

S3FD_MEAN = (104.0, 117.0, 123.0)  # 0-255 values subtracted from input channels 0, 1, 2
OFFICIAL_CHANNEL_ORDER = "rgb"  # api.get_detections_for_batch flips cv2's BGR frames before detecting
S3FD_STRIDES = (4, 8, 16, 32, 64, 128)  # input pixels per feature-map cell of heads 1..6
ANCHOR_STRIDES = 4  # an anchor box is this many strides wide and high (16 .. 512 pixels)
BOX_VARIANCES = (0.1, 0.2)  # scales of the centre and the log-size regression
CANDIDATE_SCORE = 0.05  # a head cell above this face probability becomes a candidate box
NMS_IOU = 0.3  # a candidate overlapping a better one by more than this is dropped
FACE_SCORE = 0.5  # face-alignment keeps the boxes above this score
DETECTION_COLUMNS = 5  # x1, y1, x2, y2, score


def s3fd_input(frames: np.ndarray, channel_order: str = OFFICIAL_CHANNEL_ORDER) -> np.ndarray:
    """``(N, H, W, 3) uint8`` BGR frames -> the network input ``(N, 3, H, W) float32``.

    ``channel_order``: "rgb" (the official Wav2Lip preprocessing) or "bgr" (what S3FD was trained on);
    ``S3FD_MEAN`` is subtracted from channels 0, 1, 2 of that order.
    """
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    ordered = frames[..., ::-1] if channel_order == "rgb" else frames
    centred = ordered.astype(np.float32) - np.asarray(S3FD_MEAN, np.float32)
    return np.ascontiguousarray(centred.transpose(0, 3, 1, 2))


def head_anchors(feature_size: tuple[int, int], stride: int) -> np.ndarray:
    """Anchors of one head with a ``(h, w)`` feature map: ``(h * w, 4) float32`` centre x, centre y,
    width, height in input pixels, row-major (cell ``(y, x)`` is row ``y * w + x``)."""
    rows, cols = feature_size
    ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    size = float(ANCHOR_STRIDES * stride)
    centres_x = stride / 2.0 + xs.reshape(-1) * stride
    centres_y = stride / 2.0 + ys.reshape(-1) * stride
    sizes = np.full(rows * cols, size)
    return np.stack([centres_x, centres_y, sizes, sizes], axis=1).astype(np.float32)


def decode_boxes(
    offsets: np.ndarray, anchors: np.ndarray, variances: tuple[float, float] = BOX_VARIANCES
) -> np.ndarray:
    """Regression ``offsets (P, 4)`` (dx, dy, log dw, log dh) at ``anchors (P, 4)`` -> ``(P, 4)``
    x1, y1, x2, y2 in input pixels: centre ``anchor + d * variance0 * anchor size``, size
    ``anchor size * exp(d * variance1)``."""
    offsets = np.asarray(offsets, np.float64)
    anchors = np.asarray(anchors, np.float64)
    centres = anchors[:, :2] + offsets[:, :2] * variances[0] * anchors[:, 2:]
    sizes = anchors[:, 2:] * np.exp(offsets[:, 2:] * variances[1])
    return np.concatenate([centres - sizes / 2.0, centres + sizes / 2.0], axis=1).astype(np.float32)


def frame_candidates(
    heads: Sequence[tuple[np.ndarray, np.ndarray]], score_threshold: float = CANDIDATE_SCORE
) -> np.ndarray:
    """The candidate boxes of one frame: ``(k, 5) float32`` x1, y1, x2, y2, score.

    ``heads[i] = (face probability (h, w), offsets (4, h, w))`` of head ``i`` (stride
    ``S3FD_STRIDES[i]``); cells with a probability above ``score_threshold`` are decoded, head by head
    and row-major within a head.
    """
    if len(heads) != len(S3FD_STRIDES):
        raise ValueError(f"S3FD has {len(S3FD_STRIDES)} heads, got {len(heads)}")
    parts = []
    for (probability, offsets), stride in zip(heads, S3FD_STRIDES):
        cells = np.flatnonzero(probability.reshape(-1) > score_threshold)
        anchors = head_anchors(probability.shape, stride)[cells]
        boxes = decode_boxes(offsets.reshape(4, -1).T[cells], anchors)
        parts.append(np.concatenate([boxes, probability.reshape(-1)[cells, None]], axis=1))
    return np.concatenate(parts, axis=0).astype(np.float32).reshape(-1, DETECTION_COLUMNS)


def nms_order(rows: np.ndarray, iou_threshold: float = NMS_IOU) -> np.ndarray:
    """Indices of the ``(k, 5)`` rows kept by greedy NMS, best score first.

    Overlap as face-alignment computes it: widths and heights count ``x2 - x1 + 1`` pixels, and a box
    is dropped when its IoU with a kept, better box is above ``iou_threshold``.
    """
    x1, y1, x2, y2, scores = (rows[:, i].astype(np.float64) for i in range(DETECTION_COLUMNS))
    areas = (x2 - x1 + 1.0) * (y2 - y1 + 1.0)
    order = np.argsort(scores, kind="stable")[::-1]
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1.0)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1.0)
        inter = inter_w * inter_h
        order = rest[inter / (areas[best] + areas[rest] - inter) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def frame_detections(
    heads: Sequence[tuple[np.ndarray, np.ndarray]],
    face_score: float = FACE_SCORE,
    scale: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Candidates -> NMS -> score above ``face_score``: ``(k, 5) float32`` best first, box
    coordinates multiplied by ``scale = (x, y)`` (frame pixels per detection-input pixel)."""
    rows = frame_candidates(heads)
    rows = rows[nms_order(rows)]
    rows = rows[rows[:, 4] > face_score]
    return (rows * np.asarray([scale[0], scale[1], scale[0], scale[1], 1.0], np.float32)).astype(np.float32)


def detections_to_faces(rows: np.ndarray, frame_size: tuple[int, int]) -> list[FaceBox]:
    """``(k, 5)`` detections -> FaceBoxes (no landmarks), in the same order.

    Edges are clipped at 0 and truncated to integers as the official crop is cut
    (``int(max(v, 0))``), then clipped to the ``(height, width)`` frame as array slicing does; boxes
    left empty and rows with non-finite numbers are dropped.
    """
    height, width = frame_size
    rows = np.asarray(rows, np.float32).reshape(-1, DETECTION_COLUMNS)
    rows = rows[np.isfinite(rows).all(axis=1)]
    edges = np.floor(np.maximum(rows[:, :4].astype(np.float64), 0.0)).astype(np.int64)
    left, right = np.minimum(edges[:, 0], width), np.minimum(edges[:, 2], width)
    top, bottom = np.minimum(edges[:, 1], height), np.minimum(edges[:, 3], height)
    keep = np.flatnonzero((bottom > top) & (right > left))
    return [
        FaceBox(int(top[i]), int(bottom[i]), int(left[i]), int(right[i]), score=float(rows[i, 4]))
        for i in keep
    ]
