"""The one exception family of the project.

Every error a user can cause or fix derives from :class:`LipSyncError`. It carries the process exit
code that ``run_pipeline.py`` returns, and its message is one line saying what went wrong, where, and
how to fix it. Library code raises; only the entry point exits.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_BAD_WEIGHTS = 3
EXIT_INTERRUPTED = 130


class LipSyncError(Exception):
    """Base class: a failure with a one-line, user-facing message."""

    exit_code = EXIT_FAILURE


class InputError(LipSyncError):
    """Bad input file, text or argument (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(InputError):
    """A configuration file or flag is invalid (unknown key, wrong type, out of range)."""


class DeviceUnavailableError(InputError):
    """The device asked for cannot be used here (e.g. ``--device cuda`` without a usable GPU)."""


class NoFaceError(InputError):
    """No face was found where one is required."""

    def __init__(self, message: str, frame_index: int | None = None) -> None:
        super().__init__(message)
        self.frame_index = frame_index


class AudioError(InputError):
    """Audio that cannot drive lip-sync (empty, NaN features, undecodable)."""


class TextError(InputError):
    """A script that cannot be spoken (empty, not UTF-8)."""


class WeightsError(LipSyncError):
    """A checkpoint is missing, corrupt, unsafe or of the wrong model (exit code 3)."""

    exit_code = EXIT_BAD_WEIGHTS


class MissingWeightsError(WeightsError):
    """A needed checkpoint file does not exist."""


class WrongModelError(WeightsError):
    """A checkpoint holds a different model than the one asked for."""


class FFmpegError(LipSyncError):
    """ffmpeg is missing or failed; the message carries its essential stderr line."""


class OutOfMemory(LipSyncError):
    """Even a batch of one item does not fit in the device's memory (exit code 1)."""


class EngineUnavailableError(LipSyncError):
    """An optional engine (TTS, CUDA) is not installed or not usable here."""


class Interrupted(LipSyncError):
    """The run was stopped by Ctrl-C or SIGTERM (exit code 130)."""

    exit_code = EXIT_INTERRUPTED
