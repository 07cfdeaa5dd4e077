"""``run_pipeline.py --check``: what this machine has for a render (ffmpeg, TTS, device, weights)."""

from __future__ import annotations

from pipeline.config import PipelineConfig
from pipeline.core.errors import LipSyncError


def environment_report(config: PipelineConfig) -> tuple[str, bool]:
    """A human-readable report and whether a default render can run here."""
    lines, ok = [], True
    for label, probe in (
        ("ffmpeg", _ffmpeg),
        ("torch", _torch),
        ("tts espeak", _espeak),
        ("tts coqui", _coqui),
    ):
        try:
            lines.append(f"{label:<12} {probe()}")
        except LipSyncError as exc:
            lines.append(f"{label:<12} MISSING: {exc}")
            ok = ok and label == "tts coqui"
    weight_lines, weights_ok = _weights(config)
    return "\n".join(lines + weight_lines), ok and weights_ok


def _ffmpeg() -> str:
    from pipeline.core.ffmpeg import ffmpeg_exe, ffmpeg_version

    return f"{ffmpeg_version()} ({ffmpeg_exe()})"


def _torch() -> str:
    import torch

    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu only"
    return f"torch {torch.__version__}, device: {device}"


def _espeak() -> str:
    import tts

    return f"available ({len(tts.list_voices())} voices)"


def _coqui() -> str:
    try:
        import TTS  # noqa: F401
    except ImportError:
        return "not installed (optional: pip install -r requirements-coqui.txt)"
    return "installed"


def _weights(config: PipelineConfig) -> tuple[list[str], bool]:
    from pipeline.core.weight_store import MISMATCH, MISSING, get_spec, source_for, verify
    from pipeline.stage_weights import resolve_weights

    lines = ["weights:"]
    for name, status in verify(None):
        where = f"  from: {source_for(get_spec(name))}" if status in (MISSING, MISMATCH) else ""
        lines.append(f"  {name:<24} {status:<9}{where}")
    try:
        resolve_weights(config)
        lines.append("all weights the current config needs are present")
        return lines, True
    except LipSyncError as exc:
        lines.append(f"not ready: {exc}")
        return lines, False
