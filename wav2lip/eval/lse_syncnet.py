"""SyncNet v2 (Chung & Zisserman, 2016) as released in joonson/syncnet_python: the judge of LSE-D / LSE-C.

Parameter names match ``syncnet_v2.model`` (the ``S`` module of ``SyncNetModel.py``): the audio stream
``netcnnaud`` + ``netfcaud`` embeds 13 MFCCs x 20 steps (0.2 s); the lip stream ``netcnnlip`` +
``netfclip`` embeds 5 frames of 224x224 (the official code feeds OpenCV's BGR frames as 0-255 floats, no
normalisation). Both give 1024-d embeddings compared by Euclidean distance.

The released file is a plain ``name -> tensor`` dict saved by an old PyTorch (``loadParameters``
iterates its items and copies them into the module; current syncnet_python reads it with
``weights_only=True``), so it is read here with :func:`pipeline.core.checkpoints.load_state_dict`. It
predates BatchNorm's ``num_batches_tracked`` counters, which are therefore allowed to be absent.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from pipeline.core.checkpoints import load_state_dict
from pipeline.core.errors import EngineUnavailableError, WrongModelError

EMBEDDING_DIM = 1024  # output size of both streams
LIP_SIZE = 224  # pixels: frames are resized to 224x224 (Wav2Lip's calc_scores scripts)
LIP_FRAMES = 5  # video frames per lip embedding (0.2 s at 25 fps)
MFCC_PER_FRAME = 4  # MFCC steps (100 per second) per video frame (25 per second)
MFCC_WINDOW = LIP_FRAMES * MFCC_PER_FRAME  # 20 MFCC steps per audio embedding
SAMPLES_PER_FRAME = 640  # 16 kHz samples per 25 fps video frame (syncnet_python: len(audio) / 640)
N_MFCC = 13  # cepstral coefficients (python_speech_features default)
SAMPLE_RATE_HZ = 16000
WHAT = "SyncNet v2 (syncnet_v2.model)"

# (kind, arguments) per layer, in the order of the official nn.Sequential (indices are the names).
AUDIO_CNN = [
    ("conv2d", (1, 64, (3, 3), (1, 1), (1, 1))), ("bn2d", 64), ("relu",), ("maxpool2d", ((1, 1), (1, 1))),
    ("conv2d", (64, 192, (3, 3), (1, 1), (1, 1))), ("bn2d", 192), ("relu",), ("maxpool2d", ((3, 3), (1, 2))),
    ("conv2d", (192, 384, (3, 3), (1, 1), (1, 1))), ("bn2d", 384), ("relu",),
    ("conv2d", (384, 256, (3, 3), (1, 1), (1, 1))), ("bn2d", 256), ("relu",),
    ("conv2d", (256, 256, (3, 3), (1, 1), (1, 1))), ("bn2d", 256), ("relu",), ("maxpool2d", ((3, 3), (2, 2))),
    ("conv2d", (256, 512, (5, 4), (1, 1), (0, 0))), ("bn2d", 512), ("relu",),
]  # fmt: skip
LIP_CNN = [
    ("conv3d", (3, 96, (5, 7, 7), (1, 2, 2), 0)), ("bn3d", 96), ("relu",),
    ("maxpool3d", ((1, 3, 3), (1, 2, 2), 0)),
    ("conv3d", (96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1))), ("bn3d", 256), ("relu",),
    ("maxpool3d", ((1, 3, 3), (1, 2, 2), (0, 1, 1))),
    ("conv3d", (256, 256, (1, 3, 3), 1, (0, 1, 1))), ("bn3d", 256), ("relu",),
    ("conv3d", (256, 256, (1, 3, 3), 1, (0, 1, 1))), ("bn3d", 256), ("relu",),
    ("conv3d", (256, 256, (1, 3, 3), 1, (0, 1, 1))), ("bn3d", 256), ("relu",),
    ("maxpool3d", ((1, 3, 3), (1, 2, 2), 0)),
    ("conv3d", (256, 512, (1, 6, 6), 1, 0)), ("bn3d", 512), ("relu",),
]  # fmt: skip


def _layer(kind: str, *args) -> nn.Module:
    if kind == "conv2d":
        cin, cout, kernel, stride, padding = args[0]
        return nn.Conv2d(cin, cout, kernel, stride, padding)
    if kind == "conv3d":
        cin, cout, kernel, stride, padding = args[0]
        return nn.Conv3d(cin, cout, kernel, stride, padding)
    if kind == "maxpool2d":
        return nn.MaxPool2d(*args[0])
    if kind == "maxpool3d":
        return nn.MaxPool3d(*args[0])
    norms = {"bn2d": nn.BatchNorm2d, "bn3d": nn.BatchNorm3d}
    return norms[kind](args[0]) if kind in norms else nn.ReLU()


def _head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, EMBEDDING_DIM))


class SyncNetV2(nn.Module):
    """The ``S`` network of syncnet_python; ``state_dict()`` names match ``syncnet_v2.model``."""

    def __init__(self) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(*(_layer(kind, *rest) for kind, *rest in AUDIO_CNN))
        self.netfcaud = _head()
        self.netfclip = _head()
        self.netcnnlip = nn.Sequential(*(_layer(kind, *rest) for kind, *rest in LIP_CNN))

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 13, 20)`` MFCC windows -> ``(B, 1024)`` audio embeddings."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 5, 224, 224)`` frames as 0-255 floats (BGR, as OpenCV reads) -> ``(B, 1024)``."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def load_syncnet_v2(path: str | Path, device: str | torch.device = "cpu") -> SyncNetV2:
    """SyncNet v2 from ``syncnet_v2.model`` in eval mode; every parameter and running statistic must be
    present with its shape (only ``num_batches_tracked`` may be missing). Raises WeightsError kinds."""
    state = load_state_dict(path, WHAT)
    model = SyncNetV2()
    expected = model.state_dict()
    required = {k for k in expected if not k.endswith("num_batches_tracked")}
    missing = sorted(required - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise WrongModelError(
            f"{path} is not {WHAT}: {len(missing)} missing, {len(unexpected)} unexpected and {len(wrong)} "
            f"mis-shaped parameters (first: {first}); download syncnet_v2.model from syncnet_python"
        )
    model.load_state_dict(state, strict=False)
    return model.to(device).eval()


# --- inputs (pure) -------------------------------------------------------------------------------------


def lip_frames(frames_bgr: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3) uint8`` BGR frames -> ``(3, N, 224, 224) float32`` 0-255 (bilinear resize)."""
    resized = np.stack([cv2.resize(f, (LIP_SIZE, LIP_SIZE)) for f in frames_bgr]).astype(np.float32)
    return torch.from_numpy(resized).permute(3, 0, 1, 2).contiguous()


def mfcc_features(samples_int16: np.ndarray, sample_rate_hz: int = SAMPLE_RATE_HZ) -> torch.Tensor:
    """``(n,)`` int16-valued mono samples -> ``(13, T) float32`` MFCCs, 100 per second.

    Exactly ``python_speech_features.mfcc(audio, 16000)`` with its defaults on the integer samples
    (25 ms rectangular frames every 10 ms, 26 filters, 512-point FFT, log energy as coefficient 0),
    as syncnet_python computes them from the 16-bit WAV.
    """
    try:
        import python_speech_features
    except ImportError as exc:
        raise EngineUnavailableError(
            "LSE-D/LSE-C need python_speech_features (pip install python_speech_features==0.6)"
        ) from exc
    mfcc = python_speech_features.mfcc(np.asarray(samples_int16), sample_rate_hz)
    return torch.from_numpy(np.ascontiguousarray(mfcc.T, dtype=np.float32))


def to_int16_scale(samples: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] -> the int16 values a 16-bit WAV holds (what syncnet_python reads)."""
    return np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def usable_frames(n_frames: int, n_samples: int) -> int:
    """syncnet_python's ``min_length = min(len(images), floor(len(audio) / 640))``: video frames
    with audio behind them (16 kHz samples)."""
    return min(int(n_frames), int(n_samples) // SAMPLES_PER_FRAME)


@torch.no_grad()
def embed(
    model: SyncNetV2,
    frames: torch.Tensor,
    mfcc: torch.Tensor,
    batch_size: int = 20,
    n_samples: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip and audio embeddings of every 5-frame window, as ``SyncNetInstance.evaluate``.

    ``frames (3, N, 224, 224)``, ``mfcc (13, T)`` of ``n_samples`` 16 kHz samples. Windows start at
    frames ``0 .. L-6`` where ``L = min(N, floor(n_samples / 640))`` (the official ``lastframe =
    min_length - 5``; without ``n_samples``, ``T // 4``, one fewer when the audio is an exact multiple
    of 640). Returns two ``(L-5, 1024)`` float32 CPU tensors. Raises ValueError when the clip is
    shorter than 6 frames.
    """
    if n_samples is None:
        length = min(frames.shape[1], mfcc.shape[1] // MFCC_PER_FRAME)
    else:
        length = usable_frames(frames.shape[1], n_samples)
    last = length - LIP_FRAMES
    if last < 1:
        raise ValueError(
            f"clip too short for SyncNet: {length} usable frames, need at least {LIP_FRAMES + 1}"
        )
    device = next(model.parameters()).device
    lips, auds = [], []
    for start in range(0, last, batch_size):
        idx = range(start, min(last, start + batch_size))
        lip_in = torch.stack([frames[:, v : v + LIP_FRAMES] for v in idx])
        aud_in = torch.stack([mfcc[:, v * MFCC_PER_FRAME : v * MFCC_PER_FRAME + MFCC_WINDOW] for v in idx])
        lips.append(model.forward_lip(lip_in.to(device)).float().cpu())
        auds.append(model.forward_aud(aud_in.unsqueeze(1).to(device)).float().cpu())
    return torch.cat(lips), torch.cat(auds)
