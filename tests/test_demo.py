"""`make demo` end to end: fetch the default set from a loopback LIPSYNC_WEIGHTS_MIRROR, then render the
real example (speech cut short so CPU restoration stays within a minute)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.weight_manifest import load_manifest
from tests.loopback import File, LoopbackServer, manifest_copy
from tests.media_fixtures import read_all_frames, stream_info
from tests.weights_fixtures import write_official_checkpoint

REPO = Path(__file__).resolve().parent.parent
LAYOUTS = {  # the default set, seeded in the official layouts
    "wav2lip_gan": "wav2lip_generator",
    "retinaface_resnet50": "retinaface_resnet50",
    "parsenet": "parsenet_512",
    "gfpgan_v1.4": "gfpgan_v1_clean_512",
}


def _demo_commands() -> list[list[str]]:
    """The demo recipe's command lines from the Makefile, with $(PY) as this interpreter."""
    text = (REPO / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", text, re.MULTILINE).group(1)
    return [line.strip().replace("$(PY)", sys.executable).split() for line in recipe.splitlines()]


@pytest.mark.slow  # GFPGAN at 512 pixels on CPU: about a minute idle, several on a loaded 2-core box
def test_make_demo_fetches_from_the_mirror_then_renders_the_example(tmp_path):
    fetch_cmd, render_cmd = _demo_commands()
    assert fetch_cmd[1:] == ["-m", "pipeline.weights", "fetch"]
    assert render_cmd[-6:] == [
        "--text",
        "examples/script.txt",
        "--video",
        "examples/face.mp4",
        "-o",
        "results/demo.mp4",
    ]
    specs = load_manifest()
    seeded = {}
    for name, layout in LAYOUTS.items():
        path = write_official_checkpoint(layout, tmp_path / "seeded" / specs[name].file)
        seeded[name] = path.read_bytes()
    weights_dir, out = tmp_path / "weights", tmp_path / "results" / "demo.mp4"
    config = tmp_path / "detect.yaml"  # the seeded detector scores low: accept every box
    config.write_text("detect:\n  score_threshold: 0.0\n  detect_max_side: 160\n")
    with LoopbackServer() as server:
        for name, data in seeded.items():
            server.add(f"/mirror/{specs[name].file}", File(data))
        manifest = manifest_copy(tmp_path / "manifest.yaml", seeded, f"{server.base}/public")
        env = {
            **os.environ,
            "LIPSYNC_WEIGHTS_MIRROR": f"{server.base}/mirror",
            "LIPSYNC_WEIGHTS_DIR": str(weights_dir),
        }
        fetched = subprocess.run(
            [*fetch_cmd[:3], "--manifest", str(manifest), *fetch_cmd[3:]],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr
        assert not any(path.startswith("/public") for _, path in server.seen)
    assert sorted(p.name for p in weights_dir.iterdir()) == sorted(specs[n].file for n in LAYOUTS)
    assert "licence: research / non-commercial" in fetched.stdout
    # The render reads the weights from LIPSYNC_WEIGHTS_DIR, as the demo reads them from weights/.
    render = [*render_cmd[:2], "--text-string", "Hi.", *render_cmd[4:-1], str(out)]
    rendered = subprocess.run(
        [*render, "--device", "cpu", "--config", str(config), "--quiet"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    info = stream_info(out)
    assert "Video: h264" in info and "Audio: aac" in info and "320x320" in info
    frames = read_all_frames(out)
    assert 5 <= len(frames) <= 50  # a short phrase at 25 fps
