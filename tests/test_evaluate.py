"""LSE-D / LSE-C: SyncNet v2 in the syncnet_python layout, the offset search against hand computations,
and the evaluation command on a synthetic clip (seeded checkpoints, CPU)."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pipeline.core.errors import WeightsError, WrongModelError
from tests.conftest import seeded_state_dict
from tests.lrs2_fixtures import FACE_BOX, make_clip
from wav2lip.eval import evaluate
from wav2lip.eval.lse_syncnet import (
    SyncNetV2,
    embed,
    load_syncnet_v2,
    mfcc_features,
    to_int16_scale,
    usable_frames,
)
from wav2lip.models import SyncNet

# syncnet_python SyncNetModel.py, written out: (sequential index, weight shape) of each conv / linear,
# and (index, channels) of each batch norm.
AUDIO_CONVS = [(0, (64, 1, 3, 3)), (4, (192, 64, 3, 3)), (8, (384, 192, 3, 3)), (11, (256, 384, 3, 3)),
               (14, (256, 256, 3, 3)), (18, (512, 256, 5, 4))]  # fmt: skip
LIP_CONVS = [(0, (96, 3, 5, 7, 7)), (4, (256, 96, 1, 5, 5)), (8, (256, 256, 1, 3, 3)),
             (11, (256, 256, 1, 3, 3)), (14, (256, 256, 1, 3, 3)), (18, (512, 256, 1, 6, 6))]  # fmt: skip
HEAD_LINEARS = [(0, (512, 512)), (3, (1024, 512))]


def official_layout() -> dict[str, tuple[int, ...]]:
    """Every tensor of ``syncnet_v2.model`` (an old-PyTorch file: no ``num_batches_tracked``)."""
    layout = {}
    for prefix, convs in (("netcnnaud", AUDIO_CONVS), ("netcnnlip", LIP_CONVS)):
        for index, shape in convs:
            layout[f"{prefix}.{index}.weight"], layout[f"{prefix}.{index}.bias"] = shape, shape[:1]
            for name in ("weight", "bias", "running_mean", "running_var"):
                layout[f"{prefix}.{index + 1}.{name}"] = shape[:1]
    for prefix in ("netfcaud", "netfclip"):
        for index, shape in HEAD_LINEARS:
            layout[f"{prefix}.{index}.weight"], layout[f"{prefix}.{index}.bias"] = shape, shape[:1]
        for name in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{prefix}.1.{name}"] = (512,)
    return layout


def seeded_official_file(path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A seeded ``syncnet_v2.model`` look-alike: an OrderedDict in the legacy (pre-1.6, non-zip)
    serialisation the 2017 release uses."""
    gen = torch.Generator().manual_seed(seed)
    state = collections.OrderedDict()
    for name, shape in official_layout().items():
        if name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[name] = torch.randn(shape, generator=gen) * 0.05
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return state


def _bn(x, s, key):
    return F.batch_norm(
        x, s[f"{key}.running_mean"], s[f"{key}.running_var"], s[f"{key}.weight"], s[f"{key}.bias"]
    )


def reference_forward_aud(s, x):
    """SyncNetModel.S.forward_aud written with functional ops from the official layer arguments."""
    conv = lambda x, i, pad: F.conv2d(x, s[f"netcnnaud.{i}.weight"], s[f"netcnnaud.{i}.bias"], padding=pad)  # noqa: E731
    x = F.relu(_bn(conv(x, 0, 1), s, "netcnnaud.1"))
    x = F.max_pool2d(F.relu(_bn(conv(x, 4, 1), s, "netcnnaud.5")), (3, 3), (1, 2))
    x = F.relu(_bn(conv(x, 8, 1), s, "netcnnaud.9"))
    x = F.relu(_bn(conv(x, 11, 1), s, "netcnnaud.12"))
    x = F.max_pool2d(F.relu(_bn(conv(x, 14, 1), s, "netcnnaud.15")), (3, 3), (2, 2))
    x = F.relu(_bn(conv(x, 18, 0), s, "netcnnaud.19")).flatten(1)
    return _reference_head(s, "netfcaud", x)


def reference_forward_lip(s, x):
    """SyncNetModel.S.forward_lip written with functional ops from the official layer arguments."""
    conv = lambda x, i, stride, pad: F.conv3d(  # noqa: E731
        x, s[f"netcnnlip.{i}.weight"], s[f"netcnnlip.{i}.bias"], stride=stride, padding=pad
    )
    x = F.relu(_bn(conv(x, 0, (1, 2, 2), 0), s, "netcnnlip.1"))
    x = F.max_pool3d(x, (1, 3, 3), (1, 2, 2))
    x = F.relu(_bn(conv(x, 4, (1, 2, 2), (0, 1, 1)), s, "netcnnlip.5"))
    x = F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1))
    for i in (8, 11, 14):
        x = F.relu(_bn(conv(x, i, 1, (0, 1, 1)), s, f"netcnnlip.{i + 1}"))
    x = F.max_pool3d(x, (1, 3, 3), (1, 2, 2))
    x = F.relu(_bn(conv(x, 18, 1, 0), s, "netcnnlip.19")).flatten(1)
    return _reference_head(s, "netfclip", x)


def _reference_head(s, prefix, x):
    x = F.relu(_bn(F.linear(x, s[f"{prefix}.0.weight"], s[f"{prefix}.0.bias"]), s, f"{prefix}.1"))
    return F.linear(x, s[f"{prefix}.3.weight"], s[f"{prefix}.3.bias"])


# --- SyncNet v2 --------------------------------------------------------------------------------------


def test_syncnet_v2_matches_the_official_layout_and_computation(tmp_path):
    model_layout = {k: tuple(v.shape) for k, v in SyncNetV2().state_dict().items()}
    assert {k: v for k, v in model_layout.items() if "num_batches" not in k} == official_layout()
    state = seeded_official_file(tmp_path / "syncnet_v2.model")
    model = load_syncnet_v2(tmp_path / "syncnet_v2.model")
    assert not model.training
    mfcc = torch.randn(2, 1, 13, 20)
    frames = torch.rand(2, 3, 5, 224, 224) * 255
    with torch.no_grad():
        torch.testing.assert_close(model.forward_aud(mfcc), reference_forward_aud(state, mfcc))
        torch.testing.assert_close(model.forward_lip(frames), reference_forward_lip(state, frames))
        assert model.forward_lip(frames).shape == (2, 1024)


def test_syncnet_v2_refuses_other_files(tmp_path):
    state = seeded_official_file(tmp_path / "ok.model")
    state["netcnnaud.18.weight"] = torch.zeros(512, 256, 3, 3)
    torch.save(state, tmp_path / "bad.model")
    with pytest.raises(WrongModelError, match="1 mis-shaped"):
        load_syncnet_v2(tmp_path / "bad.model")
    torch.save(seeded_state_dict(SyncNet()), tmp_path / "expert.pth")
    with pytest.raises(WrongModelError, match="missing"):
        load_syncnet_v2(tmp_path / "expert.pth")
    torch.save(SyncNetV2(), tmp_path / "pickled_module.model")  # a whole pickled module, not a state dict
    with pytest.raises(WeightsError, match="refused by the safe loader"):
        load_syncnet_v2(tmp_path / "pickled_module.model")


def test_audio_features_and_windows():
    one_second = (0.3 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)).astype(np.float32)
    ints = to_int16_scale(one_second)
    assert ints.dtype == np.int16 and ints.max() == round(0.3 * 32768)
    mfcc = mfcc_features(ints)
    assert mfcc.shape == (13, 99)  # python_speech_features: 1 + ceil((16000 - 400) / 160) frames
    model = SyncNetV2().eval()
    lip, aud = embed(model, torch.rand(3, 9, 224, 224) * 255, mfcc[:, :40], batch_size=2)
    assert lip.shape == aud.shape == (4, 1024)  # min(9 frames, 40 // 4) - 5 windows


def test_window_count_is_syncnet_pythons_floor_of_samples_over_640():
    """12 frames of video, exactly 8 * 640 samples of audio: syncnet_python takes min(12, 8) - 5 = 3
    windows; the MFCC count (1 + ceil((5120 - 400) / 160) = 31, // 4 = 7) would give one fewer."""
    samples = (0.3 * np.sin(2 * np.pi * 300 * np.arange(8 * 640) / 16000)).astype(np.float32)
    mfcc = mfcc_features(to_int16_scale(samples))
    assert mfcc.shape[1] == 31
    model = SyncNetV2().eval()
    lip, aud = embed(model, torch.rand(3, 12, 224, 224) * 255, mfcc, batch_size=2, n_samples=len(samples))
    assert lip.shape == aud.shape == (3, 1024)
    assert (
        usable_frames(12, 8 * 640) == 8
        and usable_frames(12, 8 * 640 - 1) == 7
        and usable_frames(5, 10**6) == 5
    )


# --- the metric --------------------------------------------------------------------------------------


def test_lse_scores_match_a_hand_computation():
    rng = np.random.default_rng(0)
    lip = rng.normal(size=(20, 8)).astype(np.float32)
    aud = np.roll(lip, 2, axis=0) + 0.05 * rng.normal(size=(20, 8)).astype(np.float32)  # audio 2 frames late
    vshift = 4
    hand = np.zeros((20, 2 * vshift + 1))
    for i in range(20):
        for j in range(2 * vshift + 1):
            k = i + j - vshift
            other = aud[k] if 0 <= k < 20 else np.zeros(8, np.float32)
            hand[i, j] = np.linalg.norm(lip[i] - other)
    dists = evaluate.calc_pdist(torch.from_numpy(lip), torch.from_numpy(aud), vshift)
    np.testing.assert_allclose(dists.numpy(), hand, rtol=1e-4, atol=1e-4)
    scores = evaluate.scores_from_dists(dists, vshift)
    mean = hand.mean(axis=0)
    assert scores.offset == vshift - (vshift + 2) == -2
    assert scores.lse_d == pytest.approx(mean.min(), rel=1e-4)
    assert scores.lse_c == pytest.approx(np.median(mean) - mean.min(), rel=1e-4)


def test_expert_offset_search_matches_a_hand_computation():
    rng = np.random.default_rng(1)
    face = np.abs(rng.normal(size=(12, 6))).astype(np.float32)
    aud = np.roll(face, -1, axis=0)  # audio one frame early
    sims = evaluate.calc_psim(torch.from_numpy(face), torch.from_numpy(aud), vshift=3)
    for i, j in [(0, 0), (5, 3), (11, 6)]:
        k = i + j - 3
        other = aud[k] if 0 <= k < 12 else np.zeros(6)
        expected = (
            0.0 if not other.any() else face[i] @ other / np.linalg.norm(face[i]) / np.linalg.norm(other)
        )
        assert float(sims[i, j]) == pytest.approx(expected, abs=1e-6)
    scores = evaluate.expert_scores(sims, vshift=3)
    mean = sims.mean(0).numpy()
    assert scores["expert_offset"] == 3 - int(mean.argmax()) == 1
    assert scores["expert_sync"] == pytest.approx(mean[3])
    assert scores["expert_confidence"] == pytest.approx(mean.max() - np.sort(mean)[3])


def test_evaluate_command_scores_a_video(tmp_path):
    video = make_clip(tmp_path / "videos" / "clip.mp4", 12, seed=7)
    seeded_official_file(tmp_path / "syncnet_v2.model")
    torch.save({"state_dict": seeded_state_dict(SyncNet()), "optimizer": None, "global_step": 0,
                "global_epoch": 0}, tmp_path / "expert.pth")  # fmt: skip
    out = tmp_path / "scores.json"
    argv = ["--videos", str(tmp_path / "videos"), "--syncnet-v2", str(tmp_path / "syncnet_v2.model"),
            "--expert", str(tmp_path / "expert.pth"), "--crop", "box", "--box", *map(str, FACE_BOX),
            "--vshift", "3", "--device", "cpu", "--out", str(out), "--quiet"]  # fmt: skip
    assert evaluate.main(argv) == 0
    report = json.loads(out.read_text())
    (row,) = report["videos"]
    assert row["video"] == str(video) and row["frames"] == 12
    assert row["lse_c"] >= 0 and -3 <= row["offset"] <= 3 and -3 <= row["expert_offset"] <= 3
    assert 0.0 <= row["expert_sync"] <= 1.0
    assert report["mean"]["lse_d"] == pytest.approx(row["lse_d"])
    config = evaluate.EvalConfig(str(tmp_path / "syncnet_v2.model"), vshift=3, device="cpu", crop="box",
                                 detect=evaluate.DetectConfig(box=FACE_BOX))  # fmt: skip
    again = evaluate.evaluate_video(video, config, evaluate.load_eval_models(config))
    assert again["lse_d"] == pytest.approx(row["lse_d"]) and "expert_sync" not in again


def test_evaluate_command_reports_missing_inputs(tmp_path, capsys):
    assert evaluate.main(["--filelist", str(tmp_path / "none.txt"), "--quiet"]) == 2
    assert "file list not found" in capsys.readouterr().err
    (tmp_path / "list.txt").write_text("missing.mp4\n")
    assert evaluate.main(["--filelist", str(tmp_path / "list.txt"), "--quiet"]) == 2
    assert "video not found" in capsys.readouterr().err
