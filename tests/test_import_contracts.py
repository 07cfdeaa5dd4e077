"""Imports run one way (run_pipeline -> orchestration -> stages -> pipeline.faces -> pipeline.core), checked
with import-linter's contracts from pyproject.toml; a tree with an upward import must fail them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "tts", "wav2lip", "restore")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )


def _copy_tree(dest: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def test_the_import_contracts_hold():
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward_import", "broken_contract"),
    [
        ("pipeline/core/errors.py", "import pipeline.render", "orchestration above pipeline.faces"),
        ("pipeline/core/types.py", "import wav2lip.audio", "pipeline.core imports no stage"),
        ("pipeline/faces/tracking.py", "import restore.blend", "pipeline.faces imports no stage"),
        ("tts/text.py", "import pipeline.config", "import no orchestration module"),
        ("restore/blend.py", "import wav2lip.face_input", "independent of each other"),
    ],
)
def test_an_upward_import_breaks_a_contract(tmp_path, module, upward_import, broken_contract):
    root = _copy_tree(tmp_path)
    target = root / module
    target.write_text(target.read_text() + f"\n{upward_import}  # an upward import\n")
    result = _lint_imports(root)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(broken_contract in line for line in broken), result.stdout  # an indirect chain may break more


def test_every_orchestration_module_is_named_in_the_contracts():
    """The layers contract is exhaustive over ``pipeline``; the stages' contract must name the same
    orchestration modules, or a new one could be imported by a stage unnoticed."""
    contracts = _contracts()
    layers = contracts["pipeline-layers"]["layers"]
    in_layers = {name.strip() for layer in layers[:-2] for name in layer.split(":")}
    assert layers[-2:] == ["faces", "core"]
    on_disk = {p.stem for p in (REPO / "pipeline").glob("*.py") if p.stem != "__init__"}
    assert in_layers == on_disk
    forbidden = set(contracts["stages-below-orchestration"]["forbidden_modules"])
    assert forbidden == {f"pipeline.{name}" for name in on_disk}


def test_importing_pipeline_core_loads_no_stage_and_no_orchestration():
    core_modules = sorted(f"pipeline.core.{p.stem}" for p in (REPO / "pipeline" / "core").glob("[a-z]*.py"))
    code = (
        "import sys\n"
        f"for name in {core_modules!r}:\n"
        "    __import__(name)\n"
        f"print('\\n'.join(m for m in sys.modules if m.split('.')[0] in {PACKAGES!r}))\n"
    )
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    loaded = set(result.stdout.split())
    assert set(core_modules) <= loaded
    assert loaded - set(core_modules) == {"pipeline", "pipeline.core"}


def test_a_render_without_restoration_imports_neither_spandrel_nor_torchvision():
    """Reading the config touches ``restore.config``; the restorers' libraries (spandrel pulls in
    torchvision: about 170 MB of memory and seconds of start-up) load only when a face is restored."""
    code = (
        "import sys, restore\n"
        "import pipeline.cli, pipeline.render, pipeline.stages, wav2lip.inference\n"
        "print(' '.join(m for m in ('spandrel', 'torchvision', 'restore.restorers') if m in sys.modules))\n"
        "restore.build_stage\n"
        "print('spandrel' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.split("\n")[:2] == ["", "True"]
