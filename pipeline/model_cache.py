"""Loaded stage models kept between renders (a batch, the web UI): each is loaded once per checkpoint
file and device, and loaded again only when that file changes on disk."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

Model = TypeVar("Model")


class ModelCache:
    """``load(loader, *args)`` calls ``loader(*args)`` the first time and returns the same object after.

    The key is the loader and its arguments (checkpoint paths, device, the config section the loader
    reads); a ``Path`` argument also keys on the file's size and modification time, so a checkpoint
    replaced on disk is loaded afresh. Safe to call from several threads.
    """

    def __init__(self) -> None:
        self._models: dict[tuple, Any] = {}
        self._lock = threading.Lock()
        self.loads = 0  # how many times a loader actually ran

    def load(self, loader: Callable[..., Model], *args: Any) -> Model:
        key = (loader.__module__, loader.__qualname__, *(_key_of(arg) for arg in args))
        with self._lock:
            if key not in self._models:
                self._models[key] = loader(*args)
                self.loads += 1
            return self._models[key]

    def __len__(self) -> int:
        return len(self._models)


def call_loader(loader: Callable[..., Model], *args: Any) -> Model:
    """No caching: what a single render uses (the models live as long as the render)."""
    return loader(*args)


def _key_of(arg: Any) -> Any:
    if isinstance(arg, Path):
        try:
            stat = os.stat(arg)
        except OSError:
            return (str(arg), None)
        return (str(arg.resolve()), stat.st_size, stat.st_mtime_ns)
    return repr(arg)  # frozen config sections and device strings: equal settings, equal text
