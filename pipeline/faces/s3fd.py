"""S3FD, the face detector of the official Wav2Lip preprocessing (face-alignment's ``sfd``).

:class:`S3FDNetwork` is the VGG-16 based single-shot detector (Zhang et al., "S3FD: Single Shot
Scale-invariant Face Detector", 2017) with the parameter names of the released ``s3fd.pth``, so the
official file loads unchanged with ``strict=True``. :class:`S3FDDetector` runs it on frame batches; the
pre- and post-processing are the pure functions of :mod:`pipeline.faces.s3fd_boxes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pipeline.core.adaptive_batch import AdaptiveBatch
from pipeline.core.checkpoints import load_state_dict
from pipeline.core.devices import precision_autocast, resolve_precision
from pipeline.core.types import FaceBox
from pipeline.faces.config import DetectConfig
from pipeline.faces.detector import check_detector_state_dict, check_frames, downscale_frames
from pipeline.faces.s3fd_boxes import (
    OFFICIAL_CHANNEL_ORDER,
    detections_to_faces,
    frame_detections,
    s3fd_input,
)

# VGG-16 stages: (name prefix, output channels, 3x3 convolutions); a 2x2 max-pool follows each stage.
VGG_STAGES = (("conv1", 64, 2), ("conv2", 128, 2), ("conv3", 256, 3), ("conv4", 512, 3), ("conv5", 512, 3))
# The six detection heads: (feature the head reads, its channels, score channels). The first head
# scores three background classes and one face class; their maximum becomes one background score.
HEADS = (
    ("conv3_3_norm", 256, 4),
    ("conv4_3_norm", 512, 2),
    ("conv5_3_norm", 512, 2),
    ("fc7", 1024, 2),
    ("conv6_2", 512, 2),
    ("conv7_2", 256, 2),
)
L2NORM_SCALES = {"conv3_3_norm": 10.0, "conv4_3_norm": 8.0, "conv5_3_norm": 5.0}  # initial weights
L2NORM_EPS = 1e-10  # added to the channel norm before dividing
FC6_PADDING = 3  # the released network pads fc6 by 3 without dilation: its map is 4 cells larger


class L2Norm(nn.Module):
    """Each pixel's channel vector scaled to unit length, then by a learnt per-channel ``weight``."""

    def __init__(self, channels: int, initial_scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(initial_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + L2NORM_EPS
        return x / norm * self.weight.view(1, -1, 1, 1)


class S3FDNetwork(nn.Module):
    """``(N, 3, H, W)`` float32 (channels minus ``S3FD_MEAN``) -> six ``(scores, offsets)`` pairs.

    Head ``i`` gives ``scores (N, 2, h_i, w_i)`` (background, face; logits) and ``offsets (N, 4, h_i,
    w_i)``, with ``h_i = H / 2**(i + 2)`` for heads 1-3 and 5-6 (H a multiple of 128); head 4 (fc7)
    is 4 cells larger than H / 32 in each direction (``FC6_PADDING``).
    """

    def __init__(self) -> None:
        super().__init__()
        channels = 3
        for prefix, width, depth in VGG_STAGES:
            for index in range(1, depth + 1):
                self.add_module(f"{prefix}_{index}", nn.Conv2d(channels, width, 3, padding=1))
                channels = width
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=FC6_PADDING)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self.conv6_1 = nn.Conv2d(1024, 256, 1)
        self.conv6_2 = nn.Conv2d(256, 512, 3, stride=2, padding=1)
        self.conv7_1 = nn.Conv2d(512, 128, 1)
        self.conv7_2 = nn.Conv2d(128, 256, 3, stride=2, padding=1)
        for name, scale in L2NORM_SCALES.items():
            self.add_module(name, L2Norm(self.get_submodule(name.removesuffix("_norm")).out_channels, scale))
        for source, width, scores in HEADS:
            self.add_module(f"{source}_mbox_conf", nn.Conv2d(width, scores, 3, padding=1))
            self.add_module(f"{source}_mbox_loc", nn.Conv2d(width, 4, 3, padding=1))

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        features = self._features(x)
        outputs = []
        for source, _, _ in HEADS:
            feature = features[source]
            scores = self.get_submodule(f"{source}_mbox_conf")(feature)
            if scores.shape[1] > 2:  # max-out background: the best of the background classes
                scores = torch.cat([scores[:, :-1].amax(dim=1, keepdim=True), scores[:, -1:]], dim=1)
            outputs.append((scores, self.get_submodule(f"{source}_mbox_loc")(feature)))
        return outputs

    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The six maps the heads read (the three VGG ones L2-normalised)."""
        features = {}
        for prefix, _, depth in VGG_STAGES:
            for index in range(1, depth + 1):
                x = F.relu(self.get_submodule(f"{prefix}_{index}")(x))
            if f"{prefix}_{depth}_norm" in L2NORM_SCALES:
                features[f"{prefix}_{depth}_norm"] = self.get_submodule(f"{prefix}_{depth}_norm")(x)
            x = F.max_pool2d(x, 2, 2)
        x = F.relu(self.fc7(F.relu(self.fc6(x))))
        features["fc7"] = x
        x = F.relu(self.conv6_2(F.relu(self.conv6_1(x))))
        features["conv6_2"] = x
        features["conv7_2"] = F.relu(self.conv7_2(F.relu(self.conv7_1(x))))
        return features


class S3FDDetector:
    """S3FD in eval mode on batches of frames, boxes in full-resolution pixels.

    Frames are downscaled to at most ``config.detect_max_side`` pixels first (the official
    preprocessing detects at full resolution: its options set a limit no frame reaches);
    ``config.score_threshold`` is the keep score (the official 0.5 is
    :data:`~pipeline.faces.s3fd_boxes.FACE_SCORE`). ``channel_order`` is the order of the channels
    the network sees (:func:`~pipeline.faces.s3fd_boxes.s3fd_input`).
    """

    def __init__(
        self,
        network: S3FDNetwork,
        config: DetectConfig,
        device: Any,
        precision: str = "fp32",
        channel_order: str = OFFICIAL_CHANNEL_ORDER,
    ) -> None:
        self.network = network
        self.config = config
        self.device = torch.device(device)
        self.precision = precision  # "fp32" | "bf16" | "fp16", already resolved
        self.channel_order = channel_order
        self.batches = AdaptiveBatch(max(1, int(config.batch_size)), "face detection")

    def detect(self, frames: np.ndarray) -> list[list[FaceBox]]:
        """Faces of each of the ``(N, H, W, 3) uint8`` BGR ``frames``, best score first (no landmarks)."""
        check_frames(frames)
        frame_size = (int(frames.shape[1]), int(frames.shape[2]))
        rows = self.batches.map(len(frames), lambda start, stop: self.detect_raw(frames[start:stop]))
        return [detections_to_faces(r, frame_size) for part in rows for r in part]

    def detect_raw(self, frames: np.ndarray) -> list[np.ndarray]:
        """Per frame a ``(k, 5) float32`` array x1, y1, x2, y2, score in full-resolution pixels (not
        clipped), best first."""
        small = downscale_frames(frames, self.config.detect_max_side)
        scale = (frames.shape[2] / small.shape[2], frames.shape[1] / small.shape[1])
        heads = self.forward(small)
        return [
            frame_detections([(p[n], o[n]) for p, o in heads], self.config.score_threshold, scale)
            for n in range(len(frames))
        ]

    def forward(self, frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per head ``(face probability (N, h, w), offsets (N, 4, h, w))`` as float32 NumPy arrays."""
        inputs = torch.from_numpy(s3fd_input(frames, self.channel_order)).to(self.device)
        with torch.inference_mode(), precision_autocast(self.device, self.precision):
            outputs = self.network(inputs)
        return [
            (torch.softmax(s.float(), dim=1)[:, 1].cpu().numpy(), o.float().cpu().numpy()) for s, o in outputs
        ]


def load_s3fd(
    config: DetectConfig, checkpoint_path: str | Path, device: Any, precision: str = "fp32"
) -> S3FDDetector:
    """Build :class:`S3FDNetwork`, load the official ``s3fd.pth`` (a bare state dict) strictly, move it
    to ``device``. Raises MissingWeightsError / WeightsError for unreadable files and WrongModelError
    for a checkpoint of another network."""
    network = S3FDNetwork()
    state = load_state_dict(checkpoint_path, what="S3FD face detector")
    check_detector_state_dict(network, state, checkpoint_path, "s3fd")
    network.load_state_dict(state, strict=True)
    network.to(device).eval()
    return S3FDDetector(network, config, device, resolve_precision(precision, device))
