"""Training on LRS2-layout data: preprocessing, the dataset's official sampling rules, both trainers,
checkpoints that inference loads, exact resume, and a two-process torchrun run (CPU, gloo)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from pipeline.config import REPO_ROOT, DetectConfig
from pipeline.errors import ConfigError, InputError
from pipeline.faces import build_retinaface
from pipeline.types import FaceBox
from tests.conftest import seeded_state_dict
from tests.lrs2_fixtures import FACE_BOX, make_clip, make_preprocessed_set, make_raw_lrs2
from wav2lip import load_discriminator, load_generator, load_syncnet, preprocess, train, train_syncnet
from wav2lip import trainer_common as tc
from wav2lip.audio import load_wav, melspectrogram
from wav2lip.data import (
    ResumableSampler,
    SyncNetDataset,
    Wav2LipDataset,
    crop_mel,
    indiv_mel_starts,
    read_filelist,
    sync_mel_start,
)
from wav2lip.models import Wav2Lip
from wav2lip.train_config import DataConfig, SyncNetTrainConfig, Wav2LipTrainConfig, load_train_config

TINY = {"batch_size": 2, "device": "cpu", "amp": False, "quiet": True, "checkpoint_interval": 1000}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lrs2_pre")
    make_preprocessed_set(root, n_train=3, n_val=1, n_frames=24)
    return root


def sync_config(data_root: Path, ckpt_dir: Path, data: dict | None = None, **extra) -> SyncNetTrainConfig:
    data = {"data_root": str(data_root), "num_workers": 0} | (data or {})
    overrides = {"data": data, "checkpoint_dir": str(ckpt_dir), "eval_interval": 1000}
    return load_train_config(SyncNetTrainConfig, None, overrides | TINY | extra)


def gen_config(data_root: Path, ckpt_dir: Path, expert: Path, **extra) -> Wav2LipTrainConfig:
    overrides = {"data": {"data_root": str(data_root), "num_workers": 0}, "checkpoint_dir": str(ckpt_dir)}
    overrides |= {"syncnet_checkpoint": str(expert), "eval_steps": 1}
    return load_train_config(Wav2LipTrainConfig, None, overrides | TINY | extra)


@pytest.fixture(scope="module")
def syncnet_run(data_root, tmp_path_factory):
    """Two expert steps from scratch; checkpoints after steps 1 and 2."""
    ckpt_dir = tmp_path_factory.mktemp("syncnet_a")
    with pytest.warns(UserWarning, match="tensorboard is not installed"):
        result = train_syncnet.train(sync_config(data_root, ckpt_dir, max_steps=2, log_interval=1))
    return ckpt_dir, result


# --- data --------------------------------------------------------------------------------------------


def test_window_rules_follow_the_official_expressions():
    assert sync_mel_start(0, 25) == 3  # int(80 * (1 / 25)) = int(3.2)
    assert sync_mel_start(4, 25) == 16
    assert indiv_mel_starts(0, 25) is None  # official: start_frame_num - 2 < 0
    assert indiv_mel_starts(1, 25) == [0, 3, 6, 9, 12]
    assert indiv_mel_starts(2, 25) == [3, 6, 9, 12, 16]
    mel_t = np.arange(20 * 80, dtype=np.float32).reshape(20, 80)
    np.testing.assert_array_equal(crop_mel(mel_t, 4), mel_t[4:20].T)
    assert crop_mel(mel_t, 5) is None


def test_filelist_skips_missing_folders_and_reads_first_word(data_root, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("vid00/00001 NF\n\nnope/00009\nvid00/00002\n")
    with pytest.warns(UserWarning, match="1 of 3 utterances"):
        folders = read_filelist(listing, data_root)
    assert folders == [data_root / "vid00/00001", data_root / "vid00/00002"]
    listing.write_text("nope/1\n")
    with pytest.raises(InputError), pytest.warns(UserWarning):
        read_filelist(listing, data_root)


def _faces(folder: Path, ids) -> np.ndarray:
    return np.stack([cv2.resize(cv2.imread(str(folder / f"{i}.jpg")), (96, 96)) for i in ids])


def _find_window(x_bgr: np.ndarray, folders) -> tuple[Path, int]:
    """The utterance and first frame whose 5 faces equal ``x_bgr (5, H, W, 3)`` uint8."""
    for folder in folders:
        n = len(list(folder.glob("*.jpg")))
        for start in range(n - 4):
            if np.array_equal(_faces(folder, range(start, start + 5))[:, 96 - x_bgr.shape[1] :], x_bgr):
                return folder, start
    raise AssertionError("sample window not found in the data")


def _same(window: np.ndarray | None, mel: torch.Tensor) -> bool:
    return window is not None and torch.equal(torch.from_numpy(window), mel)


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    return np.rint(t.numpy() * 255).astype(np.uint8)


def test_syncnet_samples_follow_the_official_rules(data_root):
    folders = read_filelist(data_root / "train.txt", data_root)
    dataset = SyncNetDataset(folders, DataConfig(data_root=str(data_root)), seed=5)
    labels = set()
    for k in range(6):
        x, mel, y = dataset[k]
        assert x.shape == (15, 48, 96) and mel.shape == (1, 80, 16) and y.shape == (1,)
        lower = _to_uint8(x).reshape(5, 3, 48, 96).transpose(0, 2, 3, 1)  # frame t = channels 3t..3t+2
        folder, start = _find_window(lower, folders)
        labels.add(float(y))
        mel_t = melspectrogram(load_wav(folder / "audio.wav")).T
        n = len(list(folder.glob("*.jpg")))
        owners = [r for r in range(n) if _same(crop_mel(mel_t, sync_mel_start(r, 25)), mel[0])]
        if float(y) == 1.0:
            assert start in owners  # the faces' own sync window
        else:
            assert any(r != start for r in owners)  # the sync window of the drawn frame, not of these faces
    assert labels == {0.0, 1.0}
    again = SyncNetDataset(folders, DataConfig(data_root=str(data_root)), seed=5)[3]  # e.g. another worker
    assert all(torch.equal(a, b) for a, b in zip(dataset[3], again))


def test_wav2lip_samples_follow_the_official_rules(data_root):
    folders = read_filelist(data_root / "train.txt", data_root)
    x, indiv, mel, gt = Wav2LipDataset(folders, DataConfig(data_root=str(data_root)), seed=1)[0]
    assert x.shape == (6, 5, 96, 96) and indiv.shape == (5, 1, 80, 16) and gt.shape == (3, 5, 96, 96)
    assert torch.equal(x[:3, :, :48], gt[:, :, :48]) and not x[:3, :, 48:].any()  # masked target
    folder, start = _find_window(_to_uint8(gt).transpose(1, 2, 3, 0), folders)
    ref_folder, ref_start = _find_window(_to_uint8(x[3:]).transpose(1, 2, 3, 0), [folder])
    assert ref_start != start
    mel_t = melspectrogram(load_wav(folder / "audio.wav")).T
    assert torch.equal(mel[0], torch.from_numpy(crop_mel(mel_t, sync_mel_start(start, 25))))
    for k, begin in enumerate(indiv_mel_starts(start, 25)):
        assert torch.equal(indiv[k, 0], torch.from_numpy(crop_mel(mel_t, begin)))


def test_sampler_resumes_the_stream_and_splits_ranks():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    full = take(ResumableSampler(0, batch_size=3), 12)
    assert full == list(range(12))
    assert take(ResumableSampler(2, batch_size=3), 6) == full[6:12]
    ranks = [take(ResumableSampler(1, 2, rank=r, world_size=2), 4) for r in (0, 1)]
    assert ranks == [[4, 5, 8, 9], [6, 7, 10, 11]]


# --- config ------------------------------------------------------------------------------------------


def test_yaml_defaults_are_the_official_hyper_parameters():
    sync = load_train_config(SyncNetTrainConfig)
    gen = load_train_config(Wav2LipTrainConfig)
    assert sync == SyncNetTrainConfig() and gen == Wav2LipTrainConfig()  # YAML files == dataclass defaults
    assert (sync.batch_size, sync.lr, sync.checkpoint_interval) == (64, 1e-4, 10000)
    assert (gen.batch_size, gen.lr, gen.gan_betas, gen.disc_lr) == (16, 1e-4, (0.5, 0.999), 1e-4)
    assert (gen.syncnet_wt_initial, gen.syncnet_wt, gen.sync_loss_threshold, gen.disc_wt) == (
        0,
        0.03,
        0.75,
        0.07,
    )
    assert (gen.checkpoint_interval, gen.eval_interval, gen.data.img_size) == (3000, 3000, 96)


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="unknown key config.bach_size"):
        load_train_config(SyncNetTrainConfig, None, {"bach_size": 2})
    with pytest.raises(ConfigError, match="must stay below 1"):
        load_train_config(Wav2LipTrainConfig, None, {"gan": True, "disc_wt": 0.99})
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: -1\n")
    with pytest.raises(ConfigError, match="lr must be positive"):
        load_train_config(SyncNetTrainConfig, bad)


# --- the expert --------------------------------------------------------------------------------------


def test_syncnet_checkpoints_use_the_official_layout(syncnet_run):
    ckpt_dir, result = syncnet_run
    assert [p.name for p in result.checkpoints] == [
        "checkpoint_step000000001.pth",
        "checkpoint_step000000002.pth",
    ]
    raw = torch.load(result.checkpoints[-1], weights_only=True)
    assert {"state_dict", "optimizer", "global_step", "global_epoch", "config"} <= set(raw)
    assert raw["global_step"] == 2 and raw["config"]["batch_size"] == 2
    expert = load_syncnet(result.checkpoints[-1])  # the loader inference and training use
    assert torch.equal(
        expert.state_dict()["face_encoder.0.conv_block.0.weight"],
        raw["state_dict"]["face_encoder.0.conv_block.0.weight"],
    )
    logged = [json.loads(line) for line in (ckpt_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["train/loss"]) for r in logged] == [(h["step"], h["loss"]) for h in result.history]


def test_syncnet_resume_is_exact(syncnet_run, data_root, tmp_path):
    ckpt_dir, straight = syncnet_run
    shutil.copy(ckpt_dir / "checkpoint_step000000001.pth", tmp_path / "checkpoint_step000000001.pth")
    workers = {"num_workers": 2}  # worker processes draw exactly the samples the main process drew
    with pytest.warns(UserWarning, match="tensorboard"):
        resumed = train_syncnet.train(sync_config(data_root, tmp_path, workers, max_steps=2))
    assert resumed.history == straight.history[1:]  # same sample stream, same loss
    a = torch.load(ckpt_dir / "checkpoint_step000000002.pth", weights_only=True)
    b = torch.load(tmp_path / "checkpoint_step000000002.pth", weights_only=True)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for index, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), (index, name)
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]


# --- the generator -----------------------------------------------------------------------------------


def test_generator_step_loads_in_inference_and_resumes(syncnet_run, data_root, tmp_path):
    expert = syncnet_run[1].checkpoints[-1]
    config = gen_config(data_root, tmp_path, expert, max_steps=1, syncnet_wt_initial=0.01)
    with pytest.warns(UserWarning, match="tensorboard"):
        result = train.train(config)
    (step,) = result.history
    assert step["sync"] > 0 and step["total"] == pytest.approx(
        0.99 * step["l1"] + 0.01 * step["sync"], rel=1e-5
    )
    assert [e["step"] for e in result.evaluations] == [1]  # official: an evaluation after step 1
    final = tmp_path / "checkpoint_step000000001.pth"
    generator = load_generator(final)  # what inference uses
    assert isinstance(generator, Wav2Lip) and not generator.training
    assert (tmp_path / "samples" / "samples_step000000001.jpg").is_file()
    run = train.build_run(config, tc.init_distributed("cpu"))  # resume: newest checkpoint in the dir
    saved = torch.load(final, weights_only=True)
    assert run.global_step == 1 and run.syncnet_wt == saved["train_state"]["syncnet_wt"] == 0.01
    restored = run.optimizer.state_dict()
    assert restored["param_groups"] == saved["optimizer"]["param_groups"]
    for index, state in saved["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(restored["state"][index][name], value), (index, name)


def test_gan_training_from_an_official_layout_checkpoint_lowers_the_loss(syncnet_run, data_root, tmp_path):
    """Four GAN steps (batch 1, official learning rates) continuing a released-style file (DataParallel
    ``module.`` keys, its own step count): the L1 loss falls on the tiny set."""
    torch.manual_seed(3)
    start = Wav2Lip()
    official = {"state_dict": {f"module.{k}": v for k, v in start.state_dict().items()},
                "optimizer": None, "global_step": 7, "global_epoch": 2}  # fmt: skip
    torch.save(official, tmp_path / "wav2lip_gan.pth")
    expert = syncnet_run[1].checkpoints[-1]
    config = gen_config(
        data_root, tmp_path / "run", expert, gan=True, max_steps=11, batch_size=1,
        checkpoint=str(tmp_path / "wav2lip_gan.pth"),
    )  # fmt: skip
    with pytest.warns(UserWarning, match="tensorboard"):
        result = train.train(config)
    assert [h["step"] for h in result.history] == list(range(8, 12))
    assert all({"perceptual", "disc_real", "disc_fake"} <= set(h) for h in result.history)
    l1 = [h["l1"] for h in result.history]
    assert l1[-1] < 0.85 * l1[0] and l1[-1] < l1[1], l1
    assert result.evaluations == []  # the GAN script evaluates only every eval_interval steps
    names = sorted(p.name for p in (tmp_path / "run").glob("*.pth"))
    assert names == ["checkpoint_step000000011.pth", "disc_checkpoint_step000000011.pth"]
    load_discriminator(tmp_path / "run" / names[1])
    assert torch.load(tmp_path / "run" / names[0], weights_only=True)["global_step"] == 11


# --- torchrun ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_write_one_checkpoint(data_root, tmp_path):
    cfg = {"data": {"data_root": str(data_root), "num_workers": 0}, "checkpoint_dir": str(tmp_path / "ck")}
    cfg |= TINY | {"max_steps": 2, "checkpoint_interval": 2, "eval_interval": 2, "eval_steps": 1}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    args = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
            "-m", "wav2lip.train_syncnet", "--config", str(tmp_path / "cfg.yaml")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    files = sorted(p.name for p in (tmp_path / "ck").iterdir() if p.suffix == ".pth")
    assert files == ["checkpoint_step000000001.pth", "checkpoint_step000000002.pth"]  # rank 0 only
    raw = torch.load(tmp_path / "ck" / files[-1], weights_only=True)
    assert raw["global_step"] == 2 and raw["global_epoch"] == (2 * 2 * 2) // 3
    assert not any(k.startswith("module.") for k in raw["state_dict"])


# --- preprocessing -----------------------------------------------------------------------------------


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
    lists = preprocess.split_filelists([r.name for r in results if r.ok], 0.5)
    assert lists == {"train": ["vidC/00002"], "val": []}


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
    written = preprocess.make_filelists(out, results, None, tmp_path)
    assert [p.name for p in written] == ["train.txt", "val.txt", "test.txt"]
    assert (out / "train.txt").read_text() == "v1/00001\nv2/00001\n"
    assert (out / "val.txt").read_text() == "" and (out / "test.txt").read_text() == "v4/00002\n"


def test_preprocess_needs_a_detector_or_a_box(tmp_path):
    make_raw_lrs2(tmp_path / "main", {"vidE": 1}, n_frames=8)
    assert (
        preprocess.main(["--data-root", str(tmp_path / "main"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    )
