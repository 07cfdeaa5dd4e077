"""LRS2 (or own footage in its layout) -> face crops per frame and 16 kHz audio, ready for training.

``python -m wav2lip.preprocess --data-root LRS2/main --out data/lrs2_preprocessed``: every
``<video_id>/<utterance>.mp4`` becomes ``<out>/<video_id>/<utterance>/<n>.jpg`` (the face of frame
n, cut by the same face tracking as inference: RetinaFace, the configured face choice, smoothing and
padding; or a fixed ``--box``) and ``audio.wav`` (mono 16 kHz PCM). Work is parallel over videos and
resumable: ``done.json`` is written last in each finished folder, and finished folders are skipped.
An utterance with a frame without a face gets ``failed.json`` instead, is listed in
``preprocess_report.json`` and is left out of the file lists (it would give broken 5-frame windows).

``--official-crops`` cuts as the official ``preprocess.py`` does: every frame detected on its own at
full resolution, the first (best-scored) box taken, no smoothing, no padding, and a frame without a
face is only left out (its ``<n>.jpg`` is missing; windows across the gap are never drawn). With
``--detector s3fd`` the detector is the official one too (S3FD, keep score 0.5, fed RGB as the
official batch path does); without it RetinaFace finds the boxes. The detector weights come from
``--detector-checkpoint`` or ``weights/`` (the manifest file of ``--detector``). Which method and
detector made the crops is recorded in every ``done.json`` (``"crops"``, ``"detector"``) and in
``<out>/crops.json``; one output folder holds one of each, and training refuses file lists that mix them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import subprocess
import sys
import warnings
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from pipeline.core import ffmpeg
from pipeline.core.config_io import WEIGHTS_DIR
from pipeline.core.device_names import DEVICE_HELP, device_argument
from pipeline.core.devices import choose_device
from pipeline.core.errors import ConfigError, FFmpegError, InputError, LipSyncError, NoFaceError
from pipeline.core.media import FrameSize, VideoReader, read_first_frame
from pipeline.core.types import FaceBox
from pipeline.core.weight_store import resolve
from pipeline.faces.config import DetectConfig
from pipeline.faces.detector import DETECTOR_MODELS, Detector, load_detector, track_faces
from pipeline.faces.s3fd_boxes import FACE_SCORE as S3FD_FACE_SCORE
from pipeline.faces.tracking import FaceTrack
from wav2lip.audio import SAMPLE_RATE_HZ
from wav2lip.training.filelists import make_filelists

VIDEO_FPS = 25.0  # frames per second of LRS2 (and of the training data)
DONE_MARKER = "done.json"  # written last: the folder is complete
FAILED_MARKER = "failed.json"  # the utterance cannot be used (why is inside)
REPORT_FILE = "preprocess_report.json"
JPEG_QUALITY = 95  # OpenCV's default JPEG quality, stated explicitly
DECODE_BATCH = 32  # frames per decoded batch
CROPS_FILE = "crops.json"  # {"crops": method, "detector": name} of the whole output folder
CROP_METHODS = ("tracked", "official")  # ours (smoothing, padding, whole utterance or none) | official
FIXED_BOX_DETECTOR = "box"  # the "detector" recorded for crops cut at a fixed --box
OFFICIAL_MAX_SIDE = 1 << 30  # pixels: the official preprocessing detects on the full-size frame


@dataclass(frozen=True)
class PreprocessOptions:
    data_root: Path
    out_root: Path
    detect: DetectConfig = field(default_factory=DetectConfig)
    detector_checkpoint: str | None = None  # default: the manifest file of detect.model under weights_dir
    device: str = "auto"
    workers: int = 1
    retry_failed: bool = False
    quiet: bool = False
    crops: str = "tracked"  # one of CROP_METHODS
    weights_dir: Path = WEIGHTS_DIR

    @property
    def detector_name(self) -> str:
        return detector_name_of(self.detect)


def detector_name_of(detect: DetectConfig) -> str:
    """What finds the faces, as recorded with the crops: ``detect.model``, or "box" with a fixed box."""
    return FIXED_BOX_DETECTOR if detect.box is not None else detect.model


def official_detect(detect: DetectConfig) -> DetectConfig:
    """``detect`` as the official preprocessing detects: frame by frame at full resolution, no
    smoothing, no padding."""
    return dataclasses.replace(
        detect, nosmooth=True, smooth_window=1, pads=(0, 0, 0, 0), detect_max_side=OFFICIAL_MAX_SIDE
    )


def record_crop_method(out_root: Path, method: str, detector: str) -> None:
    """Write ``<out_root>/crops.json``; ConfigError when the folder already holds crops of another
    method or detector."""
    path = Path(out_root) / CROPS_FILE
    wanted = {"crops": method, "detector": detector}
    if path.is_file():
        earlier = json.loads(path.read_text(encoding="utf-8"))
        if {key: earlier.get(key) for key in wanted} != wanted:
            raise ConfigError(
                f"{out_root} holds {earlier.get('crops')!r} crops made by {earlier.get('detector')!r}; "
                f"{method!r} crops made by {detector!r} must go to another --out folder"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted), encoding="utf-8")


@dataclass(frozen=True)
class UtteranceResult:
    name: str  # <video_id>/<utterance>
    ok: bool
    frames: int = 0
    reason: str = ""
    skipped: bool = False  # finished by an earlier run


# --- one utterance -------------------------------------------------------------------------------------


def find_videos(data_root: str | Path) -> list[Path]:
    """``<video_id>/<utterance>.mp4`` files under ``data_root``, sorted; InputError when there are none."""
    root = Path(data_root)
    if not root.is_dir():
        raise InputError(f"data root not found: {root}")
    videos = sorted(root.glob("*/*.mp4"))
    if not videos:
        raise InputError(f"no <video_id>/<utterance>.mp4 files under {root}")
    return videos


def utterance_name(video: Path) -> str:
    return f"{video.parent.name}/{video.stem}"


def crop_faces(frames: np.ndarray, track: FaceTrack, start: int) -> list[tuple[int, np.ndarray]]:
    """``(frame index, face crop)`` of each of ``frames (n, H, W, 3)`` (frames ``start .. start+n-1``
    of ``track``) that has a face."""
    crops = []
    for offset, frame in enumerate(frames):
        box = track.faces[start + offset]
        if box is not None:
            crops.append((start + offset, frame[box.top : box.bottom, box.left : box.right]))
    return crops


def extract_audio_args(video: Path, wav: Path) -> list[str]:
    """ffmpeg arguments writing the first audio stream of ``video`` to ``wav`` as mono 16 kHz PCM."""
    return [
        ffmpeg.ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-i", ffmpeg.file_arg(video), "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE_HZ),
        "-c:a", "pcm_s16le", "-f", "wav", ffmpeg.file_arg(wav),
    ]  # fmt: skip


def process_utterance(
    video: Path,
    out_dir: Path,
    detector: Detector | None,
    detect: DetectConfig,
    crops: str = "tracked",
    detector_name: str | None = None,
) -> UtteranceResult:
    """Write the crops, ``audio.wav`` and finally ``done.json`` (or ``failed.json``) for one video.
    ``crops="official"``: each frame's first box (:func:`official_track`), faceless frames left out;
    ``"tracked"``: ``detect``'s tracking, and a frame without a face fails the utterance.
    ``detector_name`` is recorded in ``done.json`` (default: :func:`detector_name_of` ``detect``)."""
    name = utterance_name(video)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FAILED_MARKER).unlink(missing_ok=True)
    detector_name = detector_name or detector_name_of(detect)
    try:
        first = read_first_frame(video, VIDEO_FPS)
        size = FrameSize(first.shape[1], first.shape[0])
        official = crops == "official"
        if official and detect.box is None:
            track = official_track(_detect_frames(video, size, detector))
        else:
            track = _track(video, size, detector, detect)
        if track.frames_without_face and not official:
            missing = [i for i, f in enumerate(track.faces) if f is None]
            raise NoFaceError(
                f"{len(missing)} of {len(track.faces)} frames have no face (first: frame {missing[0]})"
            )
        count = _write_crops(video, size, track, out_dir)
        _extract_audio(video, out_dir / "audio.wav")
    except LipSyncError as exc:
        return _fail(out_dir, name, str(exc))
    done = {"frames": count, "source": str(video), "crops": crops, "detector": detector_name}
    (out_dir / DONE_MARKER).write_text(json.dumps(done), encoding="utf-8")
    return UtteranceResult(name, True, count)


def official_track(per_frame: list[list[FaceBox]]) -> FaceTrack:
    """The official crop rule: each frame's first (best-scored) detected box as it is, ``None`` where
    a frame has none. NoFaceError when no frame has a face."""
    faces = tuple(found[0] if found else None for found in per_frame)
    missing = sum(face is None for face in faces)
    if missing == len(faces):
        raise NoFaceError(f"no face found in any of the {len(faces)} frames")
    return FaceTrack(faces=faces, frames_without_face=missing)


def _detect_frames(video: Path, size: FrameSize, detector: Detector | None) -> list[list[FaceBox]]:
    if detector is None:
        raise ValueError("official crops need a detector unless detect.box is set")
    per_frame: list[list[FaceBox]] = []
    with VideoReader(video, size, VIDEO_FPS, DECODE_BATCH) as reader:
        for frames in reader:
            per_frame.extend(detector.detect(frames))
    if not per_frame:
        raise InputError(f"{video} has no frames")
    return per_frame


def _track(video: Path, size: FrameSize, detector, detect: DetectConfig) -> FaceTrack:
    with VideoReader(video, size, VIDEO_FPS, DECODE_BATCH) as reader, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # frames without a face are reported by the caller
        return track_faces(reader, detector, detect, (size.height, size.width), progress=False)


def _write_crops(video: Path, size: FrameSize, track: FaceTrack, out_dir: Path) -> int:
    for stale in out_dir.glob("*.jpg"):
        stale.unlink()
    index = written = 0
    with VideoReader(video, size, VIDEO_FPS, DECODE_BATCH) as reader:
        for frames in reader:
            for n, crop in crop_faces(frames, track, index):
                cv2.imwrite(str(out_dir / f"{n}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                written += 1
            index += len(frames)
    if index != len(track.faces):
        raise InputError(f"{video} decoded to {index} frames the second time, {len(track.faces)} the first")
    return written


def _extract_audio(video: Path, wav: Path) -> None:
    result = subprocess.run(extract_audio_args(video, wav), capture_output=True, check=False)
    if result.returncode != 0 or not wav.is_file():
        raise FFmpegError(f"no audio extracted from {video}: {ffmpeg.essential_stderr(result.stderr)}")


def _fail(out_dir: Path, name: str, reason: str) -> UtteranceResult:
    (out_dir / FAILED_MARKER).write_text(json.dumps({"reason": reason}), encoding="utf-8")
    return UtteranceResult(name, False, reason=reason)


def previous_result(video: Path, out_dir: Path, retry_failed: bool) -> UtteranceResult | None:
    """The recorded outcome of an earlier run (None when the utterance must be processed)."""
    name = utterance_name(video)
    if (out_dir / DONE_MARKER).is_file():
        frames = json.loads((out_dir / DONE_MARKER).read_text(encoding="utf-8")).get("frames", 0)
        return UtteranceResult(name, True, int(frames), skipped=True)
    if (out_dir / FAILED_MARKER).is_file() and not retry_failed:
        reason = json.loads((out_dir / FAILED_MARKER).read_text(encoding="utf-8")).get("reason", "")
        return UtteranceResult(name, False, reason=reason, skipped=True)
    return None


# --- the whole data set --------------------------------------------------------------------------------


def preprocess(options: PreprocessOptions) -> list[UtteranceResult]:
    """Process every utterance under ``options.data_root`` not finished before; write the report."""
    options = _checked(options)
    videos = find_videos(options.data_root)
    record_crop_method(options.out_root, options.crops, options.detector_name)
    results, todo = [], []
    for video in videos:
        earlier = previous_result(video, _out_dir(options, video), options.retry_failed)
        if earlier is None:
            todo.append(video)
        else:
            results.append(earlier)
    bar = tqdm(
        total=len(videos), initial=len(results), desc="Preprocessing", unit="utt", disable=options.quiet
    )
    with bar:
        for result in _run_all(todo, options):
            results.append(result)
            bar.update(1)
    write_report(options.out_root, results)
    return sorted(results, key=lambda r: r.name)


def _checked(options: PreprocessOptions) -> PreprocessOptions:
    """``options`` validated before any work: the crop method, the device, the detector and its
    weights (the resolved checkpoint path filled in); official crops get :func:`official_detect`."""
    if options.crops not in CROP_METHODS:
        raise ConfigError(f"crops must be one of {', '.join(CROP_METHODS)}, got {options.crops!r}")
    choose_device(options.device)  # DeviceUnavailableError now rather than in every worker
    if options.crops == "official":
        options = dataclasses.replace(options, detect=official_detect(options.detect))
    if options.detect.box is not None:
        return options
    if options.detect.model not in DETECTOR_MODELS:
        raise ConfigError(
            f"--detector must be one of {', '.join(DETECTOR_MODELS)}, got {options.detect.model!r}"
        )
    checkpoint = resolve(options.detect.model, options.detector_checkpoint, options.weights_dir)
    return dataclasses.replace(options, detector_checkpoint=str(checkpoint))


def _out_dir(options: PreprocessOptions, video: Path) -> Path:
    return options.out_root / video.parent.name / video.stem


def _run_all(videos: list[Path], options: PreprocessOptions) -> Iterable[UtteranceResult]:
    if not videos:
        return
    if options.workers <= 1:
        detector = _load_detector(options, 0)
        for video in videos:
            yield process_utterance(
                video,
                _out_dir(options, video),
                detector,
                options.detect,
                options.crops,
                options.detector_name,
            )
        return
    counter = mp.get_context("spawn").Value("i", 0)
    with ProcessPoolExecutor(
        options.workers,
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(options, counter),
    ) as pool:
        futures = [pool.submit(_worker_task, video, _out_dir(options, video)) for video in videos]
        for future in as_completed(futures):
            yield future.result()


def _load_detector(options: PreprocessOptions, worker_index: int):
    if options.detect.box is not None:
        return None
    device = choose_device(options.device)
    if device == "cuda":  # plain "cuda": the workers share out the GPUs; "cuda:N" is kept as given
        device = f"cuda:{worker_index % max(1, torch.cuda.device_count())}"
    assert options.detector_checkpoint is not None  # filled in by _checked
    return load_detector(options.detect, options.detector_checkpoint, device)


_WORKER: dict = {}  # per worker process: its options and detector (set once by _init_worker)


def _init_worker(options: PreprocessOptions, counter) -> None:
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    torch.set_num_threads(1)
    _WORKER.update(options=options, detector=_load_detector(options, index))


def _worker_task(video: Path, out_dir: Path) -> UtteranceResult:
    options = _WORKER["options"]
    return process_utterance(
        video, out_dir, _WORKER["detector"], options.detect, options.crops, options.detector_name
    )


def write_report(out_root: Path, results: list[UtteranceResult]) -> Path:
    """``preprocess_report.json``: counts and every failed utterance with its reason."""
    failed = [
        {"utterance": r.name, "reason": r.reason} for r in sorted(results, key=lambda r: r.name) if not r.ok
    ]
    report = {"utterances": len(results), "ok": sum(r.ok for r in results), "failed": failed}
    out_root.mkdir(parents=True, exist_ok=True)
    path = out_root / REPORT_FILE
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return path


# --- command line --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wav2lip.preprocess", description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True, metavar="DIR", help="folder of <video_id>/<utt>.mp4")
    parser.add_argument("--out", required=True, metavar="DIR", help="preprocessed output folder")
    parser.add_argument("--detector-checkpoint", metavar="FILE",
                        help="detector weights (default: weights/<manifest file of --detector>)")  # fmt: skip
    parser.add_argument("--detector", choices=list(DETECTOR_MODELS),
                        help="default retinaface_resnet50; s3fd is the official preprocessing's")  # fmt: skip
    parser.add_argument("--box", nargs=4, type=int, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                        help="fixed face box in every frame instead of detection")  # fmt: skip
    parser.add_argument("--pads", nargs=4, type=int, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                        help="pixels added around detected boxes (default 0 10 0 0)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, help="frames per detector batch (default 8)")
    parser.add_argument("--workers", type=int, default=1, help="videos processed in parallel (processes)")
    parser.add_argument("--device", type=device_argument, default="auto", metavar="DEVICE", help=DEVICE_HELP)
    parser.add_argument("--retry-failed", action="store_true", help="process utterances that failed before")
    parser.add_argument("--make-filelists", type=float, metavar="TRAIN_FRACTION",
                        help="write a new random train/val split, e.g. 0.95 (own footage)")  # fmt: skip
    parser.add_argument("--filelists-from", metavar="DIR",
                        help="folder of LRS2's train/val/test.txt (default: --data-root/..)")  # fmt: skip
    parser.add_argument("--official-crops", action="store_true",
                        help="crop as the official preprocess.py: per frame the best box, no smoothing "
                        "or padding, faceless frames left out (--detector s3fd: its detector)")  # fmt: skip
    parser.add_argument("--quiet", action="store_true")
    return parser


def options_from_args(args: argparse.Namespace) -> PreprocessOptions:
    changes = {"box": tuple(args.box) if args.box else None}
    if args.detector:
        changes["model"] = args.detector
    if args.detector == "s3fd":
        changes["score_threshold"] = S3FD_FACE_SCORE  # face-alignment's keep score, not RetinaFace's
    if args.pads:
        changes["pads"] = tuple(args.pads)
    if args.batch_size:
        changes["batch_size"] = args.batch_size
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    return PreprocessOptions(
        Path(args.data_root), Path(args.out), DetectConfig(**changes), args.detector_checkpoint,
        args.device, args.workers, args.retry_failed, args.quiet,
        "official" if args.official_crops else "tracked", WEIGHTS_DIR,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = options_from_args(args)
        results = preprocess(options)
        source = Path(args.filelists_from) if args.filelists_from else options.data_root.parent
        usable = sorted(r.name for r in results if r.ok)
        lists = make_filelists(options.out_root, usable, args.make_filelists, source)
    except LipSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    if not args.quiet:
        failed = sum(not r.ok for r in results)
        print(f"{len(results) - failed} usable, {failed} failed (see {options.out_root / REPORT_FILE})")
        print("file lists: " + (", ".join(str(p) for p in lists) or "none written (use --make-filelists)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
