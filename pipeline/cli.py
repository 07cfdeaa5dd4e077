"""Command-line interface: flags -> config overrides -> ``pipeline.run``; one-line errors, exit codes.

Only ``run_pipeline.py`` exits the process: :func:`main` returns the exit code.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
import warnings
from typing import Any

from pipeline.core.device_names import DEVICE_HELP, device_argument
from pipeline.core.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    InputError,
    Interrupted,
    LipSyncError,
)

DESCRIPTION = """\
Make a talking-head video: the face in VIDEO (a video or a photo) speaks the given script or audio,
with lips synced by Wav2Lip and the face restored by GFPGAN or CodeFormer.

examples:
  python run_pipeline.py --text script.txt --video face.mp4
  python run_pipeline.py --audio speech.wav --video face.jpg -o out/talk.mp4 --restorer codeformer
  python run_pipeline.py --text script.txt --video face.mp4 --restorer codeformer --fidelity 1.0
  python run_pipeline.py --text-string "Hello there" --video face.mp4 --restorer none --box 40 300 80 280
  python run_pipeline.py --audio dialogue.wav --segments dialogue.srt --video two.mp4 \\
      --speaker-face A=left --speaker-face B=right      # cues 'A: ...' / 'B: ...', one face each
  python run_pipeline.py --check        # report ffmpeg, TTS engines, device and weight files

Defaults come from configs/inference.yaml (or --config FILE); flags override them.
Weights live in weights/ (see weights/README.md; fetch with: python -m pipeline.weights fetch).
Exit codes: 0 success, 2 bad input or usage, 3 missing or bad weights, 130 interrupted, 1 other."""


class UsageError(InputError):
    """A command-line usage mistake (unknown flag, missing value): exit code 2, one line."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of printing the usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = "see run_pipeline.py --help"
        if "expected one argument" in message:
            hint = f"a file name that starts with '-' is written --video=-name.mp4 or ./-name.mp4; {hint}"
        raise UsageError(f"{message} ({hint})")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LIBRARY_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="run_pipeline.py", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_io_flags(parser.add_argument_group("inputs and output"))
    _add_speech_flags(parser.add_argument_group("speech (text-to-speech)"))
    _add_face_flags(parser.add_argument_group("face detection"))
    _add_model_flags(parser.add_argument_group("lip-sync and restoration"))
    _add_run_flags(parser.add_argument_group("run"))
    return parser


def _add_io_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--text", metavar="FILE", help="UTF-8 script to speak (synthesised with --tts)")
    group.add_argument("--text-string", metavar="TEXT", help="the script itself, instead of --text FILE")
    group.add_argument("--audio", metavar="FILE", help="speech recording to lip-sync to (skips TTS)")
    group.add_argument("--video", metavar="FILE", help="face video (any format ffmpeg reads) or photo")
    group.add_argument(
        "-o", "--output", metavar="FILE", help="output video (default results/<video>_lipsync.mp4)"
    )
    group.add_argument("--crf", type=int, help="H.264 quality, lower is better (default 18)")
    group.add_argument(
        "--encoder",
        choices=["auto", "x264", "nvenc"],
        help="H.264 encoder (default auto: NVENC on a CUDA run where ffmpeg can use it, else libx264)",
    )
    group.add_argument("--save-audio", metavar="FILE.wav", help="also keep the speech as a WAV file")
    group.add_argument(
        "--speaker-voice",
        action="append",
        metavar="A=VOICE",
        help="a speaker's voice: espeak voice with an optional +variant (en-gb+f3), Coqui speaker, or "
        "sample:FILE (Coqui XTTS clones the voice of that recording)",
    )
    group.add_argument(
        "--speaker-face",
        action="append",
        metavar="A=FACE",
        help="a speaker's face, picked in the first frame with faces and then followed: left, right "
        "(smallest / largest box centre x), center, largest, N (N-th by box centre x, 0 = leftmost) "
        "or a fixed box:TOP,BOTTOM,LEFT,RIGHT",
    )
    group.add_argument("--segments", metavar="FILE", help="who speaks when in --audio (.srt, .vtt, .json)")


def _add_speech_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--tts", choices=["espeak", "coqui"], help="speech engine (default espeak, offline)")
    group.add_argument("--voice", help="espeak voice/language, e.g. en-us, de, fr (default en-us)")
    group.add_argument("--speed", type=int, help="espeak speaking rate in words per minute (default 165)")
    group.add_argument("--tts-model", metavar="NAME", help="Coqui model name")
    group.add_argument("--tts-model-path", metavar="FILE", help="Coqui model file (with --tts-config-path)")
    group.add_argument("--tts-config-path", metavar="FILE", help="Coqui model config.json")
    group.add_argument("--speaker", help="speaker of a multi-speaker Coqui model")
    group.add_argument("--language", help="language of a multilingual Coqui model")
    group.add_argument("--voice-sample", metavar="FILE", help="a few seconds of a voice to clone (XTTS-v2)")
    group.add_argument(
        "--clone-voice-from-video",
        action="store_true",
        default=None,
        help="clone the voice of the video's audio",
    )


def _add_face_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--detector", choices=["retinaface_resnet50", "retinaface_mobile0.25"], help="face detector"
    )
    group.add_argument(
        "--detector-checkpoint", metavar="FILE", help="detector weights elsewhere than weights/"
    )
    group.add_argument(
        "--box",
        type=int,
        nargs=4,
        metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
        help="fixed face box: skip detection",
    )
    group.add_argument(
        "--pads",
        type=int,
        nargs=4,
        metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
        help="pad the face box (default 0 10 0 0)",
    )
    group.add_argument(
        "--nosmooth", action="store_true", default=None, help="do not smooth boxes over 5 frames"
    )
    group.add_argument(
        "--face", help="which face when several: largest (default), center, or N (0 = leftmost)"
    )


def _add_model_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--wav2lip-checkpoint", metavar="FILE", help="Wav2Lip generator (default weights/wav2lip_gan.pth)"
    )
    group.add_argument(
        "--paste", choices=["feather", "hard"], help="mouth paste-back (default feather: no seam)"
    )
    group.add_argument(
        "--hold-silence",
        type=float,
        metavar="S",
        help="keep the original mouth in pauses over S s (0.25; 0: off)",
    )
    group.add_argument("--batch-size", type=int, help="lip-sync batch size (default 128 on CUDA, 16 on CPU)")
    group.add_argument(
        "--restorer", choices=["gfpgan", "codeformer", "none"], help="face restoration (default gfpgan)"
    )
    group.add_argument(
        "--restorer-checkpoint", metavar="FILE", help="restorer weights elsewhere than weights/"
    )
    group.add_argument(
        "--fidelity",
        type=float,
        help="CodeFormer fidelity 0..1: higher is steadier on video (default 0.5; 1.0 for video)",
    )
    group.add_argument(
        "--restore-batch", type=int, help="faces per restoration forward pass (default 8 on CUDA, 1 on CPU)"
    )
    group.add_argument(
        "--restore-backend",
        choices=["auto", "torch", "openvino"],
        help="runtime of the restorer (default torch; auto or openvino: GFPGAN and CodeFormer on the CPU run "
        "on OpenVINO, 1.5-3x faster, the converted model kept in weights/.openvino/)",
    )
    group.add_argument("--upscale", type=int, choices=[1, 2, 4], help="output scale (default 1)")
    group.add_argument(
        "--bg-upsampler", choices=["realesrgan"], help="upscale the background with RealESRGAN x2"
    )


def _add_run_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--device",
        type=device_argument,
        metavar="DEVICE",
        help=f"where models run: {DEVICE_HELP} (default auto)",
    )
    group.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="compute precision (default auto: per network the fastest the device and architecture support)",
    )
    group.add_argument("--config", metavar="FILE", help="YAML defaults instead of configs/inference.yaml")
    group.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    group.add_argument(
        "--check", action="store_true", help="report ffmpeg, TTS, device and weights, then exit"
    )
    group.add_argument("--quiet", action="store_true", default=None, help="no progress bars or summary")
    group.add_argument("--debug", action="store_true", default=None, help="show the full traceback on errors")
    group.add_argument("--batch", metavar="FILE", help="render every job (row) of a .csv or .yaml jobs file")
    group.add_argument("--batch-dir", metavar="DIR", help="render each name.mp4|jpg with its name.txt|wav")
    group.add_argument("--overwrite", action="store_true", help="with --batch: redo jobs whose output exists")
    group.add_argument(
        "--batch-workers",
        type=int,
        metavar="N",
        help="with --batch: jobs rendered at once (default 2 on the CPU, each on half the cores; 1 on a GPU)",
    )


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flags the user gave, nested like the YAML config (``None`` = not given)."""
    return {
        "video": args.video, "text": args.text, "text_string": args.text_string, "audio": args.audio,
        "device": args.device, "precision": args.precision, "quiet": args.quiet, "debug": args.debug,
        "tts": {
            "engine": args.tts, "voice": args.voice, "speed": args.speed, "model_name": args.tts_model,
            "model_path": args.tts_model_path, "config_path": args.tts_config_path, "speaker": args.speaker,
            "language": args.language, "voice_sample": args.voice_sample,
            "clone_voice_from_video": args.clone_voice_from_video,
        },
        "detect": {
            "model": args.detector, "checkpoint": args.detector_checkpoint, "box": args.box,
            "pads": args.pads, "nosmooth": args.nosmooth, "face": args.face,
        },
        "wav2lip": {
            "checkpoint": args.wav2lip_checkpoint, "batch_size": args.batch_size, "paste": args.paste,
            "hold_silence": args.hold_silence,
        },
        "restore": {
            "restorer": args.restorer, "checkpoint": args.restorer_checkpoint, "fidelity": args.fidelity,
            "batch_size": args.restore_batch, "upscale": args.upscale, "bg_upsampler": args.bg_upsampler,
            "backend": args.restore_backend,
        },
        "output": {
            "path": args.output,
            "crf": args.crf,
            "encoder": args.encoder,
            "save_audio": args.save_audio,
        },
        "speakers": {"voices": args.speaker_voice, "faces": args.speaker_face, "segments": args.segments},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``) and return the process exit code.

    Usage mistakes, bad inputs and failures print one ``error: ...`` line on stderr (``--debug`` adds
    the traceback); SIGTERM and Ctrl-C stop the run with exit code 130 and leave no output behind.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return _report(exc, exc.exit_code, debug)
    except SystemExit as exc:  # --help: argparse printed it and asked to exit
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    previous = {sig: signal.signal(sig, _on_stop_signal) for sig in STOP_SIGNALS}
    try:
        return _dispatch(args)
    except LipSyncError as exc:
        return _report(exc, exc.exit_code, debug)
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        batch = args.batch or args.batch_dir
        left = "the jobs in flight wrote no output" if batch else "no output was written"
        return _report(Interrupted(f"{what}; {left}"), EXIT_INTERRUPTED, debug, exc)
    except Exception as exc:  # noqa: BLE001 - the one place that turns any failure into one line
        return _report(exc, EXIT_FAILURE, debug)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _dispatch(args: argparse.Namespace) -> int:
    from pipeline.config import build_config
    from pipeline.core.config_io import dump_yaml

    config = build_config(overrides_from_args(args), args.config)
    if args.print_config:
        print(dump_yaml(config), end="")
        return EXIT_OK
    if args.check:
        from pipeline.doctor import environment_report

        text, ok = environment_report(config)
        print(text)
        return EXIT_OK if ok else EXIT_BAD_INPUT
    import pipeline

    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        for category in LIBRARY_WARNINGS:  # notes for developers of the libraries, not for users
            warnings.simplefilter("ignore", category)
        if args.batch or args.batch_dir:  # -o is the output folder then; the jobs are checked one by one
            from pipeline.batch import run_batch_command

            return run_batch_command(args, build_parser(), overrides_from_args)
        summary = pipeline.run(config)
    if not config.quiet:
        print(summary.format())
    return EXIT_OK


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"warning: {message}", file=sys.stderr)


def _on_stop_signal(signum: int, frame: object) -> None:
    """Stop the run: Ctrl-C raises KeyboardInterrupt, SIGTERM :class:`Terminated` (both exit 130).

    Further stop signals are ignored from here on, so that a second Ctrl-C cannot cut short the
    clean-up (killing ffmpeg, deleting the temporary output) that the first one started.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C: a BaseException, so no ``except Exception`` on the way swallows it."""


def _report(exc: BaseException, code: int, debug: bool, cause: BaseException | None = None) -> int:
    if debug:
        traceback.print_exception(cause or exc)
    print(error_line(exc), file=sys.stderr)
    return code


def error_line(exc: BaseException) -> str:
    """The one ``error: ...`` line a failure is reported with (the CLI's and the web UI's)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, LipSyncError):
        message = f"{type(exc).__name__}: {message} (run with --debug for the traceback)"
    return f"error: {message}"
