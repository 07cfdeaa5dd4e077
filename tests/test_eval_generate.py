"""The LRS2 test protocol's generation step (wav2lip.eval.generate): official mel windows, one video
per pair with the right length and the audio of the audio source, a hard paste inside the face box."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.core.errors import InputError
from pipeline.core.media import FrameSize, VideoReader, decode_audio
from tests.lrs2_fixtures import FACE_BOX, FRAME, make_clip
from wav2lip.audio import melspectrogram
from wav2lip.eval import generate
from wav2lip.models import Wav2Lip


def test_official_mel_chunks_take_only_the_windows_that_fit():
    mel = np.arange(80 * 40, dtype=np.float32).reshape(80, 40)
    chunks = generate.official_mel_chunks(mel, 25)
    # starts int(3.2 i) while start + 16 <= 40: 0, 3, 6, ..., 22 (i = 7: 22.4 -> 22; i = 8: 25.6 -> 25 > 24)
    assert len(chunks) == 8
    np.testing.assert_array_equal(chunks[7], mel[:, 22:38])
    np.testing.assert_array_equal(chunks[1], mel[:, 3:19])
    assert len(generate.official_mel_chunks(mel[:, :15])) == 0


def test_pair_list_is_read_relative_to_the_data_root(tmp_path):
    for name in ("a/1", "b/2"):
        (tmp_path / f"{name}.mp4").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{name}.mp4").write_bytes(b"x")
    listing = tmp_path / "pairs.txt"
    listing.write_text("a/1 b/2\n\nb/2 a/1\n")
    pairs = generate.read_pairs(listing, tmp_path)
    assert [(p.index, p.audio_video.name, p.face_video.parent.name) for p in pairs] == [
        (0, "1.mp4", "b"),
        (1, "2.mp4", "a"),
    ]
    listing.write_text("a/1 c/9\n")
    with pytest.raises(InputError, match="c/9.mp4"):
        generate.read_pairs(listing, tmp_path)


def test_generation_writes_one_video_per_pair_with_the_audio_of_the_audio_source(tmp_path):
    data = tmp_path / "lrs2"
    make_clip(data / "v0" / "00001.mp4", n_frames=12, seed=1)
    make_clip(data / "v1" / "00001.mp4", n_frames=20, seed=2)
    (tmp_path / "pairs.txt").write_text("v0/00001 v1/00001\nv1/00001 v0/00001\n")
    pairs = generate.read_pairs(tmp_path / "pairs.txt", data)
    torch.manual_seed(0)
    model = Wav2Lip().eval()
    detect = generate.detect_config(FACE_BOX)
    written = generate.generate_all(model, pairs, tmp_path / "out", detect, None, "cpu")
    # pair 1: the 12-frame video is shorter than the 20-frame audio's windows -> skipped (official)
    assert [p.name for p in written] == ["0.mp4"]
    source = decode_audio(data / "v0" / "00001.mp4").samples
    n_windows = len(generate.official_mel_chunks(melspectrogram(source)))
    columns = 1 + len(source) // 200  # centred STFT, hop 200
    assert n_windows == sum(1 for i in range(100) if int(80 * i / 25) + 16 <= columns) >= 6
    size = FrameSize(FRAME[1], FRAME[0])
    with VideoReader(written[0], size, 25, batch_size=64) as reader:
        out_frames = np.concatenate(list(reader))
    with VideoReader(data / "v1" / "00001.mp4", size, 25, batch_size=64) as reader:
        face_frames = np.concatenate(list(reader))[:n_windows]
    assert len(out_frames) == n_windows
    top, bottom, left, right = FACE_BOX
    outside = np.ones(out_frames.shape[1:3], bool)
    outside[top:bottom, left:right] = False
    inside_change = np.abs(out_frames[:, ~outside].astype(int) - face_frames[:, ~outside]).mean()
    outside_change = np.abs(out_frames[:, outside].astype(int) - face_frames[:, outside]).mean()
    assert inside_change > 5 * max(outside_change, 0.5)  # only the face box is replaced (hard paste)
    audio = decode_audio(written[0]).samples
    assert abs(len(audio) - len(source)) <= 0.03 * 16000  # the whole source audio (AAC framing aside)
    n = min(len(audio), len(source)) - 2000
    assert np.corrcoef(audio[1000:n], source[1000:n])[0, 1] > 0.9


def test_evaluate_entry_dispatches_generate(tmp_path, capsys):
    from wav2lip.evaluate import entry

    code = entry(["generate", "--filelist", str(tmp_path / "none.txt"), "--data-root", str(tmp_path),
                  "--results-dir", str(tmp_path / "out")])  # fmt: skip
    assert code != 0 and "test pair list not found" in capsys.readouterr().err


def _syncnet_python_scores(model, frames_bgr: np.ndarray, samples: np.ndarray, vshift: int = 15):
    """A straight re-implementation of syncnet_python's SyncNetInstance.evaluate arithmetic: frames
    resized to 224, MFCCs of the int16 samples, min_length = min(frames, floor(samples / 640)),
    lastframe = min_length - 5 windows, distances to audio shifted by -vshift..vshift (zero-padded,
    eps 1e-6), mean per shift; LSE-D = min, LSE-C = median - min, offset = vshift - argmin."""
    import cv2
    import python_speech_features

    ints = np.clip(np.round(samples.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
    mfcc = np.transpose(python_speech_features.mfcc(ints, 16000)).astype(np.float32)
    video = np.stack([cv2.resize(f, (224, 224)) for f in frames_bgr]).astype(np.float32)
    lastframe = min(len(frames_bgr), len(samples) // 640) - 5
    lip_in = torch.stack([torch.from_numpy(video[v : v + 5]).permute(3, 0, 1, 2) for v in range(lastframe)])
    aud_in = torch.stack([torch.from_numpy(mfcc[:, 4 * v : 4 * v + 20])[None] for v in range(lastframe)])
    with torch.no_grad():
        lip, aud = model.forward_lip(lip_in).numpy(), model.forward_aud(aud_in).numpy()
    padded = np.concatenate([np.zeros((vshift, aud.shape[1])), aud, np.zeros((vshift, aud.shape[1]))])
    dists = np.array([[np.linalg.norm(lip[i] - padded[i + j] + 1e-6) for j in range(2 * vshift + 1)]
                      for i in range(lastframe)])  # fmt: skip
    mean = dists.mean(axis=0)
    return float(mean.min()), float(np.median(mean) - mean.min()), int(vshift - mean.argmin())


def test_lse_of_a_generated_video_matches_syncnet_pythons_arithmetic(tmp_path):
    from wav2lip.eval.evaluate import EvalConfig, evaluate_video
    from wav2lip.eval.lse_syncnet import SyncNetV2

    data = tmp_path / "lrs2"
    make_clip(data / "v0" / "00001.mp4", n_frames=12, seed=5)
    make_clip(data / "v1" / "00001.mp4", n_frames=14, seed=6)
    (tmp_path / "pairs.txt").write_text("v0/00001 v1/00001\n")
    torch.manual_seed(0)
    pairs = generate.read_pairs(tmp_path / "pairs.txt", data)
    (video,) = generate.generate_all(
        Wav2Lip().eval(), pairs, tmp_path / "out", generate.detect_config(FACE_BOX), None, "cpu"
    )
    torch.manual_seed(1)
    syncnet = SyncNetV2().eval()
    row = evaluate_video(video, EvalConfig(syncnet_v2_checkpoint="seeded"), {"syncnet_v2": syncnet})
    with VideoReader(video, FrameSize(FRAME[1], FRAME[0]), 25, batch_size=64) as reader:
        frames = np.concatenate(list(reader))
    lse_d, lse_c, offset = _syncnet_python_scores(syncnet, frames, decode_audio(video).samples)
    assert row["lse_d"] == pytest.approx(lse_d, rel=1e-4) and row["lse_c"] == pytest.approx(lse_c, abs=1e-4)
    assert row["offset"] == offset
