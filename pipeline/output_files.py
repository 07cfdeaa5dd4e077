"""The output file of a run: its default name, the checks that it can be written, and the folder the
render creates for it (and removes again when the render fails)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.core.errors import InputError

OUTPUT_SUFFIXES = {".mp4", ".mov", ".mkv"}
DEFAULT_RESULTS_DIR = Path("results")


def output_path(requested: str | None, video: Path) -> Path:
    """The output file: as requested, or ``results/<video stem>_lipsync.mp4``."""
    if requested:
        return Path(os.path.normpath(requested))  # "new/../o.mp4" is "o.mp4", without a folder "new"
    return DEFAULT_RESULTS_DIR / f"{video.stem}_lipsync.mp4"


def check_output(output: Path, inputs: list[Path]) -> None:
    """Refuse an output that overwrites an input or cannot be written. Its folder is not created here
    (the render creates it when it starts writing: see :func:`output_folder`)."""
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"output {output} must end in one of {', '.join(sorted(OUTPUT_SUFFIXES))}")
    if output.is_dir():
        raise InputError(f"output {output} is a directory; give a file name such as {output / 'out.mp4'}")
    for source in inputs:
        if output.resolve() == source.resolve():
            raise InputError(f"output {output} is the same file as the input; choose another -o/--output")
    existing = nearest_existing_folder(output.parent)
    if not existing.is_dir():
        raise _folder_error(output.parent, f"{existing} is in the way: not a folder")
    check_writable_folder(existing, output)


def nearest_existing_folder(folder: Path) -> Path:
    """``folder`` itself or its closest ancestor that is there (a file or a broken link in the way
    counts: the caller refuses it)."""
    folder = Path(os.path.abspath(folder))  # "new/.." names the working folder, not a folder to create
    for candidate in (folder, *folder.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(folder.anchor)  # not reached: the root of an absolute path is always there


@contextlib.contextmanager
def output_folder(folder: Path) -> Iterator[None]:
    """Make sure ``folder`` exists for the render; if the render fails, remove again the folders made
    here (only those this run created, and only while empty), so that a failed run leaves no trace."""
    created = _make_folders(Path(os.path.abspath(folder)))
    try:
        yield
    except BaseException:
        for made in reversed(created):  # deepest first
            try:
                made.rmdir()
            except OSError:
                break
        raise


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents one level at a time; the ones this call created,
    outermost first (a folder another run creates at the same moment is not counted as ours)."""
    missing = [p for p in (folder, *folder.parents) if not p.is_dir()]
    created = []
    for path in reversed(missing):
        try:
            path.mkdir()
            created.append(path)
        except FileExistsError:
            if not path.is_dir():
                raise _folder_error(folder, f"{path} is in the way: not a folder") from None
        except OSError as exc:
            raise _folder_error(folder, exc.strerror) from exc
    return created


def _folder_error(folder: Path, why: str | None) -> InputError:
    return InputError(
        f"cannot create the output folder {folder} ({why}); choose an -o/--output inside a folder you can "
        "write to"
    )


def check_writable_folder(folder: Path, output: Path) -> None:
    """Create and delete a hidden probe file in ``folder``: permissions alone do not tell (root,
    read-only mounts, /proc), and finding out only when the encoder opens the file wastes the run."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{output.stem}.partial-probe-"):
            pass
    except OSError as exc:
        raise InputError(
            f"output folder {folder} is not writable ({exc.strerror}); choose another -o/--output"
        ) from exc


def check_save_audio(path: Path, sources: list[Path]) -> None:
    """``--save-audio`` must be a ``.wav`` path that is none of the input files."""
    if path.suffix.lower() != ".wav":
        raise InputError(f"--save-audio {path} must end in .wav")
    if any(path.resolve() == source.resolve() for source in sources):
        raise InputError(f"--save-audio {path} is one of the input files; choose another file name")
