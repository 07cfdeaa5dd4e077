"""LSE-D and LSE-C of generated talking-head videos (Wav2Lip paper, Sec. 4), plus our expert's sync score.

``python -m wav2lip.evaluate --videos results/ --syncnet-v2 weights/syncnet_v2.model`` (or
``--filelist list.txt``). For each video, as syncnet_python's ``SyncNetInstance.evaluate`` with
Wav2Lip's ``calculate_scores_*`` settings: frames resized to 224x224 (optionally cut to a face box
first), MFCCs of the 16 kHz audio, SyncNet v2 embeddings of every 5-frame window, the Euclidean
distance of each lip embedding to the audio embeddings shifted by -15..+15 frames, averaged over the
video per shift. LSE-D is the smallest mean distance, LSE-C the median minus that minimum; the AV
offset is ``15 - argmin``. The data set scores are the means over videos.

With ``--expert`` the Wav2Lip lip-sync expert also scores each video: the cosine similarity of its
face and audio embeddings (the probability its training loss is built on) at offset 0 and the same
offset search (best offset, best minus median similarity).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from pipeline.core.device_names import DEVICE_HELP, device_argument
from pipeline.core.devices import choose_device
from pipeline.core.errors import InputError, LipSyncError
from pipeline.core.media import FrameSize, VideoReader, decode_audio, read_first_frame
from pipeline.core.weight_store import resolve
from pipeline.faces.config import DetectConfig
from pipeline.faces.detector import fixed_box_track, load_detector, track_faces
from wav2lip.audio import melspectrogram
from wav2lip.eval.lse_syncnet import (
    LIP_FRAMES,
    SAMPLE_RATE_HZ,
    SyncNetV2,
    embed,
    lip_frames,
    load_syncnet_v2,
    mfcc_features,
    to_int16_scale,
)
from wav2lip.face_input import WAV2LIP_FACE_SIZE, faces_to_unit, syncnet_face_input
from wav2lip.loading import load_syncnet
from wav2lip.training.data import crop_mel, sync_mel_start

VSHIFT = 15  # frames: offsets searched either way (Wav2Lip's calculate_scores_*.py)
VIDEO_FPS = 25.0  # frame rate the metric assumes (SyncNet v2: 25 fps video, 100 Hz MFCC)
DECODE_BATCH = 64  # frames per decoded batch


@dataclass(frozen=True)
class EvalConfig:
    syncnet_v2_checkpoint: str | None = None  # syncnet_v2.model; None: skip LSE-D/LSE-C
    expert_checkpoint: str | None = None  # lipsync_expert.pth (or an own expert): also score with it
    vshift: int = VSHIFT
    batch_size: int = 20  # windows per SyncNet forward (official)
    device: str = "auto"
    detect: DetectConfig = field(default_factory=lambda: DetectConfig(box=None))
    crop: str = "frame"  # frame: whole frame (LRS-style face videos) | box | detect
    detector_checkpoint: str | None = None


@dataclass(frozen=True)
class SyncScores:
    """One video (or the mean over videos): LSE-D (lower is better), LSE-C (higher) and AV offset."""

    lse_d: float
    lse_c: float
    offset: int


# --- the metric (pure) ---------------------------------------------------------------------------------


def _over_shifts(measure, video_feat: torch.Tensor, aud_feat: torch.Tensor, vshift: int) -> torch.Tensor:
    """``(N, 2*vshift+1)``: entry ``[i, j]`` = ``measure(video_i, aud_(i+j-vshift))`` row-wise for
    ``(N, D)`` embeddings, audio embeddings outside the clip being zero vectors."""
    window = 2 * vshift + 1
    padded = F.pad(aud_feat, (0, 0, vshift, vshift))
    rows = [
        measure(video_feat[[i]].repeat(window, 1), padded[i : i + window]) for i in range(len(video_feat))
    ]
    return torch.stack(rows)


def calc_pdist(lip_feat: torch.Tensor, aud_feat: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """``(N, 2*vshift+1)`` distances: entry ``[i, j]`` = ``||lip_i - aud_(i+j-vshift)||`` (torch's
    ``pairwise_distance``, eps 1e-6), audio embeddings outside the clip being zero vectors."""
    return _over_shifts(F.pairwise_distance, lip_feat, aud_feat, vshift)


def scores_from_dists(dists: torch.Tensor, vshift: int = VSHIFT) -> SyncScores:
    """Mean over frames per shift; LSE-D = its min, LSE-C = its median (torch.median) - min, offset =
    ``vshift - argmin``."""
    mdist = dists.mean(dim=0)
    minval, minidx = torch.min(mdist, 0)
    conf = torch.median(mdist) - minval
    return SyncScores(float(minval), float(conf), int(vshift - int(minidx)))


def calc_psim(face_feat: torch.Tensor, aud_feat: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """``(N, 2*vshift+1)`` cosine similarities laid out like :func:`calc_pdist` (0 outside the clip)."""
    return _over_shifts(F.cosine_similarity, face_feat, aud_feat, vshift)


def expert_scores(sims: torch.Tensor, vshift: int = VSHIFT) -> dict[str, float]:
    """Mean similarity at offset 0, the best offset (``vshift - argmax``) and best minus median."""
    msim = sims.mean(dim=0)
    maxval, maxidx = torch.max(msim, 0)
    return {
        "expert_sync": float(msim[vshift]),
        "expert_offset": int(vshift - int(maxidx)),
        "expert_confidence": float(maxval - torch.median(msim)),
    }


def mean_scores(per_video: list[dict]) -> dict[str, float]:
    """Mean of every numeric score over videos (the paper's data set numbers)."""
    keys = [k for k in per_video[0] if isinstance(per_video[0][k], (int, float))]
    return {k: float(np.mean([v[k] for v in per_video])) for k in keys}


# --- one video -----------------------------------------------------------------------------------------


def read_faces(video: Path, config: EvalConfig, detector) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 224, 224, 3)`` and ``(N, 96, 96, 3)`` uint8 BGR views of every frame (whole frame or face)."""
    first = read_first_frame(video, VIDEO_FPS)
    size = FrameSize(first.shape[1], first.shape[0])
    boxes = _boxes(video, size, config, detector)
    big, small = [], []
    with VideoReader(video, size, VIDEO_FPS, DECODE_BATCH) as reader:
        for frames in reader:
            for frame in frames:
                box = boxes[len(big)] if boxes else None
                face = frame if box is None else frame[box.top : box.bottom, box.left : box.right]
                big.append(cv2.resize(face, (224, 224)))
                small.append(cv2.resize(face, (WAV2LIP_FACE_SIZE, WAV2LIP_FACE_SIZE)))
    if len(big) <= LIP_FRAMES:
        raise InputError(f"{video} has {len(big)} frames; the metric needs at least {LIP_FRAMES + 1}")
    return np.stack(big), np.stack(small)


def _boxes(video: Path, size: FrameSize, config: EvalConfig, detector):
    if config.crop == "frame":
        return None
    with VideoReader(video, size, VIDEO_FPS, DECODE_BATCH) as reader:
        if config.crop == "box":
            n_frames = sum(len(b) for b in reader)
            return fixed_box_track(config.detect.box, n_frames, (size.height, size.width))
        return list(
            track_faces(reader, detector, config.detect, (size.height, size.width), progress=False).faces
        )


def syncnet_v2_scores(
    model: SyncNetV2, big: np.ndarray, samples: np.ndarray, config: EvalConfig
) -> SyncScores:
    """LSE-D / LSE-C of frames ``big (N, 224, 224, 3)`` against float ``samples`` at 16 kHz."""
    mfcc = mfcc_features(to_int16_scale(samples), SAMPLE_RATE_HZ)
    lip_feat, aud_feat = embed(model, lip_frames(big), mfcc, config.batch_size, n_samples=len(samples))
    return scores_from_dists(calc_pdist(lip_feat, aud_feat, config.vshift), config.vshift)


@torch.no_grad()
def expert_embeddings(expert, small: np.ndarray, samples: np.ndarray, batch_size: int) -> tuple:
    """Face and audio embeddings of our expert for every 5-frame window with a full mel window (the
    training rule: the window starting at frame v uses the mel from ``int(80 * v / 25)``)."""
    mel_t = melspectrogram(samples).T
    device = next(expert.parameters()).device
    windows = []
    for start in range(len(small) - LIP_FRAMES + 1):
        mel = crop_mel(mel_t, sync_mel_start(start, VIDEO_FPS))
        if mel is None:
            break
        windows.append((start, mel))
    faces_all = torch.from_numpy(faces_to_unit(small)).permute(1, 0, 2, 3)  # (3, N, 96, 96)
    face_feats, aud_feats = [], []
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        faces = torch.stack([faces_all[:, s : s + LIP_FRAMES] for s, _ in chunk])
        mels = torch.stack([torch.from_numpy(m).unsqueeze(0) for _, m in chunk])
        audio_emb, face_emb = expert(mels.to(device), syncnet_face_input(faces).to(device))
        face_feats.append(face_emb.float().cpu())
        aud_feats.append(audio_emb.float().cpu())
    if not windows:
        raise InputError("the audio is shorter than one 0.2 s window")
    return torch.cat(face_feats), torch.cat(aud_feats)


def evaluate_video(video: Path, config: EvalConfig, models: dict) -> dict:
    """All scores of one video: ``{"video", "lse_d", "lse_c", "offset", "expert_*"}`` as configured."""
    big, small = read_faces(video, config, models.get("detector"))
    samples = decode_audio(video, SAMPLE_RATE_HZ).samples
    row: dict = {"video": str(video), "frames": len(big)}
    if models.get("syncnet_v2") is not None:
        row.update(asdict(syncnet_v2_scores(models["syncnet_v2"], big, samples, config)))
    if models.get("expert") is not None:
        face_feat, aud_feat = expert_embeddings(models["expert"], small, samples, config.batch_size)
        row.update(expert_scores(calc_psim(face_feat, aud_feat, config.vshift), config.vshift))
    return row


# --- a data set ----------------------------------------------------------------------------------------


def load_eval_models(config: EvalConfig) -> dict:
    """SyncNet v2, the expert and the face detector as configured (weights_only loading throughout)."""
    device = choose_device(config.device)
    models: dict = {}
    if config.syncnet_v2_checkpoint:
        models["syncnet_v2"] = load_syncnet_v2(config.syncnet_v2_checkpoint, device)
    if config.expert_checkpoint:
        models["expert"] = load_syncnet(config.expert_checkpoint, device)
    if not models:
        raise InputError("nothing to compute: give --syncnet-v2 and/or --expert")
    if config.crop == "detect":
        if not config.detector_checkpoint:
            raise InputError("--crop detect needs --detector-checkpoint (RetinaFace weights)")
        models["detector"] = load_detector(config.detect, config.detector_checkpoint, device)
    return models


def list_videos(videos_dir: str | None, filelist: str | None, root: str | None) -> list[Path]:
    """Videos from a folder (``*.mp4``, sorted) or a list file (one path per line, first word, relative
    to ``root`` when given); InputError when none exist."""
    if filelist:
        if not Path(filelist).is_file():
            raise InputError(f"file list not found: {filelist}")
        base = Path(root) if root else Path(filelist).parent
        lines = [
            ln.split()[0] for ln in Path(filelist).read_text(encoding="utf-8").splitlines() if ln.strip()
        ]
        paths = [p if p.is_absolute() else base / p for p in map(Path, lines)]
    elif videos_dir:
        paths = sorted(Path(videos_dir).glob("*.mp4"))
    else:
        raise InputError("give --videos DIR or --filelist FILE")
    missing = [p for p in paths if not p.is_file()]
    if missing or not paths:
        raise InputError(f"video not found: {missing[0]}" if missing else "no videos to evaluate")
    return paths


def evaluate_all(paths: list[Path], config: EvalConfig, quiet: bool = False) -> dict:
    """Per-video rows and their means: ``{"videos": [...], "mean": {...}}``."""
    models = load_eval_models(config)
    rows = [evaluate_video(p, config, models) for p in tqdm(paths, desc="Evaluating", disable=quiet)]
    return {"videos": rows, "mean": mean_scores(rows)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wav2lip.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--videos", metavar="DIR", help="folder of generated .mp4 videos")
    parser.add_argument("--filelist", metavar="FILE", help="list of video paths, one per line")
    parser.add_argument("--root", metavar="DIR", help="folder the --filelist paths are relative to")
    parser.add_argument("--syncnet-v2", metavar="FILE", help="default weights/syncnet_v2.model")
    parser.add_argument("--no-lse", action="store_true", help="skip LSE-D/LSE-C (only --expert scores)")
    parser.add_argument("--expert", metavar="FILE", help="also score with this lip-sync expert")
    parser.add_argument("--crop", choices=["frame", "box", "detect"], default="frame")
    parser.add_argument("--box", nargs=4, type=int, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"))
    parser.add_argument("--detector-checkpoint", metavar="FILE", help="RetinaFace weights for --crop detect")
    parser.add_argument("--vshift", type=int, default=VSHIFT)
    parser.add_argument("--device", type=device_argument, default="auto", metavar="DEVICE", help=DEVICE_HELP)
    parser.add_argument("--out", metavar="FILE.json", help="write every score here")
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        choose_device(args.device)  # an unusable --device fails before any work
        if args.crop == "box" and not args.box:
            raise InputError("--crop box needs --box TOP BOTTOM LEFT RIGHT")
        videos = list_videos(args.videos, args.filelist, args.root)
        syncnet_v2 = None if args.no_lse else str(resolve("syncnet_v2", args.syncnet_v2))
        config = EvalConfig(
            syncnet_v2, args.expert, args.vshift, 20, args.device,
            DetectConfig(box=tuple(args.box) if args.box else None), args.crop, args.detector_checkpoint,
        )  # fmt: skip
        report = evaluate_all(videos, config, args.quiet)
    except LipSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return write_report(report, args.out)


def write_report(report: dict, out: str | None) -> int:
    """Print the mean scores, write the whole ``report`` as JSON to ``out`` when given; exit code 0."""
    if out:
        Path(out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report["mean"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
