"""A tiny synthetic LRS2-layout data set for the training and evaluation tests (nothing shipped).

Each "utterance" is a drawn face whose mouth opening follows the loudness of a 220 Hz tone with a
random syllable envelope, so mouth and audio really are in sync. ``make_raw_lrs2`` writes
``<root>/<video_id>/<utt>.mp4`` (H.264 + AAC, 25 fps) through the project's VideoWriter;
``make_preprocessed_set`` writes the preprocessed layout directly (``<n>.jpg`` + ``audio.wav``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from pipeline.core.media import FrameSize, VideoWriter
from pipeline.core.types import AudioClip

FPS = 25
SAMPLE_RATE = 16000
FACE = 96  # pixels: side of a drawn face
FRAME = (128, 160)  # (height, width) of raw clips; the face sits at FACE_BOX
FACE_BOX = (16, 112, 32, 128)  # top, bottom, left, right of the face in a raw frame
SYLLABLE_FRAMES = 4  # frames per syllable of the envelope
TAG_BITS = 12  # barcode bits drawn into every face
TAG_ROWS = 6  # pixels: height of the barcode at the bottom of a face
FRAMES_PER_TAG_SEED = 64  # tag = seed * 64 + frame index


def envelope(n_frames: int, seed: int) -> np.ndarray:
    """``(n_frames,)`` loudness in [0, 1]: random syllables, some silent."""
    rng = np.random.default_rng(seed)
    levels = rng.choice([0.0, 0.35, 0.7, 1.0], size=-(-n_frames // SYLLABLE_FRAMES))
    return np.repeat(levels, SYLLABLE_FRAMES)[:n_frames]


def tone(env: np.ndarray) -> np.ndarray:
    """float32 mono 16 kHz samples: a 220 Hz tone (plus harmonic) scaled by the per-frame envelope."""
    per_frame = SAMPLE_RATE // FPS
    t = np.arange(len(env) * per_frame) / SAMPLE_RATE
    wave = 0.6 * np.sin(2 * np.pi * 220 * t) + 0.3 * np.sin(2 * np.pi * 660 * t)
    return (wave * np.repeat(env, per_frame)).astype(np.float32)


def draw_face(mouth_open: float, size: int = FACE, tag: int = 0) -> np.ndarray:
    """``(size, size, 3) uint8`` BGR face: skin oval, eyes, nose, mouth open by ``mouth_open`` in [0, 1],
    and ``tag`` as a 12-bit barcode in the bottom rows (so every frame of the set is unique)."""
    img = np.full((size, size, 3), (60, 80, 40), np.uint8)
    c = size // 2
    cv2.ellipse(img, (c, c), (int(size * 0.38), int(size * 0.46)), 0, 0, 360, (150, 175, 215), -1)
    for dx in (-size // 6, size // 6):
        cv2.circle(img, (c + dx, int(size * 0.38)), max(2, size // 24), (40, 30, 30), -1)
    cv2.line(img, (c, int(size * 0.45)), (c, int(size * 0.58)), (110, 130, 170), 2)
    height = 1 + int(mouth_open * size * 0.12)
    cv2.ellipse(img, (c, int(size * 0.72)), (size // 7, height), 0, 0, 360, (40, 40, 150), -1)
    bar = size // TAG_BITS
    for bit in range(TAG_BITS):
        img[-TAG_ROWS:, bit * bar : (bit + 1) * bar] = 255 if (tag >> bit) & 1 else 0
    return img


def clip_frames(env: np.ndarray, seed: int) -> np.ndarray:
    """``(n, H, W, 3) uint8`` raw frames with the face at ``FACE_BOX``."""
    top, bottom, left, right = FACE_BOX
    frames = np.zeros((len(env), *FRAME, 3), np.uint8)
    frames[:] = (90, 90, 90)
    for i, level in enumerate(env):
        frames[i, top:bottom, left:right] = draw_face(float(level), bottom - top, _tag(seed, i))
    return frames


def _tag(seed: int, index: int) -> int:
    return (seed * FRAMES_PER_TAG_SEED + index) % (1 << TAG_BITS)


def make_clip(path: Path, n_frames: int, seed: int, blank_frames: tuple[int, ...] = ()) -> Path:
    """One raw utterance video; frames listed in ``blank_frames`` show no face (plain grey)."""
    env = envelope(n_frames, seed)
    frames = clip_frames(env, seed)
    for i in blank_frames:
        frames[i] = 90
    path.parent.mkdir(parents=True, exist_ok=True)
    size = FrameSize(FRAME[1], FRAME[0])
    with VideoWriter(path, size, FPS, 18, "ultrafast", AudioClip(tone(env), SAMPLE_RATE)) as writer:
        writer.write(frames)
        writer.commit()
    return path


def make_raw_lrs2(root: Path, layout: dict[str, int], n_frames: int = 20) -> list[Path]:
    """``{video_id: number of utterances}`` -> ``<root>/<video_id>/0000k.mp4`` clips."""
    paths = []
    for v, (video_id, count) in enumerate(sorted(layout.items())):
        for u in range(count):
            paths.append(make_clip(root / video_id / f"{u + 1:05d}.mp4", n_frames, seed=100 * v + u))
    return paths


def write_utterance(folder: Path, n_frames: int, seed: int) -> None:
    """``<n>.jpg`` 96x96 faces and a 16-bit ``audio.wav`` of one preprocessed utterance."""
    env = envelope(n_frames, seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, level in enumerate(env):
        cv2.imwrite(str(folder / f"{i}.jpg"), draw_face(float(level), tag=_tag(seed, i)))
    sf.write(folder / "audio.wav", tone(env), SAMPLE_RATE, subtype="PCM_16")


def make_preprocessed_set(
    root: Path, n_train: int = 3, n_val: int = 1, n_frames: int = 24, seed: int = 0
) -> tuple[list[str], list[str]]:
    """A preprocessed set with ``train.txt`` / ``val.txt``; returns the two name lists."""
    names = [f"vid{i // 2:02d}/{i % 2 + 1:05d}" for i in range(n_train + n_val)]
    for i, name in enumerate(names):
        write_utterance(root / name, n_frames, seed + i)
    train, val = names[:n_train], names[n_train:]
    (root / "train.txt").write_text("".join(f"{n}\n" for n in train))
    (root / "val.txt").write_text("".join(f"{n}\n" for n in val))
    return train, val
