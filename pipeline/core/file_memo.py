"""What was learned from a file, kept while the file is unchanged: a long-lived process (a batch, the
web UI) probes the same face video and reads the same weights manifest for every job; a process that
renders once pays the same as without the memo.

A file is "unchanged" while its device, inode, size, modification and status-change times are; any
write, replacement or ``touch`` makes it new. File times advance in clock ticks (up to 10 ms), so a file
modified less than ``RACY_S`` ago could be rewritten within the same tick at the same size: as git does
with its index, nothing is kept for such a file (it is worked out again next time). Only successful
results are kept: an error is raised again on the next call, as before.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

Result = TypeVar("Result")

MEMO_ENTRIES = 64  # results kept per memo, the least recently used dropped first
RACY_S = 1.0  # a file modified less than this long ago may still change within its time stamp
_MISSING = object()


class FileVersion(NamedTuple):
    path: str  # absolute
    device: int
    inode: int
    size_bytes: int
    modified_ns: int
    changed_ns: int

    @property
    def settled(self) -> bool:
        """Whether the file was last modified at least ``RACY_S`` ago."""
        return time.time_ns() - self.modified_ns >= RACY_S * 1e9


def file_key(path: str | Path) -> FileVersion | None:
    """What identifies this version of the file at ``path``; None when it cannot be stat'ed."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return FileVersion(
        os.path.abspath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns
    )


def settled_key(path: str | Path) -> FileVersion | None:
    """:func:`file_key` of a file modified at least ``RACY_S`` ago, else None (keep nothing for it)."""
    key = file_key(path)
    return key if key is not None and key.settled else None


class FileMemo:
    """``get(path, compute, *extra)``: ``compute()``'s result for this version of ``path`` and ``extra``
    (e.g. a frame rate), computed once. Safe to use from several threads."""

    def __init__(self, max_entries: int = MEMO_ENTRIES) -> None:
        self._results: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def get(self, path: str | Path, compute: Callable[[], Result], *extra: Hashable) -> Result:
        key = file_key(path)  # taken before compute(): a file changed meanwhile is not kept as this one
        found = self._find(key, extra)
        if found is not _MISSING:
            return found
        settled = key if key is not None and key.settled else None
        result = compute()
        self._keep(settled, extra, result)
        return result

    def find(self, path: str | Path, *extra: Hashable, default: Any = None) -> Any:
        """The result kept for this version of ``path`` and ``extra``, else ``default``."""
        found = self._find(file_key(path), extra)
        return default if found is _MISSING else found

    def keep(self, key: FileVersion | None, result: Any, *extra: Hashable) -> None:
        """Keep ``result`` for the file version ``key``: a :func:`settled_key` taken before the work."""
        self._keep(key, extra, result)

    def _find(self, key: FileVersion | None, extra: tuple) -> Any:
        with self._lock:
            if key is None or (key, extra) not in self._results:
                return _MISSING
            self._results.move_to_end((key, extra))
            return self._results[(key, extra)]

    def _keep(self, key: FileVersion | None, extra: tuple, result: Any) -> None:
        if key is None:  # unreadable, or it may have changed unseen: nothing to keep
            return
        with self._lock:
            self._results[(key, extra)] = result
            self._results.move_to_end((key, extra))
            while len(self._results) > self.max_entries:
                self._results.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._results.clear()
