"""The web UI without a browser: the form -> config mapping, Cancel, missing weights, no gradio."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.app import Renderer, missing_weights_message, overrides_from_form
from pipeline.config import build_config
from pipeline.core.errors import InputError
from tests.weights_fixtures import write_official_checkpoint

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_VIDEO = REPO / "examples" / "face.mp4"


def test_the_form_maps_onto_the_cli_config():
    form = {
        "video": "v.mp4", "speech_source": "text", "text": " Hi there ", "audio": "ignored.wav",
        "engine": "espeak", "voice": "de", "speed": 150, "restorer": "codeformer", "fidelity": 0.9,
        "face": "1", "box": "1, 2 3 4", "pads": "", "paste": "hard", "upscale": 2, "batch_size": 0,
        "restore_batch": 4, "precision": "bf16",
    }  # fmt: skip
    config = build_config(overrides_from_form(form))
    assert (config.video, config.text_string, config.audio) == ("v.mp4", "Hi there", None)
    assert (config.tts.voice, config.tts.speed) == ("de", 150)
    assert (config.restore.restorer, config.restore.fidelity, config.restore.upscale) == (
        "codeformer",
        0.9,
        2,
    )
    assert config.restore.batch_size == 4 and config.wav2lip.batch_size is None  # 0 = the default
    assert (config.detect.box, config.detect.face, config.wav2lip.paste) == ((1, 2, 3, 4), 1, "hard")
    assert config.detect.pads == build_config().detect.pads  # empty = the default
    assert config.precision == "bf16"
    assert build_config(overrides_from_form({**form, "precision": None})).precision == "auto"
    spoken = build_config(overrides_from_form({**form, "speech_source": "audio", "audio": "a.wav"}))
    assert (spoken.text_string, spoken.audio) == (None, "a.wav")


def test_a_bad_box_is_a_one_line_input_error():
    with pytest.raises(InputError, match="box must be four whole numbers"):
        overrides_from_form({"box": "1 2 3"})


@pytest.fixture(scope="module")
def wav2lip_checkpoint(tmp_path_factory) -> Path:
    return write_official_checkpoint("wav2lip_generator", tmp_path_factory.mktemp("w") / "wav2lip_gan.pth")


def test_cancel_stops_the_render_and_leaves_no_file(wav2lip_checkpoint, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        f"device: cpu\nframe_batch: 8\nwav2lip: {{checkpoint: {wav2lip_checkpoint}}}\n"
        "restore: {restorer: none}\ndetect: {box: [60, 260, 60, 260]}\n"
    )
    renderer = Renderer(str(config), tmp_path / "out")
    stages = []

    def progress(fraction, desc):  # what gr.Progress is called with; Cancel is pressed mid-render
        stages.append(desc)
        if desc.startswith("render") and len(stages) > 3:
            renderer.cancel("me")

    form = {"video": str(EXAMPLE_VIDEO), "text": "One, two, three, four, five, six."}
    output, summary, status = renderer.render(form, "me", progress)
    assert (output, summary) == (None, "")
    assert status == "error: cancelled; no output was written"
    assert any(desc.startswith("render ") and "frames" in desc for desc in stages)
    assert not (tmp_path / "out").exists()  # nor a partial file, nor the folder made for it
    assert renderer.cancel("me") == "nothing is rendering"
    output, summary, status = renderer.render({**form, "text": "Hi."}, "me")  # the same models again
    assert status == "done" and output.is_file() and summary.startswith(f"wrote {output}")
    assert renderer.models.loads == 1


def test_missing_weights_show_at_start_and_in_the_page(tmp_path, capsys):
    gr = pytest.importorskip("gradio", reason="gradio is not installed (requirements-ui.txt)")
    from pipeline.app_page import build_page

    config = build_config({"wav2lip": {"checkpoint": str(tmp_path / "nope.pth")}})
    message = missing_weights_message(config)
    assert message.startswith("error: ") and "nope.pth" in message and "\n" not in message
    page = build_page(gr, config, Renderer(None, tmp_path), message)
    shown = [b for b in page.blocks.values() if getattr(b, "elem_id", None) == "missing-weights"]
    assert len(shown) == 1 and message in shown[0].value


class _ConfigRecorder(Renderer):
    """Builds each render's config as the app does, and stops there."""

    def render(self, form, session, progress=None):
        self.config = self._config(form)
        return None, "", "recorded"


def test_the_advanced_section_holds_every_cli_choice_and_precision_reaches_the_render(tmp_path):
    gr = pytest.importorskip("gradio", reason="gradio is not installed (requirements-ui.txt)")
    from pipeline.app_page import FORM_FIELDS, build_page

    defaults = tmp_path / "config.yaml"
    defaults.write_text("precision: fp32\ndetect: {pads: [0, 12, 0, 0]}\nwav2lip: {paste: hard}\n")
    config = build_config(None, defaults)
    renderer = _ConfigRecorder(str(defaults), tmp_path / "out")
    page = build_page(gr, config, renderer, None)
    (event,) = [fn for fn in page.fns.values() if fn.api_name == "render"]
    shown = dict(zip(FORM_FIELDS, (component.value for component in event.inputs)))
    for name in ("face", "box", "pads", "paste", "upscale", "precision", "batch_size", "restore_batch"):
        assert name in shown
    assert (shown["precision"], shown["pads"], shown["paste"]) == ("fp32", "0 12 0 0", "hard")  # the config's
    request = type("Request", (), {"session_hash": "s1"})()
    event.fn(*{**shown, "video": str(EXAMPLE_VIDEO), "precision": "bf16"}.values(), request=request)
    assert renderer.config.precision == "bf16" and renderer.config.detect.pads == (0, 12, 0, 0)
    event.fn(*{**shown, "video": str(EXAMPLE_VIDEO)}.values(), request=request)
    assert renderer.config.precision == "fp32"


def test_without_gradio_the_app_says_so_in_one_line():
    code = "import sys; sys.modules['gradio'] = None; from pipeline.app import main; sys.exit(main([]))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == "error: the web UI needs gradio: pip install -r requirements-ui.txt (or: make ui)"
    )
