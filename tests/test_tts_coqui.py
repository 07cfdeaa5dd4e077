"""The Coqui adapter's argument handling, with a fake ``TTS.api.TTS`` injected (no Coqui install needed)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch

import tts
import tts.coqui as coqui
from pipeline.core.errors import ConfigError, EngineUnavailableError, InputError, WeightsError
from pipeline.core.types import AudioClip
from tests.test_tts_conditioning import silent_gaps, tone
from tts.assembly import render
from tts.config import TTSConfig
from tts.text import plan_pieces

XTTS_CONFIG = {
    "max_ref_len": 30,
    "sound_norm_refs": False,
    "gpt_cond_len": 12,
    "gpt_cond_chunk_len": 4,
    "temperature": 0.85,
    "length_penalty": 1.0,
    "repetition_penalty": 2.0,
    "top_k": 50,
    "top_p": 0.85,
}


class XttsConfig(dict):
    """Coqpit-like: item access for settings, attribute access for ``model``."""

    model = "xtts"


class FakeXtts:
    """Records the XTTS calls the adapter makes; returns fixed latents and a 0.5 s tone per piece."""

    def __init__(self, calls: list, config: dict) -> None:
        self.calls, self.config, self.device = calls, XttsConfig(config), torch.device("cpu")

    def get_speaker_embedding(self, audio, sr):
        self.calls.append(("get_speaker_embedding", audio.clone(), sr))
        return torch.ones(1, 512, 1)

    def get_gpt_cond_latents(self, audio, sr, length, chunk_length):
        self.calls.append(("get_gpt_cond_latents", audio.clone(), sr, length, chunk_length))
        return torch.zeros(1, 32, 1024)

    def inference(self, text, language, gpt_cond_latent, speaker_embedding, **settings):
        self.calls.append(
            ("inference", text, language, gpt_cond_latent.shape, speaker_embedding.shape, settings)
        )
        return {"wav": torch.from_numpy(tone(200.0, 0.5, 24000))}


def fake_api(speakers=None, languages=None, xtts=False, rate=22050, fail=None):
    """A stand-in for ``TTS.api.TTS`` with the given model facts; ``cls.calls`` records every call."""
    calls: list = []

    class FakeTTS:
        def __init__(self, model_name="", *, model_path=None, config_path=None, progress_bar=True):
            calls.append(("init", model_name, model_path, config_path, progress_bar))
            if fail:
                raise fail
            model = (
                FakeXtts(calls, XTTS_CONFIG)
                if xtts
                else SimpleNamespace(config=SimpleNamespace(model="vits"))
            )
            self.synthesizer = SimpleNamespace(output_sample_rate=24000 if xtts else rate, tts_model=model)
            self.is_multi_speaker = bool(speakers) or xtts
            self.is_multi_lingual = bool(languages)
            self.speakers, self.languages = speakers, languages

        def to(self, device):
            calls.append(("to", device))
            return self

        def tts(self, text, speaker=None, language=None, speaker_wav=None, split_sentences=True, **kwargs):
            reference = soundfile.read(speaker_wav, dtype="float32")[0] if speaker_wav else None
            calls.append(("tts", text, speaker, language, speaker_wav, split_sentences, kwargs, reference))
            return list(tone(300.0, 0.4, rate).astype(np.float64))

    FakeTTS.calls = calls
    return FakeTTS


def by_name(calls, name):
    return [c for c in calls if c[0] == name]


@pytest.fixture
def model_files(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "model.pth").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    return str(tmp_path / "model.pth"), str(tmp_path / "config.json")


def test_model_by_name_one_tts_call_per_piece_without_coquis_own_split():
    api = fake_api()
    speaker = coqui.load_coqui(
        TTSConfig(engine="coqui", model_name="tts_models/en/ljspeech/vits"), api_class=api
    )
    assert api.calls == [("init", "tts_models/en/ljspeech/vits", None, None, False), ("to", "cpu")]
    clip = speaker.speak("Hello there.")
    assert api.calls[-1] == ("tts", "Hello there.", None, None, None, False, {}, None)
    assert clip.sample_rate_hz == 22050 and clip.samples.dtype == np.float32 and len(clip.samples) == 8820


def test_model_from_local_files_downloads_nothing(model_files):
    api = fake_api()
    cfg = TTSConfig(engine="coqui", model_path=model_files[0], config_path=model_files[1])
    coqui.load_coqui(cfg, api_class=api, device="cuda")
    assert api.calls == [("init", "", model_files[0], model_files[1], False), ("to", "cuda")]


def test_synthesize_with_coqui_gives_16k_speech_with_pauses(monkeypatch):
    api = fake_api(rate=24000)
    monkeypatch.setattr(coqui, "import_coqui_api", lambda: api)
    cfg = TTSConfig(engine="coqui", model_name="tts_models/x/y/vits", sentence_pause_s=0.3)
    clip = tts.synthesize("First sentence. Second one!", cfg, device="cpu")
    assert [c[1] for c in by_name(api.calls, "tts")] == ["First sentence.", "Second one!"]
    assert clip.sample_rate_hz == 16000 and silent_gaps(clip.samples, 16000) == pytest.approx(
        [0.3], abs=0.011
    )


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({}, ConfigError, "exactly one of tts.model_name or tts.model_path"),
        ({"model_name": "a", "model_path": "b"}, ConfigError, "exactly one of"),
        ({"model_path": "MODEL"}, ConfigError, "needs tts.config_path"),
        (
            {"model_path": "missing.pth", "config_path": "CONFIG"},
            InputError,
            "model file not found: missing.pth",
        ),
        ({"model_path": "MODEL", "config_path": "missing.json"}, InputError, "config file not found"),
        ({"model_name": "a", "voice_sample": "nope.wav"}, InputError, "voice sample not found: nope.wav"),
        ({"model_name": "a", "clone_voice_from_video": True}, InputError, "no audio to clone"),
        (
            {"model_name": "a", "clone_voice_from_video": True, "voice_sample": "CONFIG"},
            ConfigError,
            "not both",
        ),
    ],
)
def test_bad_requests_fail_before_coqui_is_touched(model_files, fields, error, message):
    names = {"MODEL": model_files[0], "CONFIG": model_files[1]}
    cfg = TTSConfig(
        engine="coqui", **{k: names.get(v, v) if isinstance(v, str) else v for k, v in fields.items()}
    )
    api = fake_api()
    with pytest.raises(error, match=message):
        coqui.load_coqui(cfg, api_class=api)
    assert api.calls == []


def test_speaker_and_language_are_checked_against_the_model():
    api = fake_api(speakers=["alice", "bob"], languages=["en", "fr-fr"])
    base = {"engine": "coqui", "model_name": "m"}
    with pytest.raises(ConfigError, match=r"tts.speaker, one of: alice, bob \(got None\)"):
        coqui.load_coqui(TTSConfig(**base, language="en"), api_class=api)
    with pytest.raises(ConfigError, match=r"one of: alice, bob \(got 'carol'\)"):
        coqui.load_coqui(TTSConfig(**base, language="en", speaker="carol"), api_class=api)
    with pytest.raises(ConfigError, match=r"tts.language, one of: en, fr-fr \(got 'de'\)"):
        coqui.load_coqui(TTSConfig(**base, language="de", speaker="bob"), api_class=api)
    coqui.load_coqui(TTSConfig(**base, language="fr-fr", speaker="bob"), api_class=api).speak("Salut.")
    assert by_name(api.calls, "tts")[-1][2:4] == ("bob", "fr-fr")


def test_single_speaker_monolingual_model_refuses_speaker_and_language():
    with pytest.raises(ConfigError, match="one speaker"):
        coqui.load_coqui(TTSConfig(engine="coqui", model_name="m", speaker="bob"), api_class=fake_api())
    with pytest.raises(ConfigError, match="one language"):
        coqui.load_coqui(TTSConfig(engine="coqui", model_name="m", language="en"), api_class=fake_api())


def test_coqui_not_installed_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "TTS.api", None)  # makes `from TTS.api import TTS` raise ImportError
    with pytest.raises(EngineUnavailableError, match=r"pip install -r requirements-coqui.txt"):
        tts.open_speaker(TTSConfig(engine="coqui", model_name="tts_models/en/ljspeech/vits"), device="cpu")


def test_model_load_failure_is_a_weights_error_with_the_cause():
    api = fake_api(fail=RuntimeError("checkpoint truncated\ntraceback noise"))
    with pytest.raises(
        WeightsError, match=r"could not load model m: RuntimeError: checkpoint truncated$"
    ) as info:
        coqui.load_coqui(TTSConfig(engine="coqui", model_name="m"), api_class=api)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_xtts_clone_from_video_audio_computes_the_voice_once():
    api = fake_api(xtts=True, languages=["en", "de"])
    video_audio = AudioClip(tone(150.0, 40.0, 16000, amplitude=0.3), 16000)  # longer than max_ref_len
    cfg = TTSConfig(engine="coqui", model_name="xtts_v2", language="de", clone_voice_from_video=True)
    clip = render(
        coqui.load_coqui(cfg, video_audio, api_class=api), plan_pieces("Eins. Zwei. Drei.", 0.25, 0.6), cfg
    )
    embedding, latents = (
        by_name(api.calls, "get_speaker_embedding"),
        by_name(api.calls, "get_gpt_cond_latents"),
    )
    assert len(embedding) == 1 and len(latents) == 1 and by_name(api.calls, "tts") == []
    audio, sr = embedding[0][1], embedding[0][2]
    assert sr == 22050 and audio.dtype == torch.float32 and tuple(audio.shape) == (1, 30 * 22050)
    assert torch.equal(latents[0][1], audio) and latents[0][3:] == (12, 4)
    expected = coqui.resample(video_audio.samples, 16000, 22050)[: 30 * 22050]
    assert np.allclose(audio[0].numpy(), expected, atol=1e-6)
    inference = by_name(api.calls, "inference")
    assert [c[1] for c in inference] == ["Eins.", "Zwei.", "Drei."] and {c[2] for c in inference} == {"de"}
    assert inference[0][3:5] == ((1, 32, 1024), (1, 512, 1))
    assert inference[0][5] == {k: XTTS_CONFIG[k] for k in coqui.XTTS_SAMPLING_KEYS}
    assert clip.sample_rate_hz == 16000 and clip.duration_s > 1.5


def test_xtts_clone_from_a_voice_sample_file(tmp_path):
    sample = tmp_path / "voice.wav"
    soundfile.write(sample, tone(180.0, 2.0, 44100, amplitude=0.4), 44100, subtype="PCM_16")
    api = fake_api(xtts=True, languages=["en"])
    cfg = TTSConfig(engine="coqui", model_name="xtts", language="en", voice_sample=str(sample))
    coqui.load_coqui(cfg, api_class=api)
    audio = by_name(api.calls, "get_speaker_embedding")[0][1]
    assert abs(audio.shape[1] - 2 * 22050) <= 2  # decoded at XTTS' 22050 Hz
    assert float(audio.abs().max()) == pytest.approx(0.4, abs=0.01)


def test_xtts_without_a_voice_needs_a_builtin_speaker():
    api = fake_api(xtts=True, languages=["en"], speakers=["Ana Florence"])
    with pytest.raises(ConfigError, match=r"Ana Florence.*or a voice to clone"):
        coqui.load_coqui(TTSConfig(engine="coqui", model_name="xtts", language="en"), api_class=api)
    speaker = coqui.load_coqui(
        TTSConfig(engine="coqui", model_name="xtts", language="en", speaker="Ana Florence"), api_class=api
    )
    speaker.speak("Hi.")
    assert by_name(api.calls, "tts")[-1][1:6] == ("Hi.", "Ana Florence", "en", None, False)


def test_other_cloning_models_get_the_reference_as_a_wav_file():
    api = fake_api(languages=["en"])
    reference = AudioClip(tone(220.0, 1.0, 16000, amplitude=0.5), 16000)
    cfg = TTSConfig(engine="coqui", model_name="your_tts", language="en", clone_voice_from_video=True)
    speaker = coqui.load_coqui(cfg, reference, api_class=api)
    speaker.speak("Hello.")
    call = by_name(api.calls, "tts")[-1]
    assert call[4].endswith("reference.wav") and call[2] is None
    assert np.allclose(call[7], reference.samples, atol=1.0 / 32768 + 1e-6)
