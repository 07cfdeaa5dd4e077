"""``python -m pipeline.app`` started for a test on a free loopback port with seeded weights (fixed box,
no restorer: a render takes seconds), and the speech length a rendered video must match."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.weights_fixtures import write_official_checkpoint

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_app(root: Path) -> Iterator[tuple[str, Path]]:
    """The app's URL and output folder while it runs; stopped on leaving. Its log is ``root/app.log``."""
    checkpoint = write_official_checkpoint("wav2lip_generator", root / "wav2lip_gan.pth")
    config = root / "config.yaml"
    config.write_text(
        f"device: cpu\nwav2lip: {{checkpoint: {checkpoint}}}\nrestore: {{restorer: none}}\n"
        "detect: {box: [60, 260, 60, 260]}\n"
    )
    port, out = free_port(), root / "out"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pipeline.app", "--config", str(config), "--port", str(port)]
    log = (root / "app.log").open("w")
    process = subprocess.Popen(
        [*command, "--output-dir", str(out)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for(url, process, root / "app.log")
        yield url, out
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _wait_for(url: str, process: subprocess.Popen, log: Path, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with {process.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the app did not answer at {url}: {log.read_text()}")


def speech_frames(text: str) -> int:
    """Video frames (25 fps) that the default voice speaking ``text`` lasts."""
    import tts
    from pipeline import timeline
    from pipeline.config import build_config

    clip = tts.synthesize(text, build_config(None).tts)
    return timeline.output_frame_count(clip.duration_s, 25.0)
