"""Wav2Lip audio features: decoding, the official mel spectrogram, per-frame mel windows."""

from __future__ import annotations

import subprocess
import warnings

import imageio_ffmpeg
import librosa
import numpy as np
import pytest
import soundfile

from pipeline.core.errors import AudioError, InputError
from wav2lip import audio

SR = audio.SAMPLE_RATE_HZ


def _tone(freq_hz: float, seconds: float = 1.0, amplitude: float = 0.5, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _reference_mel(wav: np.ndarray) -> np.ndarray:
    """The official recipe written out with numpy's FFT: an independent check of the librosa calls."""
    x = wav.astype(np.float64)
    emphasised = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])
    padded = np.pad(emphasised, 400, mode="reflect")  # centred frames, reflect padding (librosa 0.7)
    n_frames = 1 + len(wav) // 200
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)  # periodic Hann
    frames = np.stack([padded[i * 200 : i * 200 + 800] * window for i in range(n_frames)], axis=1)
    magnitude = np.abs(np.fft.rfft(frames, axis=0))
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ magnitude)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def _official_windows(mel: np.ndarray, fps: float) -> list[np.ndarray]:
    """The loop of the official inference.py, as the specification of the window rule."""
    windows, step, i = [], 80.0 / fps, 0
    while True:
        start = int(i * step)
        if start + 16 > mel.shape[1]:
            windows.append(mel[:, mel.shape[1] - 16 :])
            return windows
        windows.append(mel[:, start : start + 16])
        i += 1


@pytest.mark.parametrize("n_samples", [1, 199, 200, 801, 16000, 16199, 16200, 44100])
def test_mel_frame_count_follows_centred_stft(n_samples):
    wav = np.random.default_rng(0).uniform(-0.5, 0.5, n_samples).astype(np.float32)
    mel = audio.melspectrogram(wav)
    assert mel.shape == (80, 1 + n_samples // 200)
    assert mel.dtype == np.float32


def test_mel_matches_the_official_recipe():
    rng = np.random.default_rng(1)
    wav = (_tone(220) + 0.1 * rng.standard_normal(SR)).astype(np.float32) * 0.5
    mel = audio.melspectrogram(wav)
    np.testing.assert_allclose(mel, _reference_mel(wav), atol=1e-4)


def test_mel_range_is_clipped_to_four():
    noise = audio.melspectrogram(np.random.default_rng(2).uniform(-1, 1, SR).astype(np.float32))
    assert -4.0 <= noise.min() and noise.max() <= 4.0
    assert noise.std() > 0.1
    hot = audio.melspectrogram(_tone(3000, amplitude=8.0))  # float audio far above full scale
    assert hot.max() == 4.0  # clipped, not beyond


def test_silence_is_minus_four_without_nan():
    for wav in (np.zeros(SR, np.float32), np.full(SR, 1e-9, np.float32)):
        mel = audio.melspectrogram(wav)
        assert np.isfinite(mel).all()
        assert np.all(mel == -4.0)


@pytest.mark.parametrize("band", [8, 40, 70])
def test_pure_tone_peaks_in_its_mel_band(band):
    centres = librosa.mel_frequencies(n_mels=82, fmin=55, fmax=7600)[1:-1]  # band peaks in Hz
    mel = audio.melspectrogram(_tone(centres[band]))
    profile = mel[:, 2:-2].mean(axis=1)  # steady state, away from the padded ends
    assert int(np.argmax(profile)) == band
    assert profile[band] - np.median(profile) > 2.0  # a clear peak, not noise


def test_nan_and_empty_audio_are_audio_errors():
    wav = _tone(440)
    wav[100] = np.nan
    with pytest.raises(AudioError, match="1 NaN or infinite"):
        audio.melspectrogram(wav)
    with pytest.raises(AudioError, match="empty"):
        audio.melspectrogram(np.zeros(0, np.float32))
    with pytest.raises(AudioError, match="mono"):
        audio.melspectrogram(np.zeros((2, 100), np.float32))


# ---- decoding -------------------------------------------------------------------------------------


def test_decode_args_request_float_mono_at_the_rate():
    from pipeline.core.ffmpeg import decode_audio_args

    args = decode_audio_args("in put.m4a", 16000)
    assert args[args.index("-i") + 1].startswith("file:/") and args[args.index("-i") + 1].endswith(
        "in put.m4a"
    )
    assert args[args.index("-ar") + 1] == "16000"
    assert args[args.index("-ac") + 1] == "1"
    assert args[args.index("-af") + 1] == "aresample=16000:rematrix_maxval=1"
    assert args[args.index("-f") + 1] == "f32le"
    assert args[-1] == "pipe:1"


def test_load_wav_returns_16_bit_pcm_exactly(tmp_path):
    pcm = (np.random.default_rng(3).integers(-20000, 20000, 8000)).astype(np.int16)
    path = tmp_path / "speech.wav"
    soundfile.write(path, pcm, SR, subtype="PCM_16")
    wav = audio.load_wav(path)
    assert wav.dtype == np.float32
    np.testing.assert_array_equal(wav, pcm.astype(np.float32) / 32768.0)


def test_load_wav_averages_stereo_like_librosa(tmp_path):
    left, right = _tone(1000, amplitude=0.5), _tone(500, amplitude=0.3)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), SR, subtype="FLOAT")
    np.testing.assert_allclose(audio.load_wav(path), (left + right) / 2, atol=1e-6)


def test_load_wav_resamples(tmp_path):
    path = tmp_path / "tone44k.wav"
    soundfile.write(path, _tone(1000, sr=44100), 44100, subtype="FLOAT")
    wav = audio.load_wav(path)
    assert abs(len(wav) - SR) <= 2
    spectrum = np.abs(np.fft.rfft(wav[1000:9000]))
    assert abs(np.argmax(spectrum) * SR / 8000 - 1000) <= 2
    assert 0.48 < np.abs(wav[1000:-1000]).max() < 0.52


def _chirp(sr: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.8 * np.sin(2 * np.pi * (200 * t + 3500 * t**2))).astype(np.float32)  # 200 Hz .. 7.2 kHz


def test_load_wav_resamples_like_librosa_with_soxr(tmp_path):
    """The official features come from librosa.load(path, sr=16000) (soxr HQ); ffmpeg's default
    resampler differs by up to 0.08 on this chirp, ours must match librosa within 1e-3."""
    path = tmp_path / "chirp44k.wav"
    soundfile.write(path, _chirp(44100), 44100, subtype="PCM_16")
    reference, rate = librosa.load(path, sr=SR)
    ours = audio.load_wav(path)
    assert rate == SR and ours.shape == reference.shape == (16000,)
    assert np.abs(ours - reference).max() < 1e-3
    mel_gap = np.abs(audio.melspectrogram(ours) - audio.melspectrogram(reference)).max()
    assert mel_gap < 1e-2, mel_gap


def test_the_render_speech_is_resampled_like_librosa_too(tmp_path):
    """The render's speech (``pipeline.speech``) goes through the same soxr resampling as load_wav; the
    ffmpeg decode it used before misses librosa by far more than the 1e-3 allowed."""
    from pipeline.config import build_config
    from pipeline.core.media import decode_audio
    from pipeline.inputs import RenderInputs
    from pipeline.speech import speech_audio

    path = tmp_path / "chirp44k.wav"
    soundfile.write(path, _chirp(44100), 44100, subtype="PCM_16")
    reference, _ = librosa.load(path, sr=SR)
    inputs = RenderInputs(tmp_path / "face.mp4", False, tmp_path / "out.mp4", path, None)
    clip = speech_audio(build_config({}), inputs)
    assert clip.sample_rate_hz == SR and clip.samples.shape == reference.shape == (16000,)
    assert np.abs(clip.samples - reference).max() < 1e-3
    assert np.array_equal(clip.samples, audio.load_wav(path))
    assert np.abs(decode_audio(path).samples[:16000] - reference).max() > 1e-2  # ffmpeg's resampler


def test_source_rate_is_parsed_from_the_ffmpeg_banner():
    from pathlib import Path

    from pipeline.core.ffmpeg import parse_probe

    banner = (
        "Input #0, wav, from 'a.wav':\n  Duration: 00:00:01.00, bitrate: 1411 kb/s\n"
        "  Stream #0:0: Audio: pcm_s16le ([1][0][0][0] / 0x0001), 44100 Hz, 2 channels, s16, 1411 kb/s\n"
    )
    assert parse_probe(Path("a.wav"), banner).audio_sample_rate_hz == 44100
    assert parse_probe(Path("a.wav"), "Input #0, wav, from 'a.wav':\n").audio_sample_rate_hz is None


def test_load_wav_reads_compressed_audio(tmp_path):
    path = tmp_path / "tone.m4a"
    source = "sine=frequency=600:sample_rate=44100:duration=1"
    _ffmpeg_make(["-f", "lavfi", "-i", source, "-c:a", "aac", path])
    wav = audio.load_wav(path)
    assert abs(len(wav) - SR) < 0.05 * SR
    spectrum = np.abs(np.fft.rfft(wav[2000:10000]))
    assert abs(np.argmax(spectrum) * SR / 8000 - 600) <= 2


def test_load_wav_errors(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        audio.load_wav(tmp_path / "missing.wav")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="cannot decode"):
        audio.load_wav(garbage)
    silent_video = tmp_path / "video_only.mp4"
    _ffmpeg_make(["-f", "lavfi", "-i", "color=c=gray:s=32x32:d=0.2", "-c:v", "mpeg4", silent_video])
    with pytest.raises(AudioError, match="video_only.mp4"):
        audio.load_wav(silent_video)


def _ffmpeg_make(args: list) -> None:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *map(str, args)]
    subprocess.run(cmd, check=True, capture_output=True)


# ---- mel windows ----------------------------------------------------------------------------------


def _indexed_mel(columns: int) -> np.ndarray:
    """A mel whose every column holds its own index, so a window's first value is its start."""
    return np.tile(np.arange(columns, dtype=np.float32), (80, 1))


@pytest.mark.parametrize(
    ("fps", "first_starts"),
    [
        (25.0, [0, 3, 6, 9, 12, 16, 19, 22]),  # 3.2 mel frames per video frame
        (30.0, [0, 2, 5, 8, 10, 13, 16, 18]),  # 2.667
        (24.0, [0, 3, 6, 10, 13, 16, 20, 23]),  # 3.333
        (29.97, [0, 2, 5, 8, 10, 13, 16, 18]),  # 2.669
    ],
)
def test_window_starts_and_count(fps, first_starts):
    mel = _indexed_mel(100)
    windows = audio.mel_chunks(mel, fps)
    assert [int(w[0, 0]) for w in windows[:8]] == first_starts
    assert all(w.shape == (80, 16) and w.dtype == np.float32 for w in windows)
    fitting = sum(1 for i in range(1000) if int(i * 80.0 / fps) + 16 <= 100)
    assert len(windows) == fitting + 1  # every window that fits, then the last 16 columns
    np.testing.assert_array_equal(windows[-1], mel[:, -16:])


@pytest.mark.parametrize("fps", [25.0, 30.0, 24.0, 29.97, 30000 / 1001, 23.976, 60.0, 12.5, 7.0])
def test_windows_equal_the_official_loop(fps):
    for columns in [16, 17, 31, 32, 33, 81, 250, 1001]:
        mel = _indexed_mel(columns)
        official = _official_windows(mel, fps)
        assert audio.mel_window_count(columns, fps) == len(official)
        ours = audio.mel_chunks(mel, fps)
        assert all(np.array_equal(a, b) for a, b in zip(ours, official))
        k = len(official) // 2
        np.testing.assert_array_equal(audio.mel_window(mel, k, fps), official[k])


def test_short_mel_is_padded_with_silence():
    mel = audio.melspectrogram(_tone(440, seconds=0.05))  # 800 samples -> 5 columns
    assert mel.shape == (80, 5)
    windows = audio.mel_chunks(mel, 25.0)
    assert len(windows) == audio.mel_window_count(5, 25.0) >= 1
    np.testing.assert_array_equal(windows[0][:, :5], mel)
    assert np.all(windows[0][:, 5:] == audio.SILENCE_MEL_VALUE)


def test_window_index_and_fps_are_checked():
    mel = _indexed_mel(40)
    count = audio.mel_window_count(40, 25.0)
    with pytest.raises(IndexError):
        audio.mel_window(mel, count, 25.0)
    with pytest.raises(IndexError):
        audio.mel_window(mel, -1, 25.0)
    for bad_fps in (0, -25.0, float("nan"), "25"):
        with pytest.raises(InputError):
            audio.mel_window_count(40, bad_fps)
    with pytest.raises(AudioError):
        audio.mel_window_count(0, 25.0)


# ---- equality with librosa, which the official features were computed with --------------------------


def test_mel_filterbank_equals_librosa():
    import librosa

    reference = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    ours = audio._mel_basis()
    assert ours.shape == reference.shape == (80, 401)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("length", [150, 400, 401, 799, 16000, 2 * 4096 * 200 + 123])
def test_blockwise_stft_mel_equals_librosa_stft(length):
    import librosa
    from scipy import signal

    wav = (np.random.default_rng(length).standard_normal(length) * 0.3).astype(np.float32)
    emphasised = signal.lfilter([1.0, -0.97], [1.0], wav.astype(np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = np.abs(
            librosa.stft(y=emphasised, n_fft=800, hop_length=200, win_length=800, pad_mode="reflect")
        )
    mel_db = (
        20
        * np.log10(
            np.maximum(1e-5, librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) @ spec)
        )
        - 20
    )
    reference = np.clip(8 * ((mel_db + 100) / 100) - 4, -4, 4)
    ours = audio.melspectrogram(wav)
    assert ours.shape == reference.shape == (80, 1 + length // 200)
    np.testing.assert_allclose(ours, reference, atol=1e-4)
