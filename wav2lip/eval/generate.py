"""The LRS2 test protocol, step 1: one lip-synced video per line of a test pair list, as the official
``evaluation/gen_videos_from_filelist.py`` makes them (scored afterwards by :mod:`wav2lip.eval.evaluate`).

``python -m wav2lip.evaluate generate --filelist test_pairs.txt --data-root lrs2/main --results-dir
out/ --checkpoint wav2lip.pth``. Each line ``<audio_src> <video>`` names two utterances
(``<data_root>/<name>.mp4``): the mel of the first one drives the faces of the second. As the
official script: only the mel windows that fit entirely (``int(i * 80 / fps) + 16 <= mel length``,
no final padded window), the video cut to that many frames (a pair whose video is shorter is
skipped), faces found in every frame, smoothed over 5 frames, no padding, a hard paste of the
generated face, no restoration; ``<results_dir>/<line index>.mp4`` carries the whole audio of
``<audio_src>``. An LRS2 utterance lasts a few seconds, so its frames are held in memory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from pipeline.core.device_names import DEVICE_HELP, device_argument
from pipeline.core.errors import InputError, NoFaceError
from pipeline.core.media import FrameSize, VideoReader, VideoWriter, read_first_frame
from pipeline.core.types import AudioClip
from pipeline.faces.config import DetectConfig
from pipeline.faces.detector import track_faces
from wav2lip.audio import MEL_STEP_SIZE, SAMPLE_RATE_HZ, load_wav, melspectrogram
from wav2lip.inference import lipsync_frames

LRS2_FPS = 25.0  # frame rate of the LRS2 test videos
OFFICIAL_DETECT = DetectConfig(pads=(0, 0, 0, 0), smooth_window=5)  # gen_videos_from_filelist.py defaults
VIDEO_SUFFIX = ".mp4"
ENCODE_CRF, ENCODE_PRESET = 18, "medium"


@dataclass(frozen=True)
class Pair:
    """One test line: the audio of ``audio_video`` drives the face video ``face_video``; ``index``: line."""

    index: int
    audio_video: Path
    face_video: Path


def read_pairs(filelist: str | Path, data_root: str | Path) -> list[Pair]:
    """The pairs of ``filelist`` (``<audio_src> <video>`` per non-blank line, names without ``.mp4``,
    relative to ``data_root``). Raises InputError for a missing list, a malformed line or a missing video."""
    path, root = Path(filelist), Path(data_root)
    if not path.is_file():
        raise InputError(f"test pair list not found: {path}")
    pairs = []
    for index, line in enumerate(ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()):
        words = line.split()
        if len(words) != 2:
            raise InputError(f"{path}: line {index + 1} must be '<audio_src> <video>', got {line!r}")
        audio, video = (root / f"{word}{VIDEO_SUFFIX}" for word in words)
        for media in (audio, video):
            if not media.is_file():
                raise InputError(f"{path}: line {index + 1} names {media}, which does not exist")
        pairs.append(Pair(index, audio, video))
    if not pairs:
        raise InputError(f"test pair list {path} is empty")
    return pairs


def official_mel_chunks(mel: np.ndarray, fps: float = LRS2_FPS) -> np.ndarray:
    """``(N, 80, 16)`` windows of ``mel (80, T)`` starting at ``int(i * 80 / fps)`` while they fit."""
    step = 80.0 / float(fps)
    chunks = []
    while int(len(chunks) * step) + MEL_STEP_SIZE <= mel.shape[1]:
        start = int(len(chunks) * step)
        chunks.append(mel[:, start : start + MEL_STEP_SIZE])
    return np.stack(chunks).astype(np.float32) if chunks else np.zeros((0, 80, MEL_STEP_SIZE), np.float32)


def read_frames(video: Path, n_frames: int, fps: float = LRS2_FPS) -> tuple[np.ndarray, FrameSize]:
    """The first ``n_frames`` frames of ``video`` (fewer when it is shorter) as ``(n, H, W, 3) uint8`` BGR."""
    first = read_first_frame(video, fps)
    size = FrameSize(first.shape[1], first.shape[0])
    with VideoReader(video, size, fps, batch_size=64, max_frames=n_frames) as reader:
        batches = list(reader)
    frames = np.concatenate(batches) if batches else np.zeros((0, size.height, size.width, 3), np.uint8)
    return frames, size


def generate_pair(
    model: nn.Module,
    pair: Pair,
    results_dir: Path,
    detect: DetectConfig,
    detector,
    device,
    batch_size: int = 128,
) -> Path | None:
    """Write ``<results_dir>/<pair.index>.mp4``; None (skipped, as the official script) when the video
    is shorter than the audio's windows or no frame shows a face."""
    # 1. Audio and its windows
    samples = load_wav(pair.audio_video)  # soxr resampling as librosa, when not already 16 kHz
    mels = official_mel_chunks(melspectrogram(samples))
    # 2. Frames and faces
    frames, size = read_frames(pair.face_video, len(mels))
    if len(mels) == 0 or len(frames) < len(mels):
        return None
    try:
        track = track_faces([frames], detector, detect, (size.height, size.width), progress=False)
    except NoFaceError:
        return None
    # 3. Lip-sync with a hard paste, 4. encode with the whole source audio
    synced = lipsync_frames(model, frames, list(track.faces), mels, batch_size, device, paste="hard")
    out = results_dir / f"{pair.index}{VIDEO_SUFFIX}"
    audio = AudioClip(samples, SAMPLE_RATE_HZ)
    with VideoWriter(out, size, LRS2_FPS, ENCODE_CRF, ENCODE_PRESET, audio) as writer:
        writer.write(synced)
        writer.commit()
    return out


def generate_all(
    model: nn.Module, pairs: list[Pair], results_dir: str | Path, detect: DetectConfig, detector, device
) -> list[Path]:
    """Generate every pair into ``results_dir`` (created); the videos written, in list order."""
    results = Path(results_dir)
    results.mkdir(parents=True, exist_ok=True)
    written = [generate_pair(model, pair, results, detect, detector, device) for pair in pairs]
    return [path for path in written if path is not None]


def detect_config(box: tuple[int, int, int, int] | None) -> DetectConfig:
    """The official detection settings, or a fixed ``box`` (top, bottom, left, right) for every frame."""
    return dataclasses.replace(OFFICIAL_DETECT, box=box) if box else OFFICIAL_DETECT


# --- command line --------------------------------------------------------------------------------------


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m wav2lip.evaluate generate", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--filelist", required=True, metavar="FILE", help="LRS2 test pairs: <audio_src> <video>"
    )
    parser.add_argument("--data-root", required=True, metavar="DIR", help="folder of <name>.mp4 utterances")
    parser.add_argument("--results-dir", required=True, metavar="DIR", help="where <index>.mp4 go")
    parser.add_argument("--checkpoint", metavar="FILE", help="generator (default weights/wav2lip.pth)")
    parser.add_argument("--box", nargs=4, type=int, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                        help="use this face box in every frame instead of detecting")  # fmt: skip
    parser.add_argument("--detector-checkpoint", metavar="FILE", help="RetinaFace weights")
    parser.add_argument(
        "--syncnet-v2", metavar="FILE", help="score with it (default weights/syncnet_v2.model)"
    )
    parser.add_argument("--no-score", action="store_true", help="only generate the videos")
    parser.add_argument("--device", type=device_argument, default="auto", metavar="DEVICE", help=DEVICE_HELP)
    parser.add_argument("--out", metavar="FILE.json", help="write every score here")
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Generate the videos of the pair list, then score them as the official LRS2 evaluation does
    (whole frames resized to 224, LSE-D / LSE-C). Returns the exit code."""
    import sys

    from pipeline.core.devices import choose_device
    from pipeline.core.errors import LipSyncError
    from pipeline.core.weight_store import resolve
    from pipeline.faces.detector import load_detector
    from wav2lip.eval.evaluate import EvalConfig, evaluate_all, write_report
    from wav2lip.loading import load_generator_for_inference

    args = build_parser().parse_args(argv)
    try:
        device = choose_device(args.device)  # an unusable --device fails before any work
        pairs = read_pairs(args.filelist, args.data_root)
        model = load_generator_for_inference(resolve("wav2lip", args.checkpoint), device)
        detect = detect_config(tuple(args.box) if args.box else None)
        detector = (
            None
            if args.box
            else load_detector(detect, resolve(detect.model, args.detector_checkpoint), device)
        )
        videos = generate_all(model, pairs, args.results_dir, detect, detector, device)
        if not args.quiet:
            print(f"{len(videos)} of {len(pairs)} pairs generated into {args.results_dir}", file=sys.stderr)
        if args.no_score:
            return 0
        config = EvalConfig(str(resolve("syncnet_v2", args.syncnet_v2)), device=args.device, crop="frame")
        report = evaluate_all(videos, config, args.quiet)
    except LipSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return write_report(report, args.out)
