"""The Coqui adapter against a real (tiny, random-weight) Coqui VITS model saved to local files.

Needs the optional extra (``pip install -r requirements-coqui.txt``); skipped where ``TTS`` does not
import. Nothing is downloaded: the model is built from a Coqui config, saved as model.pth + config.json
and loaded back through ``tts.model_path`` / ``tts.config_path``.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch

import tts
import tts.coqui as coqui
from pipeline.core.errors import ConfigError
from pipeline.core.types import AudioClip
from tts.config import TTSConfig

REASON = "Coqui TTS extra not installed (pip install -r requirements-coqui.txt)"
SPEAKERS = {"alice": 0, "bob": 1}


def build_tiny_vits(folder: Path) -> tuple[str, str]:
    """A two-speaker character-input VITS with a few hundred thousand random weights, saved to files."""
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits, VitsArgs

    speakers_file = folder / "speakers.json"
    speakers_file.write_text(json.dumps(SPEAKERS), encoding="utf-8")
    args = VitsArgs(
        hidden_channels=16,
        hidden_channels_ffn_text_encoder=32,
        num_layers_text_encoder=1,
        num_layers_posterior_encoder=1,
        num_layers_flow=1,
        resblock_kernel_sizes_decoder=[3],
        resblock_dilation_sizes_decoder=[[1, 1, 1]],
        upsample_initial_channel_decoder=16,
        use_sdp=False,
        init_discriminator=False,
        use_speaker_embedding=True,
        speaker_embedding_channels=8,
        speakers_file=str(speakers_file),
    )
    characters = CharactersConfig(
        characters_class="TTS.tts.models.vits.VitsCharacters",
        pad="_",
        eos="",
        bos="",
        blank=None,
        characters="abcdefghijklmnopqrstuvwxyz ",
        punctuations="!'(),-.:;? ",
        phonemes=None,
    )
    config = VitsConfig(
        model_args=args,
        use_phonemes=False,
        text_cleaner="basic_cleaners",
        characters=characters,
        use_speaker_embedding=True,
        speakers_file=str(speakers_file),
    )
    torch.manual_seed(0)
    model = Vits(config)
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    config.save_json(str(folder / "config.json"))
    return str(folder / "model.pth"), str(folder / "config.json")


@pytest.fixture(scope="module")
def tiny_vits(tmp_path_factory) -> tuple[str, str]:
    pytest.importorskip("TTS", reason=REASON)
    return build_tiny_vits(tmp_path_factory.mktemp("tiny_vits"))


def test_local_coqui_model_synthesises_16k_speech(tiny_vits):
    cfg = TTSConfig(engine="coqui", model_path=tiny_vits[0], config_path=tiny_vits[1], speaker="bob")
    clip = tts.synthesize("hello there. how are you?", cfg, device="cpu")
    assert clip.sample_rate_hz == 16000 and clip.samples.dtype == np.float32
    assert clip.duration_s > 0.2 and float(np.max(np.abs(clip.samples))) == pytest.approx(0.95, abs=1e-6)


def test_adapter_output_equals_coquis_own_api(tiny_vits):
    from TTS.api import TTS

    cfg = TTSConfig(engine="coqui", model_path=tiny_vits[0], config_path=tiny_vits[1], speaker="alice")
    speaker = coqui.load_coqui(cfg, device="cpu")
    direct_api = TTS(model_path=tiny_vits[0], config_path=tiny_vits[1], progress_bar=False)
    assert speaker.api.synthesizer.output_sample_rate == direct_api.synthesizer.output_sample_rate == 22050
    torch.manual_seed(5)
    ours = speaker.speak("good morning")
    torch.manual_seed(5)
    theirs = np.asarray(direct_api.tts("good morning", speaker="alice", split_sentences=False), np.float32)
    assert ours.sample_rate_hz == 22050 and np.array_equal(ours.samples, theirs)


def test_speakers_of_the_local_model_are_listed_in_errors(tiny_vits):
    base = {"engine": "coqui", "model_path": tiny_vits[0], "config_path": tiny_vits[1]}
    with pytest.raises(ConfigError, match=r"one of: alice, bob \(got 'carol'\)"):
        coqui.load_coqui(TTSConfig(**base, speaker="carol"), device="cpu")
    with pytest.raises(ConfigError, match="one language"):
        coqui.load_coqui(TTSConfig(**base, speaker="bob", language="en"), device="cpu")


def build_tiny_xtts(folder: Path):
    """An XTTS model (tiny GPT, the real speaker encoder and HiFi-GAN decoder) with random weights."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from TTS.tts.configs.xtts_config import XttsArgs, XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    symbols = ["[STOP]", "[UNK]", "[SPACE]", "[START]", "[en]", "[de]", *"abcdefghijklmnopqrstuvwxyz.,!?'"]
    tokenizer = Tokenizer(
        models.BPE(vocab={s: i for i, s in enumerate(symbols)}, merges=[], unk_token="[UNK]")
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "vocab.json"))
    args = XttsArgs(
        gpt_layers=1,
        gpt_n_model_channels=32,
        gpt_n_heads=2,
        gpt_max_audio_tokens=40,
        gpt_max_text_tokens=64,
        gpt_max_prompt_tokens=16,
        gpt_num_audio_tokens=34,
        gpt_start_audio_token=32,
        gpt_stop_audio_token=33,
        gpt_use_perceiver_resampler=True,
        decoder_input_dim=32,
    )
    torch.manual_seed(0)
    model = Xtts(XttsConfig(model_args=args, languages=["en", "de"]))
    model.tokenizer = VoiceBpeTokenizer(str(folder / "vocab.json"))
    model.init_models()
    model.eval()  # Xtts.eval() prepares the GPT for inference and returns None
    return model


def test_xtts_clone_matches_coquis_own_synthesize(tmp_path, monkeypatch):
    """Cloning from samples in memory computes what Xtts.synthesize computes from a reference file."""
    pytest.importorskip("TTS", reason=REASON)
    import TTS.tts.models.xtts as xtts_module

    model = build_tiny_xtts(tmp_path)
    rng = np.random.default_rng(0)
    reference = (0.3 * np.sin(np.arange(2 * 22050) * 0.04) + 0.02 * rng.standard_normal(2 * 22050)).astype(
        np.float32
    )
    soundfile.write(tmp_path / "voice.wav", reference, 22050, subtype="FLOAT")

    def read_reference(path, sampling_rate):  # Coqui reads through torchaudio/torchcodec (needs FFmpeg libs)
        samples, rate = soundfile.read(path, dtype="float32")
        assert rate == sampling_rate
        return torch.from_numpy(samples)[None].clip(-1, 1)

    monkeypatch.setattr(xtts_module, "load_audio", read_reference)
    api = SimpleNamespace(synthesizer=SimpleNamespace(tts_model=model, output_sample_rate=24000))
    speaker = coqui.XttsCloneSpeaker(api, "en", AudioClip(reference, 22050))
    torch.manual_seed(3)
    ours = speaker.speak("hello there.")
    torch.manual_seed(3)
    theirs = model.synthesize("hello there.", speaker_wav=str(tmp_path / "voice.wav"), language="en")["wav"]
    assert ours.sample_rate_hz == 24000 and len(ours.samples) > 0 and float(np.std(ours.samples)) > 0
    assert np.array_equal(ours.samples, np.asarray(theirs, dtype=np.float32).reshape(-1))
