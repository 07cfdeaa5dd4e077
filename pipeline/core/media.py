"""Streaming media I/O: frames in and out of ffmpeg through pipes, in bounded batches.

Nothing here holds a whole video: :class:`VideoReader` yields ``(n, H, W, 3) uint8`` BGR batches from
an ffmpeg decoder's stdout, :class:`VideoWriter` feeds an ffmpeg encoder's stdin while a thread feeds
the speech through a second pipe, and the encoder writes to a temporary name that is renamed onto the
output path only after ffmpeg succeeded.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.core import ffmpeg
from pipeline.core.errors import AudioError, FFmpegError, InputError
from pipeline.core.file_memo import FileMemo, settled_key
from pipeline.core.types import AudioClip

PIPE_CHUNK_BYTES = 1 << 20  # audio is written to the encoder in 1 MiB pieces

# ffmpeg processes started here and not yet reaped. They run in sessions of their own (so that a
# terminal's Ctrl-C reaches only us, and we clean up in order); whatever is still running when the
# interpreter exits, after an error or an interrupt, is killed rather than left decoding on its own.
_LIVE_PROCESSES: weakref.WeakSet[subprocess.Popen] = weakref.WeakSet()


@atexit.register
def _kill_live_processes() -> None:
    for process in list(_LIVE_PROCESSES):
        if process.poll() is None:
            process.kill()


@dataclass(frozen=True)
class FrameSize:
    width: int
    height: int

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * 3


# The first frame and the frame count of each face video, kept while the file is unchanged: the jobs of
# a batch often share one face video (one presenter, many scripts).
_FIRST_FRAMES = FileMemo(max_entries=4)  # 4 frames of 1080p hold 25 MB
_FRAME_COUNTS = FileMemo()


def read_first_frame(path: str | Path, fps: float) -> np.ndarray:
    """The first decoded frame of ``path`` (``(H, W, 3) uint8`` BGR) after the standard filter chain."""
    return _FIRST_FRAMES.get(path, lambda: _decode_first_frame(path, fps), fps).copy()


def _decode_first_frame(path: str | Path, fps: float) -> np.ndarray:
    result = subprocess.run(ffmpeg.first_frame_args(path, fps), capture_output=True, check=False)
    frame = None
    if result.returncode == 0 and result.stdout:
        frame = cv2.imdecode(np.frombuffer(result.stdout, np.uint8), cv2.IMREAD_COLOR)
    if frame is None:
        detail = ffmpeg.essential_stderr(result.stderr) if result.stderr else "no frame decoded"
        raise InputError(f"video {path} has no decodable frame: {detail}")
    return frame


class FrameCounter:
    """The frames of ``path`` at constant ``fps`` (at most ``max_frames``), counted without keeping any
    pixels: ffmpeg starts now and counts while the caller works; :meth:`result` collects the number.
    A count of this version of the file made before (in this process) that answers it starts no ffmpeg.

    ffmpeg writes one byte per frame into a pipe (64 KiB hold 43 minutes at 25 fps before it waits).
    Leaving the context without :meth:`result` (an error, Ctrl-C) kills it.
    """

    def __init__(self, path: str | Path, fps: float, max_frames: int | None = None) -> None:
        self.path, self.fps, self.max_frames = Path(path), fps, max_frames
        self._file = settled_key(path)  # the version counted (None: the count is not kept)
        self._known = _known_count(path, fps, max_frames)
        self._process: subprocess.Popen | None = None
        if self._known is None:
            self._process = subprocess.Popen(
                ffmpeg.count_frames_args(path, fps, max_frames),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            _LIVE_PROCESSES.add(self._process)

    def result(self) -> int:
        """Wait for ffmpeg; the number of frames (FFmpegError when decoding failed)."""
        if self._process is None:
            assert self._known is not None
            return self._known
        stdout, stderr = self._process.communicate()
        _LIVE_PROCESSES.discard(self._process)
        if self._process.returncode != 0:
            raise FFmpegError(f"decoding {self.path} failed: {ffmpeg.essential_stderr(stderr)}")
        _FRAME_COUNTS.keep(self._file, (len(stdout), self.max_frames), self.fps)
        return len(stdout)

    def close(self) -> None:
        if self._process is None:
            return
        _terminate(self._process)
        if self._process.stderr is not None:
            self._process.stderr.close()

    def __enter__(self) -> FrameCounter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _known_count(path: str | Path, fps: float, max_frames: int | None) -> int | None:
    """The count an earlier :class:`FrameCounter` of this version of ``path`` implies, else None: fewer
    frames than its cap is the whole video; a count that reached its cap answers any smaller cap."""
    counted = _FRAME_COUNTS.find(path, fps)
    if counted is None:
        return None
    count, cap = counted
    if cap is None or count < cap:
        return count if max_frames is None else min(count, max_frames)
    return max_frames if max_frames is not None and max_frames <= count else None


class VideoReader:
    """Decode frames ``[start_frame, start_frame + max_frames)`` of the constant-``fps`` stream.

    Iterating yields ``(n, H, W, 3) uint8`` BGR arrays of at most ``batch_size`` frames. Use as a
    context manager so that the ffmpeg process is always reaped.
    """

    def __init__(
        self,
        path: str | Path,
        size: FrameSize,
        fps: float,
        batch_size: int,
        start_frame: int = 0,
        max_frames: int | None = None,
        seek_frame: int = 0,
    ) -> None:
        self.path, self.size, self.batch_size = Path(path), size, batch_size
        args = ffmpeg.decode_video_args(path, fps, start_frame, max_frames, seek_frame)
        self._process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        _LIVE_PROCESSES.add(self._process)
        self._stderr = _StderrCollector(self._process)

    def __iter__(self) -> Iterator[np.ndarray]:
        frame_bytes = self.size.frame_bytes
        stdout = self._process.stdout
        assert stdout is not None
        while True:
            buffer = bytearray(frame_bytes * self.batch_size)
            filled = _read_into(stdout, buffer)
            count = filled // frame_bytes
            if count:
                frames = np.frombuffer(buffer, np.uint8, count * frame_bytes)
                yield frames.reshape(count, self.size.height, self.size.width, 3)
            if filled < len(buffer):
                break
        self._finish()

    def _finish(self) -> None:
        code = self._process.wait()
        if code != 0:
            raise FFmpegError(f"decoding {self.path} failed: {self._stderr.essential()}")

    def close(self) -> None:
        _terminate(self._process)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def decode_audio(path: str | Path, sample_rate_hz: int = ffmpeg.SPEECH_SAMPLE_RATE_HZ) -> AudioClip:
    """The first audio stream of ``path`` as mono float32 at ``sample_rate_hz`` (channels averaged)."""
    result = subprocess.run(ffmpeg.decode_audio_args(path, sample_rate_hz), capture_output=True, check=False)
    if result.returncode != 0:
        raise AudioError(f"cannot decode audio from {path}: {ffmpeg.essential_stderr(result.stderr)}")
    samples = np.frombuffer(result.stdout, dtype="<f4").astype(np.float32)
    if samples.size == 0:
        raise AudioError(f"audio {path} holds no samples")
    return AudioClip(samples, sample_rate_hz)


def load_speech(path: str | Path, sample_rate_hz: int = ffmpeg.SPEECH_SAMPLE_RATE_HZ) -> AudioClip:
    """The first audio stream of ``path`` as mono float32 at ``sample_rate_hz``, resampled as
    ``librosa.load(path, sr=sample_rate_hz)`` resamples (the official Wav2Lip features).

    A source already at ``sample_rate_hz`` is decoded as it is; one at another rate is decoded at its
    own rate and resampled with :func:`resample_like_librosa` (soxr HQ), not with ffmpeg's default
    resampler, which differs from librosa's by up to 0.08 on a chirp. AudioError when the file has no
    audio stream, cannot be decoded or is empty.
    """
    source_rate = _source_rate_hz(Path(path))
    if source_rate is None or source_rate == sample_rate_hz:
        return decode_audio(path, sample_rate_hz)
    samples = decode_audio(path, source_rate).samples
    return AudioClip(resample_like_librosa(samples, source_rate, sample_rate_hz), sample_rate_hz)


def resample_like_librosa(samples: np.ndarray, source_rate_hz: int, target_rate_hz: int) -> np.ndarray:
    """``(n,)`` float samples resampled as ``librosa.resample(res_type="soxr_hq")``: soxr HQ, then
    zero-padded or cut to ``ceil(n * target / source)`` samples. Returns float32."""
    import soxr  # installed with librosa; imported here since most runs never resample

    out = soxr.resample(np.asarray(samples, np.float32), source_rate_hz, target_rate_hz, quality="HQ")
    n_out = int(np.ceil(len(samples) * float(target_rate_hz) / source_rate_hz))
    out = out[:n_out] if len(out) >= n_out else np.pad(out, (0, n_out - len(out)))
    return np.ascontiguousarray(out, dtype=np.float32)


def _source_rate_hz(path: Path) -> int | None:
    """Sample rate of the first audio stream of ``path``; None when ffmpeg cannot tell (decoding then
    reports the error)."""
    result = subprocess.run(ffmpeg.probe_args(path), capture_output=True, check=False)
    stderr = result.stderr.decode("utf-8", "replace")
    return ffmpeg.parse_probe(path, stderr).audio_sample_rate_hz if "Input #0" in stderr else None


class VideoWriter:
    """Encode BGR frames plus the speech into ``output`` with one ffmpeg process.

    Frames go through stdin, the audio through an extra pipe fed by a thread. ffmpeg writes to a hidden
    temporary file beside ``output``; :meth:`commit` waits for ffmpeg and renames it onto ``output``.
    Leaving the context without ``commit`` (an error, Ctrl-C) kills ffmpeg and deletes the temporary.
    """

    def __init__(
        self,
        output: str | Path,
        size: FrameSize,
        fps: float,
        crf: int,
        preset: str,
        audio: AudioClip,
        encoder: str = "x264",
    ):
        self.output = Path(output)
        self.temp_path = self.output.with_name(
            f".{self.output.stem}.partial-{os.getpid()}{self.output.suffix}"
        )
        self.frames_written = 0
        self._size = size
        remove_stale_partials(self.output)
        read_fd, write_fd = os.pipe()
        args = ffmpeg.encode_args(
            self.temp_path, size.width, size.height, fps, crf, preset, read_fd, audio.sample_rate_hz, encoder
        )
        try:
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(read_fd,),
                start_new_session=True,
            )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        _LIVE_PROCESSES.add(self._process)
        self._stderr = _StderrCollector(self._process)
        self._audio_thread = threading.Thread(target=_feed_audio, args=(write_fd, audio.samples), daemon=True)
        self._audio_thread.start()

    def write(self, frames: np.ndarray) -> None:
        """Append ``(n, H, W, 3) uint8`` BGR frames of the writer's size."""
        if frames.shape[1:] != (self._size.height, self._size.width, 3) or frames.dtype != np.uint8:
            raise ValueError(f"frames of shape {frames.shape} {frames.dtype} do not fit the encoder")
        try:
            assert self._process.stdin is not None
            self._process.stdin.write(memoryview(np.ascontiguousarray(frames)).cast("B"))  # no copy
        except BrokenPipeError as exc:
            self._process.wait()
            raise FFmpegError(f"encoding {self.output} failed: {self._stderr.essential()}") from exc
        self.frames_written += len(frames)

    def commit(self) -> Path:
        """Finish encoding and move the file onto the output path."""
        assert self._process.stdin is not None
        self._process.stdin.close()
        code = self._process.wait()
        self._audio_thread.join(timeout=10)
        if code != 0:
            raise FFmpegError(f"encoding {self.output} failed: {self._stderr.essential()}")
        os.replace(self.temp_path, self.output)
        return self.output

    def abort(self) -> None:
        try:
            _terminate(self._process)
        finally:
            self.temp_path.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process.poll() is None or self.temp_path.exists():
            self.abort()


def remove_stale_partials(output: Path) -> None:
    """Delete temporaries of ``output`` left by runs that were killed outright (SIGKILL, out of memory),
    recognised by the process id in their name no longer being alive."""
    for partial in output.parent.glob(f".{output.stem}.partial-*{output.suffix}"):
        pid = partial.name[len(f".{output.stem}.partial-") : len(partial.name) - len(output.suffix)]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            partial.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _feed_audio(fd: int, samples: np.ndarray) -> None:
    data = memoryview(np.ascontiguousarray(samples, dtype="<f4")).cast("B")  # no copy of the speech
    try:
        with os.fdopen(fd, "wb") as pipe:
            for offset in range(0, len(data), PIPE_CHUNK_BYTES):
                pipe.write(data[offset : offset + PIPE_CHUNK_BYTES])
    except (BrokenPipeError, OSError):
        pass  # ffmpeg ended early; its own exit status reports why


class _StderrCollector:
    """Drains a process's stderr in a thread (so it never blocks) and keeps the text."""

    def __init__(self, process: subprocess.Popen) -> None:
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._drain, args=(process,), daemon=True)
        self._thread.start()

    def _drain(self, process: subprocess.Popen) -> None:
        assert process.stderr is not None
        with process.stderr:
            for line in process.stderr:
                self._chunks.append(line)

    def essential(self) -> str:
        self._thread.join(timeout=5)
        return ffmpeg.essential_stderr(b"".join(self._chunks))


def _read_into(stream, buffer: bytearray) -> int:
    """Fill ``buffer`` from ``stream`` until it is full or the stream ends; return the bytes read."""
    view, filled = memoryview(buffer), 0
    while filled < len(buffer):
        count = stream.readinto(view[filled:])
        if not count:
            break
        filled += count
    return filled


def _terminate(process: subprocess.Popen) -> None:
    _LIVE_PROCESSES.discard(process)
    if process.poll() is None:
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
