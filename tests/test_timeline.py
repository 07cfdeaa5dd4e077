import numpy as np
import pytest

from pipeline import timeline
from pipeline.frames import rebatch


def test_output_frame_count_rounds_to_nearest_frame():
    assert timeline.output_frame_count(2.0, 25) == 50
    assert timeline.output_frame_count(2.019, 25) == 50
    assert timeline.output_frame_count(2.021, 25) == 51
    assert timeline.output_frame_count(0.01, 25) == 1


def test_ping_pong_indices_have_no_jump():
    idx = timeline.source_indices(4, 12)
    assert idx.tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1]
    assert np.abs(np.diff(idx)).max() == 1


def test_longer_video_is_cut_and_still_repeats():
    assert timeline.source_indices(100, 5).tolist() == [0, 1, 2, 3, 4]
    assert timeline.source_indices(1, 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        timeline.source_indices(0, 3)


def test_runs_and_backward_chunks():
    idx = timeline.source_indices(5, 12)  # 0 1 2 3 4 3 2 1 0 1 2 3
    runs = list(timeline.runs(idx))
    assert runs == [timeline.Run(0, 4), timeline.Run(3, 0), timeline.Run(1, 3)]
    assert sum(len(r) for r in runs) == 12
    chunks = list(timeline.backward_chunks(timeline.Run(9, 0), 4))
    assert chunks == [(6, 10), (2, 6), (0, 2)]
    played = [i for start, stop in chunks for i in reversed(range(start, stop))]
    assert played == list(range(9, -1, -1))


def test_rebatch_keeps_order_and_sizes():
    parts = [np.arange(n0, n1)[:, None] for n0, n1 in [(0, 3), (3, 10), (10, 11), (11, 20)]]
    out = list(rebatch(iter(parts), 4))
    assert [len(b) for b in out] == [4, 4, 4, 4, 4]
    assert np.concatenate(out)[:, 0].tolist() == list(range(20))


def test_output_frames_follow_the_indices_from_cache_and_from_chunks(tmp_path, monkeypatch):
    from pipeline import frames as frames_module
    from pipeline.core.media import FrameSize
    from tests.media_fixtures import make_video, read_all_frames

    clip = make_video(tmp_path / "c.mp4", seconds=0.5, fps=25, size="64x48", audio=False)
    source = read_all_frames(clip)
    indices = timeline.source_indices(len(source), 61)
    size = FrameSize(64, 48)
    cached = np.concatenate(list(frames_module.iter_output_frames(clip, size, 25, indices, 8)))
    assert np.array_equal(cached, source[indices])
    monkeypatch.setattr(frames_module, "LOOP_CACHE_BYTES", 0)  # force chunked decoding
    monkeypatch.setattr(frames_module, "BACKWARD_CHUNK_BYTES", 64 * 48 * 3 * 3)
    batches = list(frames_module.iter_output_frames(clip, size, 25, indices, 8))
    assert [len(b) for b in batches[:-1]] == [8] * (len(batches) - 1)
    assert np.array_equal(np.concatenate(batches), source[indices])


@pytest.mark.parametrize(
    "fps, extra",
    [(25, []), (30, []), (30, ["-vf", "setpts='PTS+0.013*sin(N)/TB'", "-fps_mode", "vfr"])],
    ids=["25fps", "30fps", "vfr"],
)
def test_backward_play_from_input_seeks_is_frame_exact(tmp_path, monkeypatch, fps, extra):
    from pipeline import frames as frames_module
    from pipeline.core.media import FrameSize
    from tests.media_fixtures import make_video, read_all_frames

    suffix = ".mkv" if extra else ".mp4"
    clip = make_video(tmp_path / f"c{suffix}", seconds=3.0, fps=fps, size="64x48", audio=False,
                      extra=["-g", "12", "-bf", "0", *extra])  # fmt: skip
    source = read_all_frames(clip)
    indices = timeline.source_indices(len(source), 2 * len(source))
    monkeypatch.setattr(frames_module, "LOOP_CACHE_BYTES", 0)
    monkeypatch.setattr(frames_module, "BACKWARD_CHUNK_BYTES", 64 * 48 * 3 * 10)  # 10-frame chunks
    accepted = []
    seek_chunk = frames_module._seek_chunk

    def counting(*args):
        result = seek_chunk(*args)
        accepted.append(result is not None)
        return result

    monkeypatch.setattr(frames_module, "_seek_chunk", counting)
    played = np.concatenate(list(frames_module.iter_output_frames(clip, FrameSize(64, 48), 25, indices, 8)))
    assert np.array_equal(played, source[indices])
    assert len(accepted) >= 5
    if fps == 25:
        assert all(accepted)  # a source at the output rate always seeks exactly
    else:
        assert any(accepted)
