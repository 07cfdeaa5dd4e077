import threading
import time

import pytest

from pipeline.prefetch import BackgroundConsumer, prefetch


def test_prefetch_keeps_order_and_runs_ahead_in_a_thread():
    produced_in = []

    def source():
        for i in range(10):
            produced_in.append(threading.current_thread().name)
            yield i

    assert list(prefetch(source(), depth=2)) == list(range(10))
    assert set(produced_in) == {"prefetch"}


def test_prefetch_is_bounded():
    made = []

    def source():
        for i in range(100):
            made.append(i)
            yield i

    stream = prefetch(source(), depth=2)
    assert next(stream) == 0
    time.sleep(0.3)
    assert len(made) <= 4  # one consumed, two queued, one waiting to be queued
    stream.close()


def test_prefetch_reraises_producer_errors_in_the_consumer():
    def source():
        yield 1
        raise ValueError("decoder broke")

    stream = prefetch(source())
    assert next(stream) == 1
    with pytest.raises(ValueError, match="decoder broke"):
        next(stream)


def test_closing_early_stops_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    stream = prefetch(source(), depth=1)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert closed.wait(5)


def test_background_consumer_consumes_everything_in_order_and_reports_errors():
    seen = []
    consumer = BackgroundConsumer(seen.append, depth=2)
    for i in range(20):
        consumer.put(i)
    consumer.finish()
    assert seen == list(range(20))

    def fail(item):
        if item == 3:
            raise OSError("encoder pipe closed")

    failing = BackgroundConsumer(fail, depth=1)
    with pytest.raises(OSError, match="encoder pipe closed"):
        for i in range(50):
            failing.put(i)
            time.sleep(0.01)
        failing.finish()


def test_background_consumer_cancel_returns_promptly():
    release = threading.Event()
    consumer = BackgroundConsumer(lambda item: release.wait(2), depth=1)
    consumer.put(1)
    start = time.perf_counter()
    release.set()
    consumer.cancel()
    assert time.perf_counter() - start < 3


def test_streaming_batches_hold_whole_lipsync_forwards_within_the_byte_cap():
    from pipeline.core.media import FrameSize
    from pipeline.render import FRAME_BATCH_MAX_BYTES, frames_per_batch

    hd = FrameSize(1280, 720)
    assert FRAME_BATCH_MAX_BYTES // hd.frame_bytes == 24
    assert frames_per_batch(32, hd) == 24  # the byte cap alone
    assert frames_per_batch(32, hd, 16) == 16  # 24 would mean a forward of 16 and one of 8
    assert frames_per_batch(32, FrameSize(640, 360), 16) == 32  # already a multiple
    assert frames_per_batch(32, FrameSize(640, 360), 12) == 24
    assert frames_per_batch(32, FrameSize(3840, 2160), 16) == 2  # under one forward: the cap wins
