"""The layout of the web UI's page (Gradio Blocks) and its two events, Render and Cancel.

``gr`` is the gradio module, passed in by :func:`pipeline.app.main` so that this module imports
without gradio installed. (No ``from __future__ import annotations`` here: Gradio finds the
``gr.Request`` and ``gr.Progress`` parameters of an event by their evaluated annotations.)
"""

from typing import Any

from pipeline.config import PipelineConfig

# The order of the page's inputs, as the /render endpoint of Gradio's API takes them.
FORM_FIELDS = (
    "video", "speech_source", "text", "audio", "engine", "voice", "speed", "restorer", "fidelity",
    "face", "box", "pads", "paste", "upscale", "batch_size", "restore_batch", "precision",
)  # fmt: skip
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # the choices of --precision


def _numbers(values: Any) -> str:
    return " ".join(str(v) for v in values) if values else ""


def _inputs(gr: Any, config: PipelineConfig) -> list[Any]:
    """The form's components in ``FORM_FIELDS`` order, holding the config's defaults."""
    tts, restore = config.tts, config.restore
    with gr.Row():
        with gr.Column():
            video = gr.File(label="Face video or photo", type="filepath", elem_id="face-video")
            source = gr.Radio(["text", "audio"], value="text", label="Speech from", elem_id="speech-source")
            text = gr.Textbox(label="Script", lines=3, placeholder="What the face says", elem_id="script")
            audio = gr.Audio(
                sources=["upload", "microphone"],
                type="filepath",
                label="Speech audio",
                elem_id="speech-audio",
            )
        with gr.Column():
            engine = gr.Radio(["espeak", "coqui"], value=tts.engine, label="Speech engine")
            voice = gr.Textbox(value=tts.voice, label="Voice (espeak: en-us, de, fr...)")
            speed = gr.Number(value=tts.speed, label="Speed (words per minute)", precision=0)
            restorer = gr.Radio(["gfpgan", "codeformer", "none"], value=restore.restorer, label="Restorer")
            fidelity = gr.Slider(0.0, 1.0, value=restore.fidelity, step=0.05, label="CodeFormer fidelity")
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            face = gr.Textbox(
                value=str(config.detect.face), label="Face: largest, center or N (0 = leftmost)"
            )
            box = gr.Textbox(value=_numbers(config.detect.box), label="Fixed box: top bottom left right")
            pads = gr.Textbox(value=_numbers(config.detect.pads), label="Pads: top bottom left right")
        with gr.Row():
            paste = gr.Radio(["feather", "hard"], value=config.wav2lip.paste, label="Mouth paste")
            upscale = gr.Dropdown([1, 2, 4], value=restore.upscale, label="Upscale")
            batch = gr.Number(value=config.wav2lip.batch_size or 0, label="Lip-sync batch (0 = default)")
            restore_batch = gr.Number(value=restore.batch_size or 0, label="Restore batch (0 = default)")
            precision = gr.Dropdown(
                list(PRECISIONS), value=config.precision, label="Precision (auto: per network and device)"
            )
    return [
        video, source, text, audio, engine, voice, speed, restorer, fidelity,
        face, box, pads, paste, upscale, batch, restore_batch, precision,
    ]  # fmt: skip


def build_page(gr: Any, config: PipelineConfig, renderer: Any, missing_weights: str | None) -> Any:
    """The Blocks page; ``renderer`` is a :class:`pipeline.app.Renderer`."""

    def render(  # noqa: PLR0913 - one parameter per input, as Gradio passes them
        video, speech_source, text, audio, engine, voice, speed, restorer, fidelity,
        face, box, pads, paste, upscale, batch_size, restore_batch, precision,
        request: gr.Request, progress: gr.Progress = gr.Progress(),  # noqa: B008 - how Gradio injects it
    ) -> tuple:  # fmt: skip
        values = (
            video, speech_source, text, audio, engine, voice, speed, restorer, fidelity,
            face, box, pads, paste, upscale, batch_size, restore_batch, precision,
        )  # fmt: skip
        form = dict(zip(FORM_FIELDS, values))
        output, summary, status = renderer.render(form, _session(request), progress)
        path = str(output) if output else None
        return path, path, summary, status

    def cancel(request: gr.Request) -> str:
        return renderer.cancel(_session(request))

    with gr.Blocks(title="Lip-sync") as page:
        gr.Markdown("# Lip-sync\nA face video or photo speaks a script or a recording.")
        if missing_weights:
            gr.Markdown(f"**{missing_weights}**", elem_id="missing-weights")
        inputs = _inputs(gr, config)
        with gr.Row():
            start = gr.Button("Render", variant="primary", elem_id="render")
            stop = gr.Button("Cancel", elem_id="cancel")
        status = gr.Textbox(label="Status", interactive=False, elem_id="status")
        with gr.Row():
            video = gr.Video(label="Result", interactive=False, elem_id="result")
            download = gr.File(label="Download", interactive=False, elem_id="download")
        summary = gr.Textbox(label="Run summary", lines=4, interactive=False, elem_id="summary")
        start.click(
            render, inputs, [video, download, summary, status], api_name="render", concurrency_limit=1,
            concurrency_id="render",
        )  # fmt: skip
        stop.click(cancel, None, status, api_name="cancel", queue=False)
    return page


def _session(request: Any) -> str:
    return str(getattr(request, "session_hash", None) or "api")
