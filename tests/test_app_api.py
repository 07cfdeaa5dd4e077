"""Gradio's HTTP API, the app's programmatic interface: the README's ``gradio_client`` call, run as
written against ``python -m pipeline.app`` on a free loopback port with seeded weights."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.app_server import running_app, speech_frames
from tests.media_fixtures import read_all_frames

pytest.importorskip("gradio", reason="gradio is not installed (requirements-ui.txt, make ui)")
pytest.importorskip("gradio_client", reason="gradio_client is not installed (requirements-ui.txt, make ui)")

REPO = Path(__file__).resolve().parent.parent
README_URL = "http://127.0.0.1:7860/"
README_SENTENCE = "Hello from the API."


def readme_api_example() -> str:
    """The README's Python block that calls the app through ``gradio_client``."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.DOTALL)
    (example,) = [block for block in blocks if "gradio_client" in block]
    return example


def test_the_readme_gradio_client_call_renders_a_video_as_long_as_the_speech(tmp_path, monkeypatch, capsys):
    example = readme_api_example()
    assert README_URL in example and f'"{README_SENTENCE}"' in example
    with running_app(tmp_path / "app") as (url, out):
        monkeypatch.chdir(REPO)  # the example's paths are relative to the repository
        names: dict = {}
        exec(compile(example.replace(README_URL, url), "README.md", "exec"), names)  # noqa: S102
    assert names["status"] == "done", names["status"]
    summary = names["summary"]
    assert summary.startswith("wrote ") and "frames without a face" in summary and "time:" in summary
    assert "done" in capsys.readouterr().out  # the example's print
    assert Path(names["video"]).is_file() and Path(names["download"]).is_file()
    assert abs(len(read_all_frames(Path(names["video"]))) - speech_frames(README_SENTENCE)) <= 1
    assert len(list(out.glob("*_lipsync.mp4"))) == 1 and not list(out.glob(".*"))  # no temporary left
