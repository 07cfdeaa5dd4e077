"""LRS2 preprocessing: the faces + audio layout, skipping finished work, faceless frames, the detector
path and the official file lists (synthetic clips, CPU)."""

from __future__ import annotations

import json
import time

import cv2
import pytest
import torch

from pipeline.core.errors import ConfigError, InputError
from pipeline.core.types import FaceBox
from pipeline.faces.config import DetectConfig
from pipeline.faces.detector import build_retinaface
from tests.conftest import seeded_state_dict
from tests.lrs2_fixtures import FACE_BOX, make_clip, make_raw_lrs2
from wav2lip.audio import load_wav
from wav2lip.training import filelists, preprocess
from wav2lip.training.data import crop_method


def test_preprocess_writes_the_layout_and_skips_finished_work(tmp_path):
    raw = tmp_path / "LRS2" / "main"
    make_raw_lrs2(raw, {"vidA": 2, "vidB": 1}, n_frames=20)
    out = tmp_path / "pre"
    box = [str(v) for v in FACE_BOX]
    argv = ["--data-root", str(raw), "--out", str(out), "--box", *box, "--make-filelists", "0.6", "--quiet"]
    assert preprocess.main(argv) == 0
    folder = out / "vidA" / "00001"
    assert sorted(int(p.stem) for p in folder.glob("*.jpg")) == list(range(20))
    assert cv2.imread(str(folder / "0.jpg")).shape == (96, 96, 3)
    samples = load_wav(folder / "audio.wav")
    assert abs(len(samples) / 16000 - 0.8) < 0.03
    names = (out / "train.txt").read_text().split() + (out / "val.txt").read_text().split()
    assert sorted(names) == ["vidA/00001", "vidA/00002", "vidB/00001"] and len(names) == 3
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix != ".json"}
    time.sleep(0.05)
    results = preprocess.preprocess(
        preprocess.PreprocessOptions(raw, out, DetectConfig(box=tuple(FACE_BOX)), quiet=True)
    )
    assert all(r.skipped and r.ok for r in results)
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


class _BrightnessDetector:
    """Finds a face at FACE_BOX in frames whose face area is not plain grey (a scripted detector)."""

    def detect(self, frames):
        top, bottom, left, right = FACE_BOX
        found = [frame[top:bottom, left:right].std() > 5 for frame in frames]
        return [[FaceBox(top, bottom, left, right, None, 0.99)] if f else [] for f in found]


def test_utterance_with_faceless_frames_is_reported_and_left_out(tmp_path):
    bad = make_clip(tmp_path / "main" / "vidC" / "00001.mp4", 20, seed=3, blank_frames=(7, 8))
    good = make_clip(tmp_path / "main" / "vidC" / "00002.mp4", 20, seed=4)
    out = tmp_path / "pre"
    cfg = DetectConfig(nosmooth=True, pads=(0, 0, 0, 0))
    results = [
        preprocess.process_utterance(v, out / "vidC" / v.stem, _BrightnessDetector(), cfg)
        for v in (bad, good)
    ]
    assert [r.ok for r in results] == [False, True]
    assert "2 of 20 frames have no face (first: frame 7)" in results[0].reason
    assert (out / "vidC/00001/failed.json").is_file() and not (out / "vidC/00001/done.json").exists()
    report = json.loads(preprocess.write_report(out, results).read_text())
    assert report["failed"] == [{"utterance": "vidC/00001", "reason": results[0].reason}]
    lists = filelists.split_filelists([r.name for r in results if r.ok], 0.5)
    assert lists == {"train": ["vidC/00002"], "val": []}


def test_official_crops_skip_only_faceless_frames_unpadded_and_are_recorded(tmp_path):
    clip = make_clip(tmp_path / "main" / "vidC" / "00001.mp4", 20, seed=3, blank_frames=(7, 8))
    out = tmp_path / "pre" / "vidC" / "00001"
    detect = DetectConfig()  # ours: smoothing and the 10-px bottom pad, which official crops drop
    result = preprocess.process_utterance(clip, out, _BrightnessDetector(), detect, crops="official")
    assert result.ok and result.frames == 18
    assert sorted(int(p.stem) for p in out.glob("*.jpg")) == [i for i in range(20) if i not in (7, 8)]
    top, bottom, left, right = FACE_BOX
    assert cv2.imread(str(out / "0.jpg")).shape == (bottom - top, right - left, 3)  # no padding
    assert json.loads((out / "done.json").read_text())["crops"] == "official"
    tracked = tmp_path / "pre2" / "vidC" / "00002"
    good = make_clip(tmp_path / "main" / "vidC" / "00002.mp4", 20, seed=4)
    assert preprocess.process_utterance(good, tracked, _BrightnessDetector(), detect).ok
    assert cv2.imread(str(tracked / "0.jpg")).shape == (bottom - top + 10, right - left, 3)
    with pytest.raises(InputError, match="mix face crops"):
        crop_method([out, tracked])
    assert crop_method([out]) == "official"


def test_one_output_folder_holds_one_crop_method(tmp_path):
    preprocess.record_crop_method(tmp_path, "tracked", "retinaface_resnet50")
    preprocess.record_crop_method(tmp_path, "tracked", "retinaface_resnet50")
    with pytest.raises(ConfigError, match="holds 'tracked' crops made by 'retinaface_resnet50'"):
        preprocess.record_crop_method(tmp_path, "official", "retinaface_resnet50")
    with pytest.raises(ConfigError, match="'tracked' crops made by 's3fd' must go to another"):
        preprocess.record_crop_method(tmp_path, "tracked", "s3fd")
    options = preprocess.options_from_args(
        preprocess.build_parser().parse_args(["--data-root", "x", "--out", "y", "--official-crops"])
    )
    assert options.crops == "official" and options.detector_name == "retinaface_resnet50"
    s3fd = preprocess.options_from_args(
        preprocess.build_parser().parse_args(["--data-root", "x", "--out", "y", "--detector", "s3fd"])
    )
    assert s3fd.detector_name == "s3fd" and s3fd.detect.score_threshold == 0.5  # face-alignment's
    assert options.detect.score_threshold == 0.8  # RetinaFace keeps its own


def test_preprocess_runs_the_retinaface_detector(tmp_path):
    """The detector path end to end with a seeded RetinaFace checkpoint: no face -> reported."""
    network = build_retinaface("mobile0.25")
    torch.save(seeded_state_dict(network, seed=1), tmp_path / "detection_mobilenet0.25_Final.pth")
    make_raw_lrs2(tmp_path / "main", {"vidD": 1}, n_frames=8)
    detect = DetectConfig(model="retinaface_mobile0.25", score_threshold=0.999)
    options = preprocess.PreprocessOptions(
        tmp_path / "main", tmp_path / "pre", detect, str(tmp_path / "detection_mobilenet0.25_Final.pth"),
        device="cpu", quiet=True,
    )  # fmt: skip
    (result,) = preprocess.preprocess(options)
    assert not result.ok and "face" in result.reason
    assert json.loads((tmp_path / "pre" / "preprocess_report.json").read_text())["ok"] == 0


def test_official_filelists_are_filtered_to_usable_utterances(tmp_path):
    (tmp_path / "train.txt").write_text("v1/00001\nv1/00002\nv2/00001\n")
    (tmp_path / "val.txt").write_text("v3/00001\n")
    (tmp_path / "test.txt").write_text("v4/00001 NF\nv4/00002 MV\n")
    results = [
        preprocess.UtteranceResult(n, n != "v1/00002")
        for n in ("v1/00001", "v1/00002", "v2/00001", "v4/00002")
    ]
    out = tmp_path / "pre"
    out.mkdir()
    written = filelists.make_filelists(out, sorted(r.name for r in results if r.ok), None, tmp_path)
    assert [p.name for p in written] == ["train.txt", "val.txt", "test.txt"]
    assert (out / "train.txt").read_text() == "v1/00001\nv2/00001\n"
    assert (out / "val.txt").read_text() == "" and (out / "test.txt").read_text() == "v4/00002\n"


@pytest.mark.parametrize(
    "detector, file", [("retinaface_resnet50", "detection_Resnet50_Final.pth"), ("s3fd", "s3fd.pth")]
)
def test_missing_detector_weights_are_one_line_with_the_fetch_command(
    tmp_path, monkeypatch, capsys, detector, file
):
    make_raw_lrs2(tmp_path / "main", {"vidE": 1}, n_frames=8)
    monkeypatch.setattr(preprocess, "WEIGHTS_DIR", tmp_path / "weights")
    argv = ["--data-root", str(tmp_path / "main"), "--out", str(tmp_path / "o"), "--quiet"]
    assert preprocess.main([*argv, "--detector", detector, "--official-crops"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{detector} checkpoint (detect stage) not found: {tmp_path / 'weights' / file}" in err
    assert f"python -m pipeline.weights fetch {detector}" in err
    assert not (tmp_path / "o").exists()  # nothing written before the weights are found


class _TwoFaceDetector:
    """Per frame a best-scored small box that moves, and a larger one behind it; no face in the
    frames of ``blank``: the official rule takes the first box as it is."""

    def __init__(self, blank: tuple[int, ...]) -> None:
        self.blank, self.seen = blank, 0

    def first_box(self, n: int) -> FaceBox:
        return FaceBox(20 + n % 3, 70 + 2 * (n % 4), 40 + n % 5, 90 + n % 2, None, 0.99)

    def detect(self, frames):
        out = []
        for _ in frames:
            n, self.seen = self.seen, self.seen + 1
            out.append([] if n in self.blank else [self.first_box(n), FaceBox(0, 120, 0, 150, None, 0.7)])
        return out


def test_official_crops_are_each_frames_first_box_unsmoothed_unpadded(tmp_path):
    from pipeline.core.media import FrameSize, VideoReader

    clip = make_clip(tmp_path / "main" / "vidF" / "00001.mp4", 12, seed=5)
    out = tmp_path / "pre" / "vidF" / "00001"
    detector = _TwoFaceDetector(blank=(3, 4))
    result = preprocess.process_utterance(
        clip, out, detector, DetectConfig(model="s3fd"), crops="official", detector_name="s3fd"
    )
    assert result.ok and result.frames == 10
    assert sorted(int(p.stem) for p in out.glob("*.jpg")) == [i for i in range(12) if i not in (3, 4)]
    with VideoReader(clip, FrameSize(160, 128), preprocess.VIDEO_FPS, 32) as reader:
        frames = next(iter(reader))
    for n in (0, 5, 11):
        box = detector.first_box(n)
        crop = cv2.imread(str(out / f"{n}.jpg"))
        assert crop.shape == (box.height, box.width, 3)
        expected = frames[n, box.top : box.bottom, box.left : box.right].astype(float)
        assert abs(crop.astype(float) - expected).mean() < 3  # the same pixels, up to JPEG
    done = json.loads((out / "done.json").read_text())
    assert (done["crops"], done["detector"]) == ("official", "s3fd")


def test_training_refuses_folders_of_different_detectors(tmp_path):
    folders = []
    for name, detector in (("a", "s3fd"), ("b", "retinaface_resnet50"), ("c", "s3fd")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "done.json").write_text(
            json.dumps({"frames": 5, "crops": "official", "detector": detector})
        )
        folders.append(folder)
    assert crop_method([folders[0], folders[2]]) == "official"
    with pytest.raises(
        InputError, match="'official' crops by 'retinaface_resnet50'.*'official' crops by 's3fd'"
    ):
        crop_method(folders)
    old = tmp_path / "old"
    old.mkdir()
    (old / "done.json").write_text(
        json.dumps({"frames": 5, "crops": "official"})
    )  # before detectors were recorded
    with pytest.raises(InputError, match="'unrecorded'"):
        crop_method([folders[0], old])


def test_s3fd_official_crops_end_to_end(tmp_path, monkeypatch):
    """``--detector s3fd --official-crops`` with a seeded S3FD in the official layout (random weights
    whose face logits are raised so that every frame has boxes): each crop is the first box the
    detector reports above 0.5 for its frame, at full resolution, and the folder records s3fd."""
    from pipeline.faces.s3fd import S3FDDetector
    from pipeline.faces.s3fd_boxes import detections_to_faces
    from tests.weights_fixtures import WRAPPERS, seeded_layout_state_dict

    state = seeded_layout_state_dict("s3fd", seed=3)
    for key in state:
        if key.endswith("_mbox_conf.bias"):
            state[key][-1] += 2.0
    torch.save(WRAPPERS["s3fd"](state), tmp_path / "s3fd.pth")
    seen = []  # (frames, raw rows) of every detector call
    original = S3FDDetector.detect_raw

    def recording_detect_raw(self, frames):
        assert self.config.score_threshold == 0.5 and self.config.detect_max_side >= 160
        seen.append((frames.shape, original(self, frames)))
        return seen[-1][1]

    monkeypatch.setattr(S3FDDetector, "detect_raw", recording_detect_raw)
    make_raw_lrs2(tmp_path / "main", {"vidG": 1}, n_frames=3)
    out = tmp_path / "pre"
    argv = ["--data-root", str(tmp_path / "main"), "--out", str(out), "--detector", "s3fd",
            "--official-crops", "--detector-checkpoint", str(tmp_path / "s3fd.pth"), "--device", "cpu",
            "--quiet"]  # fmt: skip
    assert preprocess.main(argv) == 0
    folder = out / "vidG" / "00001"
    assert json.loads((folder / "done.json").read_text())["detector"] == "s3fd"
    assert json.loads((out / "crops.json").read_text()) == {"crops": "official", "detector": "s3fd"}
    assert [shape for shape, _ in seen] == [(3, 128, 160, 3)]  # full-size frames, one batch
    for n, rows in enumerate(seen[0][1]):
        first = detections_to_faces(rows, (128, 160))[0]
        assert cv2.imread(str(folder / f"{n}.jpg")).shape == (first.height, first.width, 3)
