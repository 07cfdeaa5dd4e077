"""Training on LRS2-layout data: the dataset's official sampling rules, both trainers, checkpoints that
inference loads, exact resume, losses that fall, TensorBoard logs, mixed precision (CUDA only) and a
two-process torchrun run (CPU, gloo). Preprocessing: test_preprocess.py."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from pipeline.core.config_io import REPO_ROOT
from pipeline.core.errors import ConfigError, DeviceUnavailableError, InputError
from tests.lrs2_fixtures import make_preprocessed_set
from wav2lip import load_discriminator, load_generator, load_syncnet
from wav2lip.audio import load_wav, mel_window, melspectrogram
from wav2lip.face_input import faces_to_unit, syncnet_face_input
from wav2lip.models import Wav2Lip
from wav2lip.models.syncnet import SYNCNET_T
from wav2lip.training import distributed, loaders, loop, objectives, train_syncnet
from wav2lip.training import train_wav2lip as train
from wav2lip.training.config import (
    DataConfig,
    SyncNetTrainConfig,
    Wav2LipTrainConfig,
    final_syncnet_wt,
    global_batch,
    load_train_config,
)
from wav2lip.training.data import (
    ResumableSampler,
    SyncNetDataset,
    Wav2LipDataset,
    crop_mel,
    indiv_mel_starts,
    read_filelist,
    sync_mel_start,
)
from wav2lip.training.log import MetricLogger

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
    result = train_syncnet.train(sync_config(data_root, ckpt_dir, max_steps=2, log_interval=1))
    return ckpt_dir, result


def read_events(log_dir: Path) -> EventAccumulator:
    """Every scalar and image of the TensorBoard event files in ``log_dir``."""
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def scalar_series(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


# --- data --------------------------------------------------------------------------------------------


def test_window_rules_follow_the_official_expressions():
    assert sync_mel_start(0, 25) == 0  # HEAD: int(80 * (0 / 25)), no +1 since August 2020
    assert sync_mel_start(4, 25) == 12  # int(12.8)
    assert sync_mel_start(1, 30) == 2  # int(2.67)
    assert indiv_mel_starts(0, 25) is None  # official: start_frame_num - 2 < 0
    assert indiv_mel_starts(1, 25) == [0, 3, 6, 9, 12]
    assert indiv_mel_starts(2, 25) == [3, 6, 9, 12, 16]
    mel_t = np.arange(20 * 80, dtype=np.float32).reshape(20, 80)
    np.testing.assert_array_equal(crop_mel(mel_t, 4), mel_t[4:20].T)
    assert crop_mel(mel_t, 5) is None


def _official_sync_start(frame: int, fps: float) -> int:
    # color_syncnet_train.py / wav2lip_train.py at HEAD: crop_audio_window(spec, id) with the frame number
    # used as is: start_idx = int(80. * (start_frame_num / float(fps)))
    return int(80.0 * (frame / float(fps)))


def _official_indiv_starts(frame: int, fps: float) -> list[int] | None:
    # get_segmented_mels: start_frame_num = id + 1; None when start_frame_num - 2 < 0; frame i of
    # range(start, start + 5) uses crop_audio_window(spec, i - 2)
    start = frame + 1
    if start - 2 < 0:
        return None
    return [int(80.0 * ((i - 2) / float(fps))) for i in range(start, start + 5)]


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_windows_match_the_official_formulas_and_the_inference_chunks(fps):
    mel = np.random.default_rng(0).standard_normal((80, 400)).astype(np.float32)  # 5 s of mel
    for frame in range(61):
        assert sync_mel_start(frame, fps) == _official_sync_start(frame, fps), frame
        assert indiv_mel_starts(frame, fps) == _official_indiv_starts(frame, fps), frame
        # the expert judges frame i's window with exactly the chunk that drives frame i at inference
        np.testing.assert_array_equal(
            crop_mel(mel.T, sync_mel_start(frame, fps)), mel_window(mel, frame, fps)
        )


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
    assert (gen.syncnet_wt_initial, gen.syncnet_wt, gen.gan_syncnet_wt) == (0, 0.01, 0.03)
    assert (gen.sync_loss_threshold, gen.disc_wt) == (0.75, 0.07)
    assert final_syncnet_wt(gen) == 0.01 and final_syncnet_wt(dataclasses.replace(gen, gan=True)) == 0.03
    assert (gen.checkpoint_interval, gen.eval_interval, gen.data.img_size) == (3000, 3000, 96)
    assert (gen.eval_steps, gen.gan_eval_steps) == (700, 302)
    assert not sync.amp and not gen.amp  # the official recipe is fp32
    assert sync.batch_scope == gen.batch_scope == "global"


def test_batch_is_global_by_default_and_split_over_processes():
    sync = load_train_config(SyncNetTrainConfig)
    assert global_batch(sync, 1) == (64, 64) and global_batch(sync, 8) == (64, 8)
    per = dataclasses.replace(sync, batch_scope="per_process")
    assert global_batch(per, 8) == (512, 64)
    with pytest.raises(ConfigError, match="does not split over 3 processes"):
        global_batch(sync, 3)


def test_gan_evaluation_is_one_pass_capped():
    dataset = list(range(10))  # 10 utterances
    ctx = distributed.DistContext(0, 1, 0, torch.device("cpu"))
    assert loaders.eval_loader(dataset, 2, 302, ctx, 0, at_most_one_pass=True)[0] == 5
    assert loaders.eval_loader(dataset, 2, 3, ctx, 0, at_most_one_pass=True)[0] == 3
    assert loaders.eval_loader(dataset, 2, 700, ctx, 0)[0] == 700


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
    events = read_events(ckpt_dir)  # TensorBoard: the loss of every step (log_interval 1), float32
    assert scalar_series(events, "train/loss") == [
        (h["step"], pytest.approx(h["loss"], rel=1e-6)) for h in result.history
    ]
    assert scalar_series(events, "train/lr") == [(1, pytest.approx(1e-4)), (2, pytest.approx(1e-4))]
    assert not (ckpt_dir / "metrics.jsonl").exists()


def test_syncnet_resume_is_exact(syncnet_run, data_root, tmp_path):
    ckpt_dir, straight = syncnet_run
    shutil.copy(ckpt_dir / "checkpoint_step000000001.pth", tmp_path / "checkpoint_step000000001.pth")
    for events_file in ckpt_dir.glob("events.out.tfevents.*"):  # the first run's log went up to step 2
        shutil.copy(events_file, tmp_path / events_file.name)
    workers = {"num_workers": 2}  # worker processes draw exactly the samples the main process drew
    resumed = train_syncnet.train(sync_config(data_root, tmp_path, workers, max_steps=2, log_interval=1))
    assert resumed.history == straight.history[1:]  # same sample stream, same loss
    logged = scalar_series(read_events(tmp_path), "train/loss")
    assert [step for step, _ in logged] == [1, 2]  # step 2 of the first run is purged, not shown twice
    assert logged[1][1] == pytest.approx(resumed.history[0]["loss"], rel=1e-6)
    a = torch.load(ckpt_dir / "checkpoint_step000000002.pth", weights_only=True)
    b = torch.load(tmp_path / "checkpoint_step000000002.pth", weights_only=True)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for index, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), (index, name)
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]


LOSS_FALL_STEPS = 30
LOSS_FALL_LR = 3e-4  # 3x the official rate, for this short run only
LOSS_FALL_BATCH = 8  # the smallest batch whose BatchNorm statistics let the expert learn in 30 steps


def _expert_similarities(expert, folder: Path, shift: int) -> torch.Tensor:
    """Cosine similarity of every 5-frame window of ``folder`` starting at frame s with the sync mel
    window of frame ``s + shift`` (0: in sync; +-1: audio one frame late / early)."""
    mel_t = melspectrogram(load_wav(folder / "audio.wav")).T
    n_frames = len(list(folder.glob("*.jpg")))
    faces = torch.from_numpy(faces_to_unit(_faces(folder, range(n_frames)))).permute(1, 0, 2, 3)
    windows, mels = [], []
    for start in range(max(0, -shift), n_frames - SYNCNET_T + 1):
        mel = crop_mel(mel_t, sync_mel_start(start + shift, 25))
        if mel is not None:
            windows.append(syncnet_face_input(faces[:, start : start + SYNCNET_T].unsqueeze(0))[0])
            mels.append(torch.from_numpy(mel).unsqueeze(0))
    with torch.no_grad():  # batch statistics, as the expert runs while it judges the generator
        audio_emb, face_emb = expert.train()(torch.stack(mels), torch.stack(windows))
    return nn.functional.cosine_similarity(audio_emb, face_emb)


def test_syncnet_loss_falls_on_a_tiny_set_and_the_expert_rejects_one_frame_shifts(tmp_path):
    """30 expert steps on one 16-frame utterance: the loss falls from its starting level (~0.8) to
    below chance (ln 2: sim 0.5 for every pair), the batch accuracy is logged, and the expert scores
    the true alignment clearly above the audio shifted by one frame either way (a constant offset in
    the sync window would move the peak off 0)."""
    make_preprocessed_set(tmp_path / "data", n_train=1, n_val=1, n_frames=16)
    config = sync_config(
        tmp_path / "data", tmp_path / "ck", max_steps=LOSS_FALL_STEPS, lr=LOSS_FALL_LR,
        batch_size=LOSS_FALL_BATCH, checkpoint_interval=LOSS_FALL_STEPS,
    )  # fmt: skip
    result = train_syncnet.train(config)
    losses = np.array([h["loss"] for h in result.history])
    first, last = losses[:5].mean(), losses[-10:].mean()
    assert len(losses) == LOSS_FALL_STEPS
    assert last < first - 0.15 and last < np.log(2) - 0.1, np.round(losses, 3)
    assert all(0.0 <= h["accuracy"] <= 1.0 for h in result.history)
    expert = load_syncnet(result.checkpoints[-1], "cpu")
    folder = read_filelist(tmp_path / "data" / "train.txt", tmp_path / "data")[0]
    true, late, early = (_expert_similarities(expert, folder, s).mean().item() for s in (0, 1, -1))
    assert true > max(late, early) + 0.15, (true, late, early)


def test_expert_stuck_at_chance_warns_once_with_the_causes():
    watch = train_syncnet.StuckLossWatch(3)
    assert not watch.update(0.70, 1) and not watch.update(0.68, 2)
    assert not watch.update(0.60, 3)  # a clear step resets the count
    assert not watch.update(0.71, 4) and not watch.update(0.675, 5)
    with pytest.warns(
        UserWarning, match=r"ln 2 \(0\.693\) for 3 steps.*out of sync.*face crops.*learning rate"
    ):
        assert watch.update(0.6935, 6)
    assert not watch.update(0.69, 7)  # only once


def test_batch_accuracy_counts_similarities_on_the_right_side_of_one_half():
    audio = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    face = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 3.0]])  # cos 1, 0, 0.707, 0.316
    label = torch.tensor([[1.0], [1.0], [0.0], [0.0]])  # right, wrong, wrong, right
    assert train_syncnet.batch_accuracy(audio, face, label) == 0.5


# --- the generator -----------------------------------------------------------------------------------


def test_generator_step_loads_in_inference_and_resumes(syncnet_run, data_root, tmp_path):
    expert = syncnet_run[1].checkpoints[-1]
    config = gen_config(data_root, tmp_path, expert, max_steps=1, syncnet_wt_initial=0.01, log_interval=1)
    result = train.train(config)
    (step,) = result.history
    assert step["sync"] > 0 and step["total"] == pytest.approx(
        0.99 * step["l1"] + 0.01 * step["sync"], rel=1e-5
    )
    assert [e["step"] for e in result.evaluations] == [1]  # official: an evaluation after step 1
    final = tmp_path / "checkpoint_step000000001.pth"
    generator = load_generator(final)  # what inference uses
    assert isinstance(generator, Wav2Lip) and not generator.training
    _assert_tensorboard_log(tmp_path, step, result.evaluations[0])
    run = train.build_run(config, distributed.init_distributed("cpu"))  # resume: newest checkpoint in the dir
    saved = torch.load(final, weights_only=True)
    assert run.global_step == 1 and run.syncnet_wt == saved["train_state"]["syncnet_wt"] == 0.01
    restored = run.optimizer.state_dict()
    assert restored["param_groups"] == saved["optimizer"]["param_groups"]
    for index, state in saved["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(restored["state"][index][name], value), (index, name)


@pytest.mark.parametrize("gan", [False, True])
def test_generator_loss_is_the_official_weighted_sum(syncnet_run, data_root, tmp_path, gan):
    """The total loss recomputed by hand: L1 = mean |generated - target| (an L2 loss would fail), the
    expert's sync loss = mean -log cos(audio, face) for in-sync labels, and with the GAN
    (1 - 0.03 - 0.07) * L1 + 0.03 * sync + 0.07 * perceptual; without it 0.99 * L1 + 0.01 * sync."""
    config = gen_config(data_root, tmp_path, syncnet_run[1].checkpoints[-1], gan=gan)
    run = train.build_run(config, distributed.init_distributed("cpu"))
    run.syncnet_wt = final_syncnet_wt(config)
    folders = read_filelist(data_root / "train.txt", data_root)
    batch = next(
        iter(torch.utils.data.DataLoader(Wav2LipDataset(folders, config.data, seed=3), batch_size=2))
    )
    torch.manual_seed(0)
    generated, total, values = train.generator_losses(run, batch, config, torch.device("cpu"), training=True)
    x, _, mel, gt = batch
    l1 = (generated.detach() - gt).abs().mean().item()
    with torch.no_grad():
        audio_emb, face_emb = run.expert(mel, syncnet_face_input(generated.detach()))
        sync = (
            (-torch.log(nn.functional.cosine_similarity(audio_emb, face_emb).clamp(1e-12, 1.0))).mean().item()
        )
    assert values["l1"] == pytest.approx(l1, rel=1e-5) and values["sync"] == pytest.approx(sync, rel=1e-4)
    if gan:
        percep = values["perceptual"]  # the discriminator's "real" loss on the generated faces
        assert percep > 0
        expected = 0.9 * l1 + 0.03 * sync + 0.07 * percep
    else:
        assert "perceptual" not in values
        expected = 0.99 * l1 + 0.01 * sync
    assert total.item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    ("gan", "val_sync", "weight"), [(False, 0.74, 0.01), (True, 0.74, 0.03), (False, 0.76, 0.0)]
)
def test_sync_weight_switches_on_below_the_threshold(monkeypatch, tmp_path, gan, val_sync, weight):
    """The trainer's after-step hook with a stubbed evaluation: a validation sync loss below 0.75
    switches the weight from 0 to the official 0.01 (without the GAN) or 0.03 (with it), which the
    next step uses (its loss is the weighted sum above)."""
    monkeypatch.setattr(train, "evaluate", lambda run, dataset, config, ctx: {"l1": 0.1, "sync": val_sync})
    config = load_train_config(Wav2LipTrainConfig, None, {"gan": gan, "eval_interval": 5} | TINY)
    run = SimpleNamespace(global_step=5, syncnet_wt=0.0)
    ctx = distributed.DistContext(1, 2, 1, torch.device("cpu"))  # not rank 0: no checkpoint written
    result = loop.TrainResult(5, 0, [], [], [])
    session = loop.Session(config, ctx, run, None, MetricLogger(tmp_path, enabled=False), result)
    train.HOOKS.after_step(session, None)
    assert run.syncnet_wt == weight and result.evaluations == [{"step": 5, "l1": 0.1, "sync": val_sync}]
    run.global_step = 6  # no evaluation at step 6: the weight stays
    train.HOOKS.after_step(session, None)
    assert run.syncnet_wt == weight and len(result.evaluations) == 1


def _assert_tensorboard_log(log_dir: Path, step: dict, scores: dict) -> None:
    """Losses (sync included), validation scores and the sample grid of step 1 are in the event file."""
    events = read_events(log_dir)
    for name in ("l1", "sync", "total", "syncnet_wt"):
        assert scalar_series(events, f"train/{name}") == [(1, pytest.approx(step[name], rel=1e-6))], name
    for name in ("l1", "sync"):
        assert scalar_series(events, f"val/{name}") == [(1, pytest.approx(scores[name], rel=1e-6))], name
    (image,) = events.Images("samples")
    grid = cv2.imdecode(np.frombuffer(image.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)  # BGR
    assert image.step == 1 and grid.shape == (2 * 5 * 96, 4 * 96, 3)  # 2 clips x 5 frames, 4 columns
    jpeg = cv2.imread(str(log_dir / "samples" / "samples_step000000001.jpg"))
    again = cv2.imdecode(cv2.imencode(".jpg", grid)[1], cv2.IMREAD_COLOR)  # what the JPEG file holds
    assert np.array_equal(again, jpeg)  # the same grid, channels in the same order


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


def test_generator_command_passes_its_own_flags(data_root, tmp_path, capsys):
    missing = tmp_path / "no_expert.pth"
    argv = ["--data-root", str(data_root), "--checkpoint-dir", str(tmp_path / "ck"), "--device", "cpu",
            "--quiet", "--syncnet-checkpoint", str(missing)]  # fmt: skip
    assert train.main(argv) == 3  # the expert named by --syncnet-checkpoint is looked for (and missing)
    assert str(missing) in capsys.readouterr().err


# --- mixed precision -----------------------------------------------------------------------------------


def test_mixed_precision_is_cuda_only(data_root, tmp_path, monkeypatch):
    """``amp: true`` on the CPU changes nothing: no autocast, an inactive scaler, the same step."""
    cpu = torch.device("cpu")
    assert not objectives.make_scaler(cpu, True).is_enabled()
    with objectives.autocast(cpu, True):
        assert not torch.is_autocast_enabled("cpu")
    batch = next(loaders.make_loader(SyncNetDataset(read_filelist(data_root / "train.txt", data_root),
                                               DataConfig(data_root=str(data_root)), 0), 2, 0,
                                distributed.init_distributed("cpu"), 0))  # fmt: skip
    runs, losses = [], []
    for amp in (False, True):
        config = sync_config(data_root, tmp_path / str(amp), amp=amp)
        torch.manual_seed(0)
        runs.append(train_syncnet.build_run(config, distributed.init_distributed("cpu")))
        losses.append(train_syncnet.train_step(runs[-1], batch, cpu, amp=amp))
    assert losses[0] == losses[1] and not runs[1].scaler.is_enabled()
    for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters()):
        assert torch.equal(a, b)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailableError, match="no CUDA device"):
        distributed.init_distributed("cuda")
    assert distributed.init_distributed("auto").device == cpu


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed precision (float16 autocast) needs CUDA")
def test_mixed_precision_on_cuda_trains_and_resumes_the_scalers(syncnet_run, data_root, tmp_path):
    config = sync_config(data_root, tmp_path / "sync", device="cuda", amp=True, max_steps=3)
    result = train_syncnet.train(config)
    assert len(result.history) == 3 and all(np.isfinite(h["loss"]) for h in result.history)
    saved = torch.load(result.checkpoints[-1], weights_only=True)["train_state"]["scaler"]
    assert saved["scale"] > 0  # an active scaler saved its state (an inactive one saves {})
    run = train_syncnet.build_run(config, distributed.init_distributed("cuda"))
    assert run.scaler.is_enabled() and run.scaler.get_scale() == saved["scale"]
    assert next(run.model.parameters()).is_cuda and run.global_step == 3
    expert = syncnet_run[1].checkpoints[-1]
    gen = gen_config(data_root, tmp_path / "gen", expert, device="cuda", amp=True, gan=True, max_steps=2,
                     syncnet_wt_initial=0.01)  # fmt: skip
    history = train.train(gen).history
    assert all(np.isfinite(value) for h in history for value in h.values())
    assert all(h["sync"] > 0 and h["perceptual"] > 0 for h in history)
    for name in ("checkpoint_step000000002.pth", "disc_checkpoint_step000000002.pth"):
        assert torch.load(tmp_path / "gen" / name, weights_only=True)["train_state"]["scaler"]["scale"] > 0


# --- torchrun ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_write_one_checkpoint_and_log_the_global_batch(data_root, tmp_path):
    cfg = {"data": {"data_root": str(data_root), "num_workers": 0}, "checkpoint_dir": str(tmp_path / "ck")}
    cfg |= TINY | {"max_steps": 2, "checkpoint_interval": 2, "eval_interval": 2, "eval_steps": 1}
    cfg |= {"batch_size": 4}  # global: 2 per process
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
    events = read_events(tmp_path / "ck")
    assert scalar_series(events, "run/global_batch_size") == [(0, 4.0)]
    assert scalar_series(events, "run/process_batch_size") == [(0, 2.0)]
    assert scalar_series(events, "run/world_size") == [(0, 2.0)]
    assert scalar_series(events, "run/lr") == [(0, pytest.approx(1e-4))]
