"""The web UI: ``python -m pipeline.app`` (or ``make ui``) serves a Gradio page on 127.0.0.1:7860.

The page takes a face video or photo, the speech (a script with voice, speed and engine, or an audio
upload or microphone recording), the restorer and its fidelity, and the advanced settings of the
command line; its defaults are the CLI's (``configs/inference.yaml`` or ``--config FILE``). A render
shows its stage and frames done, can be cancelled (no partial file is left), and ends with the video,
a download link and the run summary; a failure shows the CLI's one-line message. The models stay
loaded between renders (:class:`~pipeline.model_cache.ModelCache`); renders run one at a time, the
others wait in Gradio's queue. Gradio's HTTP API (``gradio_client``) is the programmatic interface:
the endpoint is ``/render`` (see the README).

Gradio is an optional extra (``requirements-ui.txt``): it is imported only when the app starts.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.cli import LIBRARY_WARNINGS, error_line
from pipeline.config import PipelineConfig, build_config
from pipeline.core.errors import (
    EXIT_OK,
    EngineUnavailableError,
    InputError,
    Interrupted,
    LipSyncError,
)
from pipeline.model_cache import ModelCache

DEFAULT_HOST = "127.0.0.1"  # loopback: the page is not reachable from other machines unless asked
DEFAULT_PORT = 7860
DEFAULT_OUTPUT_DIR = Path("results") / "ui"
INSTALL_HINT = "pip install -r requirements-ui.txt (or: make ui)"


def overrides_from_form(form: dict[str, Any]) -> dict[str, Any]:
    """The page's values (``None`` or ``""`` = the default) nested like the YAML config.

    ``speech_source`` is "text" or "audio"; ``box`` and ``pads`` are four numbers (top, bottom, left,
    right) separated by spaces or commas; a batch size of 0 means the default.
    """
    use_text = form.get("speech_source", "text") == "text"
    text = (form.get("text") or "").strip() if use_text else None
    return {
        "video": form.get("video") or None, "text_string": text if use_text else None,
        "precision": form.get("precision") or None,
        "audio": None if use_text else (form.get("audio") or ""),
        "tts": {
            "engine": form.get("engine"), "voice": form.get("voice") or None,
            "speed": _int(form.get("speed")),
        },
        "detect": {
            "box": _four(form.get("box"), "box"), "pads": _four(form.get("pads"), "pads"),
            "face": _face(form.get("face")),
        },
        "wav2lip": {"paste": form.get("paste"), "batch_size": _int(form.get("batch_size"))},
        "restore": {
            "restorer": form.get("restorer"), "fidelity": form.get("fidelity"),
            "upscale": _int(form.get("upscale")), "batch_size": _int(form.get("restore_batch")),
        },
        "output": {"path": form.get("output")},
    }  # fmt: skip


def _int(value: Any) -> int | None:
    return int(value) if value not in (None, "", 0) else None


def _face(value: Any) -> str | int | None:
    text = str(value or "").strip()
    return int(text) if text.isdigit() else (text or None)


def _four(text: Any, what: str) -> list[int] | None:
    words = str(text or "").replace(",", " ").split()
    if not words:
        return None
    if len(words) != 4 or not all(w.lstrip("-").isdigit() for w in words):
        raise InputError(f"{what} must be four whole numbers: top bottom left right (got {text!r})")
    return [int(w) for w in words]


def missing_weights_message(config: PipelineConfig) -> str | None:
    """The CLI's "missing weights" line for the default settings, or None when all are present."""
    from pipeline.stage_weights import resolve_weights

    try:
        resolve_weights(config)
    except LipSyncError as exc:
        return error_line(exc)
    return None


@dataclass
class Renderer:
    """Runs the page's renders with one model cache; ``cancel(session)`` stops that session's render."""

    config_path: str | None
    output_dir: Path
    models: ModelCache = field(default_factory=ModelCache)
    _stops: dict[str, threading.Event] = field(default_factory=dict)

    def render(
        self, form: dict[str, Any], session: str, progress: Any = None
    ) -> tuple[Path | None, str, str]:
        """(output video or None, run summary, status line) for one press of Render."""
        stop = self._stops[session] = threading.Event()

        def report(stage: str, done: int, total: int) -> None:
            if stop.is_set():
                raise Interrupted("cancelled; no output was written")
            if progress is not None:
                frames = f" {done}/{total} frames" if total else (f" {done} frames" if done else "")
                progress((done, total) if total else None, desc=f"{stage}{frames}")

        try:
            config = self._config(form)
            with warnings.catch_warnings(record=True) as caught:
                for category in LIBRARY_WARNINGS:
                    warnings.simplefilter("ignore", category)
                import pipeline

                summary = pipeline.run(config, models=self.models, progress=report)
            notes = [f"warning: {w.message}" for w in caught if not issubclass(w.category, LIBRARY_WARNINGS)]
            return summary.output, "\n".join([summary.format(), *notes]), "done"
        except Exception as exc:  # noqa: BLE001 - every failure becomes the one line the CLI prints
            return None, "", error_line(exc)
        finally:
            self._stops.pop(session, None)

    def cancel(self, session: str) -> str:
        stop = self._stops.get(session)
        if stop is None:
            return "nothing is rendering"
        stop.set()
        return "cancelling..."

    def _config(self, form: dict[str, Any]) -> PipelineConfig:
        if not form.get("video"):
            raise InputError("no face video given: upload a video or a photo of a face")
        stem = Path(form["video"]).stem
        output = self.output_dir / f"{stem}_{time.strftime('%Y%m%d-%H%M%S')}_lipsync.mp4"
        overrides = overrides_from_form({**form, "output": str(output)})
        return build_config({**overrides, "quiet": True}, self.config_path)


def _gradio() -> Any:
    try:
        import gradio
    except ImportError:
        raise EngineUnavailableError(f"the web UI needs gradio: {INSTALL_HINT}") from None
    return gradio


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.app", description="the lip-sync web UI")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to serve on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--share", action="store_true", help="also make a public gradio.live link (off)")
    parser.add_argument("--config", metavar="FILE", help="YAML defaults instead of configs/inference.yaml")
    parser.add_argument("--output-dir", default=str(DEFAULT_OUTPUT_DIR), help="where renders are written")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.app``: serve the page until Ctrl-C; one-line errors, exit 2 without gradio."""
    args = parse_args(argv)
    try:
        gr = _gradio()
        config = build_config(None, args.config)
        missing = missing_weights_message(config)
        if missing:
            print(missing.replace("error:", "warning:", 1), file=sys.stderr)
        from pipeline.app_page import build_page

        renderer = Renderer(args.config, Path(args.output_dir))
        page = build_page(gr, config, renderer, missing)
        page.queue(default_concurrency_limit=1)  # one render at a time on the device
        page.launch(
            server_name=args.host,
            server_port=args.port,
            share=args.share,
            allowed_paths=[str(Path(args.output_dir).resolve())],
        )
    except LipSyncError as exc:
        print(error_line(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
