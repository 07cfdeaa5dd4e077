"""espeak-ng: real speech from the espeakng-loader library, voices, errors, the program fallback."""

from __future__ import annotations

import shutil
import struct
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import tts
import tts.espeak.engine as espeak
from pipeline.core.errors import ConfigError, EngineUnavailableError, LipSyncError
from tests.test_tts_conditioning import silent_gaps
from tts.conditioning import frame_rms, pcm16_to_float, voiced_bounds
from tts.config import TTSConfig
from tts.espeak.program import EspeakProgram, parse_voice_table, parse_wav_pcm16

SHORT = "Hello there."
LONG = "Hello there. This sentence is a good deal longer than the first one, and it keeps going for a while."


def speech_checks(clip, max_edge_s: float = 0.2) -> None:
    """The contract of tts.synthesize output."""
    assert clip.sample_rate_hz == 16000
    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    peak = float(np.max(np.abs(clip.samples)))
    assert peak <= 1.0 and peak == pytest.approx(0.95, abs=1e-6)
    start, end = voiced_bounds(clip.samples, 16000)
    assert start / 16000 <= max_edge_s and (len(clip.samples) - end) / 16000 <= max_edge_s
    assert float(np.sqrt(np.mean(clip.samples**2))) > 0.05


def test_espeak_speaks_real_speech_that_grows_with_the_text():
    short = tts.synthesize(SHORT, TTSConfig())
    long = tts.synthesize(LONG, TTSConfig())
    speech_checks(short)
    speech_checks(long)
    assert 0.5 < short.duration_s < 2.0
    assert long.duration_s > 3.0 * short.duration_s


def test_library_renders_16_bit_at_22050_hz_repeatably():
    library = espeak.shared_library()
    assert library is espeak.shared_library()  # loaded once per process
    assert library.sample_rate_hz == 22050
    first = library.synthesize(SHORT, "en-us", 165)
    assert first.dtype == np.int16 and first.size > 0.5 * 22050
    again = library.synthesize(SHORT, "en-us", 165)  # espeak-ng's flutter phase runs on between calls
    assert abs(len(again) - len(first)) < 0.02 * len(first)


ESPEAK_NG_SAMPLE_RATE_HZ = 22050  # the rate every espeak-ng voice renders at


def test_the_engine_labels_its_speech_at_espeak_ngs_rate_so_resampling_keeps_its_length():
    clip = espeak.open_espeak("en-us", 165).speak(SHORT)
    assert clip.sample_rate_hz == ESPEAK_NG_SAMPLE_RATE_HZ
    start, end = voiced_bounds(clip.samples, ESPEAK_NG_SAMPLE_RATE_HZ)
    spoken_s = (end - start) / ESPEAK_NG_SAMPLE_RATE_HZ
    out = tts.synthesize(SHORT, TTSConfig())  # resampled to 16 kHz
    start, end = voiced_bounds(out.samples, 16000)
    # a 22.05 kHz clip taken for 16 kHz would come out 1.38 times as long (about 0.3 s here)
    assert (end - start) / 16000 == pytest.approx(spoken_s, abs=0.05)


def test_concurrent_synthesis_keeps_each_callers_settings():
    library = espeak.shared_library()
    slow, fast = len(library.synthesize(LONG, "en-us", 120)), len(library.synthesize(LONG, "de", 300))
    assert slow > 2 * fast
    lengths: dict[int, list[int]] = {120: [], 300: []}

    def work(voice: str, rate: int) -> None:
        for _ in range(3):
            lengths[rate].append(len(library.synthesize(LONG, voice, rate)))

    threads = [threading.Thread(target=work, args=args) for args in (("en-us", 120), ("de", 300))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(abs(n - slow) < 0.02 * slow for n in lengths[120])
    assert all(abs(n - fast) < 0.02 * fast for n in lengths[300])


def test_interrupt_inside_the_synth_callback_propagates_and_the_library_recovers(monkeypatch):
    library = espeak.shared_library()
    real_as_array = np.ctypeslib.as_array
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(np.ctypeslib, "as_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        library.synthesize(LONG, "en-us", 165)
    assert len(calls) == 1  # synthesis was aborted at the first block
    monkeypatch.setattr(np.ctypeslib, "as_array", real_as_array)
    assert library.synthesize(SHORT, "en-us", 165).size > 0.5 * 22050


@pytest.mark.parametrize(
    ("voice", "text"),
    [
        ("en-us", "Good morning, everyone."),
        ("de", "Guten Morgen, Grüße aus Köln."),
        ("fr", "Bonjour à tous, ça va."),
    ],
)
def test_voices_en_de_fr_speak(voice, text):
    clip = tts.synthesize(text, TTSConfig(voice=voice))
    speech_checks(clip)
    assert clip.duration_s > 0.8


def test_voice_changes_the_sound_and_speed_changes_the_duration():
    english = tts.synthesize(LONG, TTSConfig(voice="en-us"))
    german = tts.synthesize(LONG, TTSConfig(voice="de"))
    fast = tts.synthesize(LONG, TTSConfig(voice="en-us", speed=330))
    assert len(english.samples) != len(german.samples)
    assert fast.duration_s < 0.7 * english.duration_s


def test_cjk_text_is_spoken_with_a_chinese_voice():
    clip = tts.synthesize("你好。今天天气很好！", TTSConfig(voice="cmn"))
    speech_checks(clip)


def test_real_pauses_between_sentences_and_paragraphs():
    cfg = TTSConfig(sentence_pause_s=0.3, paragraph_pause_s=0.9)
    clip = tts.synthesize("One.  Two.\n\nThree.", cfg)
    gaps = [g for g in silent_gaps(clip.samples, 16000, threshold=0.01) if g >= 0.2]
    assert len(gaps) == 2
    assert 0.28 <= gaps[0] <= 0.38
    assert 0.88 <= gaps[1] <= 0.98


@pytest.mark.parametrize("voice", ["xx-unknown", "en-uss", " "])
def test_unknown_voice_is_a_clear_config_error(voice):
    with pytest.raises(ConfigError, match=r"voice.*python -m tts"):
        tts.synthesize("Hello.", TTSConfig(voice=voice))


def test_typo_voice_suggests_the_close_names():
    with pytest.raises(ConfigError, match=r"did you mean en-us"):
        tts.open_speaker(TTSConfig(voice="en-uss"))


@pytest.mark.parametrize("speed", [79, 451])
def test_rate_outside_espeak_range_is_rejected(speed):
    with pytest.raises(ConfigError, match="80..450"):
        tts.open_speaker(TTSConfig(speed=speed))


def test_espeak_cannot_clone_voices():
    with pytest.raises(ConfigError, match="coqui"):
        tts.open_speaker(TTSConfig(clone_voice_from_video=True))


def test_list_voices_names_en_de_fr():
    voices = tts.list_voices()
    codes = {code for v in voices for code in v.languages}
    assert {"en-us", "de", "fr-fr", "cmn"} <= codes
    american = next(v for v in voices if v.identifier == "gmw/en-US")
    assert american.languages[0] == "en-us"
    assert str(american) == "en-us, en: English (America) (gmw/en-US)"


# ---------------------------------------------------------------- the espeak-ng program fallback


def wav_bytes(samples: np.ndarray, rate: int, channels: int = 1, streaming: bool = False) -> bytes:
    data = samples.astype("<i2").tobytes()
    riff, size = (0x7FFFF024, 0x7FFFF000) if streaming else (36 + len(data), len(data))
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", size)
        + data
    )


def test_parse_wav_tolerates_streaming_sizes_and_mixes_channels():
    mono = (np.arange(100) * 50).astype(np.int16)
    samples, rate = parse_wav_pcm16(wav_bytes(mono, 22050, streaming=True))
    assert rate == 22050 and np.array_equal(samples, mono)
    stereo = np.stack([mono, -mono], axis=1).reshape(-1)
    samples, _ = parse_wav_pcm16(wav_bytes(stereo, 16000, channels=2))
    assert not np.any(samples)
    with pytest.raises(LipSyncError, match="WAV"):
        parse_wav_pcm16(b"not a wav at all")


def test_parse_voice_table_reads_languages_names_and_files():
    listing = (
        "Pty Language       Age/Gender VoiceName          File                 Other Languages\n"
        " 2  en-us           --/M      English_(America)  gmw/en-US            (en 3)\n"
        " 5  cmn             --/M      Chinese_(Mandarin) sit/cmn              (zh-cmn 5)(zh 5)\n"
    )
    voices = parse_voice_table(listing)
    assert voices[0].name == "English (America)" and voices[0].languages == ("en-us", "en")
    assert voices[1].identifier == "sit/cmn" and voices[1].languages == ("cmn", "zh-cmn", "zh")


FAKE_PROGRAM = """
import math, struct, sys
log = open(sys.argv[0] + ".log", "a", encoding="utf-8")
args = sys.argv[1:]
if args == ["--voices"]:
    print("Pty Language Age/Gender VoiceName File Other Languages")
    print(" 5  de  --/M  German  gmw/de")
    sys.exit(0)
if "-q" in args:
    sys.exit(0)
text = sys.stdin.buffer.read().decode("utf-8")
log.write(repr(args) + "\\t" + text + "\\n")
n = 22050 // 2
data = b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * 220 * i / 22050))) for i in range(n))
fmt = struct.pack("<HHIIHH", 1, 1, 22050, 44100, 2, 16)
sys.stdout.buffer.write(b"RIFF" + struct.pack("<I", 0x7FFFF024) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
                        + b"data" + struct.pack("<I", 0x7FFFF000) + data)
"""


@pytest.fixture
def fake_program(tmp_path: Path) -> Path:
    path = tmp_path / "espeak-ng"
    path.write_text(f"#!{sys.executable}\n{FAKE_PROGRAM}", encoding="utf-8")
    path.chmod(0o755)
    return path


def test_program_fallback_when_the_library_cannot_load(monkeypatch, fake_program):
    monkeypatch.setattr(espeak, "shared_library", lambda: (_ for _ in ()).throw(OSError("no library here")))
    monkeypatch.setattr(
        espeak.shutil, "which", lambda name: str(fake_program) if name == "espeak-ng" else None
    )
    with pytest.warns(UserWarning, match="no library here.*using the program"):
        clip = tts.synthesize("Erster Satz. Zweiter Satz.", TTSConfig(voice="de", speed=200))
    calls = Path(str(fake_program) + ".log").read_text(encoding="utf-8").splitlines()
    expected_args = ["--stdout", "-b", "1", "-v", "de", "-s", "200", "--stdin"]
    assert calls == [f"{expected_args!r}\tErster Satz.", f"{expected_args!r}\tZweiter Satz."]
    assert clip.sample_rate_hz == 16000
    assert silent_gaps(clip.samples, 16000) == pytest.approx([0.25], abs=0.011)
    assert clip.duration_s == pytest.approx(0.02 + 0.5 + 0.25 + 0.5 + 0.02, abs=0.002)  # 20 ms edges


def test_program_refuses_voices_it_does_not_list(fake_program):
    program = EspeakProgram(str(fake_program))
    assert program.select_voice("de") and program.select_voice("GERMAN") and program.select_voice("de+f2")
    assert not program.select_voice("xx-unknown")
    with pytest.raises(ConfigError, match="xx-unknown"):
        espeak.open_espeak("xx-unknown", 165, backend=program)


def test_no_library_and_no_program_is_engine_unavailable(monkeypatch):
    monkeypatch.setattr(espeak, "shared_library", lambda: (_ for _ in ()).throw(OSError("gone")))
    monkeypatch.setattr(espeak.shutil, "which", lambda name: None)
    with pytest.raises(
        EngineUnavailableError, match=r"pip install espeakng-loader.*apt-get install espeak-ng"
    ):
        tts.synthesize("Hello.", TTSConfig())


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="no espeak-ng program on PATH")
def test_installed_program_speaks_like_the_library():
    program = EspeakProgram(shutil.which("espeak-ng"))
    assert program.select_voice("en-us") and not program.select_voice("xx-unknown")
    samples, rate = program.synthesize(SHORT, "en-us", 165)
    assert rate == 22050
    rms = frame_rms(pcm16_to_float(samples), rate)
    assert samples.size > 0.5 * rate and rms.max() > 0.05


def test_a_voice_variant_changes_the_pitch():
    from tests.pitch import median_f0

    plain = tts.synthesize("Fine, thanks.", TTSConfig(voice="en-gb"))
    female = tts.synthesize("Fine, thanks.", TTSConfig(voice="en-gb+f3"))
    speech_checks(female)
    assert median_f0(female.samples, 16000) > 1.5 * median_f0(plain.samples, 16000)
    with pytest.raises(ConfigError, match="unknown espeak-ng voice 'en-gb\\+nosuchvariant'"):
        tts.synthesize("Hello.", TTSConfig(voice="en-gb+nosuchvariant"))
