"""Overlap I/O with model compute: a producer thread ahead of the models, a consumer thread behind them.

Decoding (reading ffmpeg's pipe, slicing mel windows) and encoding (writing to ffmpeg's pipe) release
the GIL, as do torch's operators, so one thread on each side keeps both ffmpeg processes busy while the
models run. Queues are bounded (a couple of batches), so memory stays flat; an exception on either side
is re-raised in the main thread, and closing stops the threads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_DONE = object()
QUEUE_POLL_S = 0.1  # how often a blocked thread checks whether it was told to stop


def prefetch(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Yield ``items`` while a thread produces up to ``depth`` of them ahead."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(slots, (True, item), stop):
                    return
            _put(slots, (True, _DONE), stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            _put(slots, (False, exc), stop)

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = slots.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
        close = getattr(items, "close", None)
        if close is not None and not thread.is_alive():
            close()


class BackgroundConsumer:
    """Call ``consume(item)`` for each :meth:`put` item in a thread, at most ``depth`` items behind.

    :meth:`finish` waits until every item is consumed and re-raises the first error; :meth:`cancel`
    drops what is queued.
    """

    def __init__(self, consume: Callable[[Any], None], depth: int = 1) -> None:
        self._consume = consume
        self._slots: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="consumer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._slots.get()
            if item is _DONE or self._stop.is_set():
                return
            try:
                self._consume(item)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the producer's thread
                self._error = exc
                self._stop.set()
                return

    def put(self, item: Any) -> None:
        self._raise_if_failed()
        if not _put(self._slots, item, self._stop):
            self._raise_if_failed()

    def finish(self) -> None:
        _put(self._slots, _DONE, self._stop)
        self._thread.join()
        self._raise_if_failed()

    def cancel(self) -> None:
        self._stop.set()
        _put(self._slots, _DONE, threading.Event(), timeout=QUEUE_POLL_S)
        self._thread.join(timeout=5)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error


def _put(slots: queue.Queue, item: Any, stop: threading.Event, timeout: float | None = None) -> bool:
    """Put ``item`` unless ``stop`` is set first; True when it was put."""
    while not stop.is_set():
        try:
            slots.put(item, timeout=QUEUE_POLL_S)
            return True
        except queue.Full:
            if timeout is not None:
                return False
    return False
