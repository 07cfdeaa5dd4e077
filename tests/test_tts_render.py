"""Rendering planned pieces with an engine: exact pauses, edges, level, progress and engine failures."""

from __future__ import annotations

import numpy as np
import pytest

import tts
from pipeline.core.errors import AudioError, ConfigError, LipSyncError, TextError
from pipeline.core.types import AudioClip
from tests.test_tts_conditioning import silent_gaps, tone
from tts.assembly import render
from tts.config import TTSConfig
from tts.text import plan_pieces


class ToneSpeaker:
    """A stand-in engine: each piece becomes ``lead`` s of silence, a 0.4 s tone, ``tail`` s of silence."""

    def __init__(self, rate: int = 22050, lead: float = 0.3, tail: float = 0.5, amplitude: float = 3.0):
        self.rate, self.lead, self.tail, self.amplitude = rate, lead, tail, amplitude
        self.said: list[str] = []

    def speak(self, text: str) -> AudioClip:
        self.said.append(text)
        quiet = (
            np.zeros(round(self.lead * self.rate), np.float32),
            np.zeros(round(self.tail * self.rate), np.float32),
        )
        return AudioClip(
            np.concatenate([quiet[0], tone(250.0, 0.4, self.rate, self.amplitude), quiet[1]]), self.rate
        )


def rendered(text: str, cfg: TTSConfig, speaker=None, progress: bool = False) -> AudioClip:
    pieces = plan_pieces(text, cfg.sentence_pause_s, cfg.paragraph_pause_s)
    return render(speaker or ToneSpeaker(), pieces, cfg, progress)


@pytest.mark.parametrize("rate", [22050, 24000, 16000, 44100])
def test_pauses_are_placed_exactly_at_sentences_and_paragraphs(rate):
    cfg = TTSConfig(sentence_pause_s=0.25, paragraph_pause_s=0.6)
    speaker = ToneSpeaker(rate=rate)
    clip = rendered("One. Two?\n\nThree! Four.\n\n\nFive", cfg, speaker)
    assert speaker.said == ["One.", "Two?", "Three!", "Four.", "Five"]
    assert silent_gaps(clip.samples, 16000) == pytest.approx([0.25, 0.6, 0.25, 0.6], abs=0.011)
    assert clip.sample_rate_hz == 16000 and clip.samples.dtype == np.float32
    assert clip.duration_s == pytest.approx(0.02 + 5 * 0.4 + 2 * 0.25 + 2 * 0.6 + 0.02, abs=0.005)


def test_edges_are_trimmed_and_level_is_normalised_without_clipping():
    clip = rendered("Only one sentence.", TTSConfig(), ToneSpeaker(lead=1.5, tail=2.0, amplitude=3.0))
    assert clip.duration_s == pytest.approx(0.44, abs=0.002)  # 0.4 s tone + 20 ms per edge
    assert np.max(np.abs(clip.samples)) == pytest.approx(0.95, abs=1e-6)


def test_zero_pauses_leave_only_the_piece_edges():
    clip = rendered("One. Two.\n\nThree.", TTSConfig(sentence_pause_s=0.0, paragraph_pause_s=0.0))
    assert clip.duration_s == pytest.approx(3 * 0.44, abs=0.005)


def test_progress_bar_only_when_asked(capsys):
    rendered("One. Two.", TTSConfig(), progress=False)
    assert "speech" not in capsys.readouterr().err
    rendered("One. Two.", TTSConfig(), progress=True)
    assert "speech" in capsys.readouterr().err


class FailingSpeaker:
    def speak(self, text: str) -> AudioClip:
        if text.startswith("Bad"):
            raise RuntimeError("kernel exploded\nsecond line")
        return ToneSpeaker().speak(text)


def test_engine_failure_names_the_sentence_and_keeps_the_cause():
    with pytest.raises(
        LipSyncError, match=r"sentence 2 \('Bad one\.'\): RuntimeError: kernel exploded$"
    ) as info:
        rendered("Good. Bad one. Good.", TTSConfig(), FailingSpeaker())
    assert isinstance(info.value.__cause__, RuntimeError)


class SilentSpeaker:
    def speak(self, text: str) -> AudioClip:
        return AudioClip(np.zeros(22050, np.float32), 22050)


class NanSpeaker:
    def speak(self, text: str) -> AudioClip:
        return AudioClip(np.full(100, np.nan, np.float32), 22050)


def test_all_silent_output_is_an_audio_error():
    with pytest.raises(AudioError, match="only silence"), pytest.warns(UserWarning, match="no audible"):
        rendered("Hello.", TTSConfig(), SilentSpeaker())


def test_non_finite_output_is_an_error():
    with pytest.raises(LipSyncError, match="non-finite"):
        rendered("Hello.", TTSConfig(), NanSpeaker())


def test_one_silent_piece_warns_but_the_rest_is_kept():
    class SometimesSilent(ToneSpeaker):
        def speak(self, text: str) -> AudioClip:
            return SilentSpeaker().speak(text) if text == "Hush." else super().speak(text)

    with pytest.warns(UserWarning, match=r"sentence 2 \('Hush\.'\) produced no audible speech"):
        clip = rendered("One. Hush. Three.", TTSConfig(), SometimesSilent())
    assert silent_gaps(clip.samples, 16000) == pytest.approx([0.25], abs=0.011)
    assert clip.duration_s == pytest.approx(2 * 0.44 + 0.25 - 0.04, abs=0.005)


def test_synthesize_checks_text_and_timing_before_opening_an_engine(monkeypatch):
    def no_engine(*args, **kwargs):
        raise AssertionError("the engine must not be opened")

    monkeypatch.setattr(tts, "open_speaker", no_engine)
    with pytest.raises(TextError):
        tts.synthesize("  ...  ", TTSConfig())
    with pytest.raises(ConfigError, match="sentence_pause_s"):
        tts.synthesize("Hello.", TTSConfig(sentence_pause_s=-0.1))
    with pytest.raises(ConfigError, match="max_edge_silence_s"):
        tts.synthesize("Hello.", TTSConfig(max_edge_silence_s=float("nan")))


def test_unknown_engine_is_a_config_error():
    with pytest.raises(ConfigError, match="espeak or coqui"):
        tts.open_speaker(TTSConfig(engine="festival"))
