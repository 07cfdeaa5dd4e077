"""What a long-lived process learns from a file is kept while the file is unchanged, and only then."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.core import ffmpeg, media
from pipeline.core.errors import InputError
from pipeline.core.file_memo import FileMemo
from pipeline.core.media import FrameCounter, read_first_frame
from tests.media_fixtures import make_tone, make_video


def _settle(path: Path, seconds_ago: float = 60.0) -> Path:
    """Date the file's modification back, as for any file not written this very second."""
    past = time.time() - seconds_ago
    os.utime(path, (past, past))
    return path


def _settled_file(path: Path, text: str = "x") -> Path:
    path.write_text(text)
    return _settle(path)


def _counted(calls: list[str]):
    def compute():
        calls.append("computed")
        return len(calls)

    return compute


def test_a_result_is_kept_until_the_file_changes(tmp_path):
    path = _settled_file(tmp_path / "a.txt", "some content here.....")
    memo, calls = FileMemo(), []
    assert memo.get(path, _counted(calls)) == memo.get(path, _counted(calls)) == 1
    assert memo.get(path, _counted(calls), "other extra") == 2  # a different question about it
    path.write_text("same size, new content")  # rewritten: new times
    _settle(path, seconds_ago=30.0)
    assert memo.get(path, _counted(calls)) == 3


def test_nothing_is_kept_for_a_file_modified_this_second_or_on_an_error(tmp_path):
    path = tmp_path / "fresh.txt"
    path.write_text("just written")  # may still change within its time stamp's tick
    memo, calls = FileMemo(), []
    assert memo.get(path, _counted(calls)) == 1 and memo.get(path, _counted(calls)) == 2
    _settle(path)

    def failing():
        raise InputError("bad file")

    with pytest.raises(InputError):
        memo.get(path, failing)
    assert memo.get(path, _counted(calls)) == 3  # the error was not kept
    assert memo.get(tmp_path / "missing.txt", _counted(calls)) == 4  # compute() reports a missing file


def test_the_memo_drops_the_least_recently_used(tmp_path):
    memo = FileMemo(max_entries=2)
    files = [_settled_file(tmp_path / f"{i}.txt") for i in range(3)]
    for path in files:
        memo.get(path, lambda p=path: p.name)
    assert memo.find(files[0]) is None and memo.find(files[2]) == "2.txt"


def test_a_video_is_probed_decoded_and_counted_once_while_unchanged(tmp_path, monkeypatch):
    video = _settle(make_video(tmp_path / "v.mp4", seconds=0.4))  # 10 frames at 25 fps
    started: list[list[str]] = []  # every process (subprocess.run starts its own through Popen)
    popen = subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda args, **kw: started.append(args) or popen(args, **kw))

    def learn():
        info, frame = ffmpeg.probe(video, "video"), read_first_frame(video, 25.0)
        return info, frame, FrameCounter(video, 25.0, 50).result()

    first = learn()
    ffmpeg_runs = len(started)
    again = learn()
    assert len(started) == ffmpeg_runs == 3  # the second time started no ffmpeg
    assert again[0] == first[0] and np.array_equal(again[1], first[1]) and again[2] == first[2] == 10
    again[1][:] = 0  # the caller's copy, not the kept frame
    assert read_first_frame(video, 25.0).any()
    assert FrameCounter(video, 25.0, 4).result() == 4 and FrameCounter(video, 25.0, None).result() == 10
    assert len(started) == 3  # the whole video was counted: any cap is answered
    video.unlink()
    make_tone(video, seconds=0.4)  # replaced by a sound file under the same name
    assert not ffmpeg.probe(video, "video").has_video


def test_a_count_that_reached_its_cap_answers_only_smaller_caps(tmp_path, monkeypatch):
    video = _settle(make_video(tmp_path / "v.mp4", seconds=0.4))
    assert FrameCounter(video, 25.0, 6).result() == 6  # stopped at 6 of 10
    assert FrameCounter(video, 25.0, 3)._process is None
    counter = FrameCounter(video, 25.0, 8)  # more than was counted: ffmpeg counts again
    assert counter._process is not None and counter.result() == 8
    counter.close()
    assert media._known_count(video, 25.0, 8) == 8 and media._known_count(video, 25.0, 9) is None
