"""The file lists of a preprocessed data set: ``train.txt`` / ``val.txt`` (/ ``test.txt``), one
``<video_id>/<utterance>`` per line; a new seeded split, or LRS2's official lists cut to the usable
utterances."""

from __future__ import annotations

import random
from pathlib import Path

from pipeline.core.errors import ConfigError

SPLITS = ("train", "val", "test")


def split_filelists(names: list[str], train_fraction: float, seed: int = 0) -> dict[str, list[str]]:
    """A seeded random train/val split of ``names`` (both non-empty when there are two or more)."""
    if not 0.0 < train_fraction < 1.0:
        raise ConfigError(f"--make-filelists takes the train fraction in (0, 1), got {train_fraction}")
    shuffled = sorted(names)
    random.Random(seed).shuffle(shuffled)
    n_train = min(max(1, round(len(shuffled) * train_fraction)), max(1, len(shuffled) - 1))
    return {"train": sorted(shuffled[:n_train]), "val": sorted(shuffled[n_train:])}


def filter_filelists(source_dir: Path, usable: set[str]) -> dict[str, list[str]]:
    """The official lists in ``source_dir`` (``train.txt``, ``val.txt``, ``test.txt``) restricted to
    ``usable`` utterances; only the first word of each line is kept."""
    lists = {}
    for split in SPLITS:
        path = source_dir / f"{split}.txt"
        if path.is_file():
            names = [ln.split()[0] for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            lists[split] = [n for n in names if n in usable]
    return lists


def write_filelists(out_root: Path, lists: dict[str, list[str]]) -> list[Path]:
    paths = []
    for split, names in lists.items():
        path = out_root / f"{split}.txt"
        path.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
        paths.append(path)
    return paths


def make_filelists(
    out_root: Path, usable: list[str], train_fraction: float | None, source_dir: Path | None
) -> list[Path]:
    """Write ``train.txt`` / ``val.txt`` (and ``test.txt``) of the ``usable`` utterances: a new seeded
    split with ``train_fraction``, else the official lists found in ``source_dir``; [] when neither
    applies."""
    if train_fraction is not None:
        return write_filelists(out_root, split_filelists(usable, train_fraction))
    if source_dir is not None and (source_dir / "train.txt").is_file():
        return write_filelists(out_root, filter_filelists(source_dir, set(usable)))
    return []
