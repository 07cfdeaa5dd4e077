"""The weights registry: which checkpoints exist, where they live, how to fetch and check them.

``weights/manifest.yaml`` lists every checkpoint (file name, stage, sources, licence, and the size and
SHA-256 with the public page that shows each). :func:`resolve` finds a checkpoint or raises a
:class:`~pipeline.core.errors.MissingWeightsError` that says how to get it; :func:`fetch` downloads the
direct ones (resuming ``<file>.part``, checking what can be checked, renaming only when complete);
:func:`verify` reports what is on disk. Command line: ``python -m pipeline.weights list|fetch|verify``
(:mod:`pipeline.weights`).
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

from pipeline.core.config_io import WEIGHTS_DIR
from pipeline.core.download import DEFAULT_TIMEOUT_S, TransferError, WrongSizeError, download_to_part
from pipeline.core.drive import download_drive_file, drive_partials
from pipeline.core.errors import (
    ConfigError,
    MissingWeightsError,
    WeightsError,
)
from pipeline.core.weight_manifest import MANIFEST_PATH, STAGES, Source, WeightSpec, load_manifest

__all__ = [
    "MANIFEST_PATH", "STAGES", "Source", "WeightSpec", "load_manifest", "get_spec", "default_names",
    "path_of", "resolve", "file_status", "verify", "sha256_of", "fetch", "candidate_sources", "mirror_base",
    "source_for",
]  # fmt: skip

FETCH_COMMAND = "python -m pipeline.weights fetch"
PART_SUFFIX = ".part"
DRIVE_SUFFIX = ".drive.part"  # gdown's staging file (gdown keeps its own resumable temp beside it)
MIRROR_ENV = "LIPSYNC_WEIGHTS_MIRROR"  # base URL of an internal mirror, tried first, by file name
HASH_CHUNK_BYTES = 1 << 20  # bytes read from disk per SHA-256 update

# verify() statuses
MISSING = "missing"  # no file at the expected path
PRESENT = "present"  # file there; the manifest has no hash to check it against
VERIFIED = "verified"  # file there and it matches the manifest's size and SHA-256 (or SHA-256 prefix)
MISMATCH = "mismatch"  # file there but its size or hash differs from the manifest's, or it is empty


# ---------------------------------------------------------------- lookup


def get_spec(name: str, manifest: Mapping[str, WeightSpec] | None = None) -> WeightSpec:
    """The manifest entry ``name``; an unknown name is a :class:`~pipeline.core.errors.ConfigError`."""
    specs = load_manifest() if manifest is None else manifest
    if name not in specs:
        raise ConfigError(f"unknown checkpoint name {name!r} (known: {', '.join(specs)})")
    return specs[name]


def default_names(manifest: Mapping[str, WeightSpec] | None = None) -> list[str]:
    """Names of the checkpoints the default pipeline needs (``default: true``), in manifest order."""
    specs = load_manifest() if manifest is None else manifest
    return [name for name, spec in specs.items() if spec.default]


def path_of(
    name: str, weights_dir: str | Path = WEIGHTS_DIR, manifest: Mapping[str, WeightSpec] | None = None
) -> Path:
    """Where checkpoint ``name`` is expected: ``weights_dir / <manifest file>`` (it may not exist)."""
    return Path(weights_dir) / get_spec(name, manifest).file


def resolve(
    name: str,
    override_path: str | Path | None = None,
    weights_dir: str | Path = WEIGHTS_DIR,
    manifest: Mapping[str, WeightSpec] | None = None,
) -> Path:
    """The checkpoint file to load for ``name``: ``override_path`` if given, else :func:`path_of`.

    Raises :class:`~pipeline.core.errors.MissingWeightsError` (one line: the path, the stage, where the
    file comes from and how to get it) when the file is not there.
    """
    spec = get_spec(name, manifest)
    if override_path is not None:
        path = Path(override_path).expanduser()
        if not path.is_file():
            raise MissingWeightsError(
                f"{name} checkpoint ({spec.stage} stage) not found at the given path {path}; "
                f"fix the path, or leave it unset to use {Path(weights_dir) / spec.file}"
            )
        return path
    path = Path(weights_dir) / spec.file
    if path.is_file():
        return path
    raise MissingWeightsError(_missing_message(spec, path))


def _missing_message(spec: WeightSpec, path: Path) -> str:
    source = spec.first_source
    head = f"{spec.name} checkpoint ({spec.stage} stage) not found: {path}"
    if candidate_sources(spec, mirror=mirror_base()):
        return f"{head}; it comes from {source_for(spec)} - get it with `{FETCH_COMMAND} {spec.name}`"
    mirror = " (add --mirrors to try an unofficial mirror)" if _mirrors(spec) else ""
    return (
        f"{head}; it is published on a page, not as a direct download ({source.url}): download it by hand "
        f"and place the file at {path}; `{FETCH_COMMAND} {spec.name}` cannot fetch it directly{mirror}"
    )


def _mirrors(spec: WeightSpec) -> list[Source]:
    return [s for s in spec.offered_sources if s.direct and not s.official]


def source_for(spec: WeightSpec, use_mirrors: bool = False) -> str:
    """Where ``fetch`` would get ``spec`` first: a URL with its kind, or the page to use by hand."""
    found = candidate_sources(spec, use_mirrors, mirror_base())
    if not found:
        return f"by hand from {spec.first_source.url}"
    first = found[0]
    if first.note == MIRROR_ENV:
        kind = MIRROR_ENV
    elif first.official:
        kind = "official, via gdown" if first.is_drive_file else "official"
    else:
        kind = "verified mirror" if spec.fully_pinned else "unverified mirror"
    return f"{first.url} ({kind})"


# ---------------------------------------------------------------- verify


def file_status(spec: WeightSpec, path: str | Path) -> str:
    """:data:`MISSING`, :data:`MISMATCH`, :data:`VERIFIED` or :data:`PRESENT` for the file at ``path``."""
    path = Path(path)
    if not path.is_file():
        return MISSING
    if path.stat().st_size == 0 or _mismatch_reason(spec, path) is not None:
        return MISMATCH
    return VERIFIED if spec.has_hash else PRESENT


def verify(
    names: Iterable[str] | None = None,
    weights_dir: str | Path = WEIGHTS_DIR,
    manifest: Mapping[str, WeightSpec] | None = None,
) -> list[tuple[str, str]]:
    """``[(name, status)]`` for ``names`` (all entries when None or empty); SHA-256 read in chunks."""
    specs = load_manifest() if manifest is None else manifest
    chosen = list(names or specs)
    return [
        (name, file_status(get_spec(name, specs), Path(weights_dir) / specs[name].file)) for name in chosen
    ]


def sha256_of(path: str | Path) -> str:
    """Lowercase hex SHA-256 of a file, read :data:`HASH_CHUNK_BYTES` at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _mismatch_reason(spec: WeightSpec, path: Path) -> str | None:
    size = path.stat().st_size
    if spec.size_bytes is not None and size != spec.size_bytes:
        return f"size does not match ({size} bytes, expected {spec.size_bytes})"
    if not spec.has_hash:
        return None
    digest = sha256_of(path)
    if spec.sha256 is not None and digest != spec.sha256:
        return f"SHA-256 does not match (got {digest}, expected {spec.sha256})"
    if spec.sha256_prefix is not None and not digest.startswith(spec.sha256_prefix):
        return f"SHA-256 does not match (got {digest}, the official file name says {spec.sha256_prefix}...)"
    return None


# ---------------------------------------------------------------- fetch


def mirror_base() -> str | None:
    """The ``LIPSYNC_WEIGHTS_MIRROR`` base URL (files are looked up there by name), or None."""
    base = os.environ.get(MIRROR_ENV, "").strip()
    return base or None


def candidate_sources(spec: WeightSpec, use_mirrors: bool = False, mirror: str | None = None) -> list[Source]:
    """Where :func:`fetch` looks for ``spec``, in order.

    ``mirror`` (a base URL, see :func:`mirror_base`) holding ``<file>`` first, then the official direct
    sources, then third-party mirrors: always when the entry has a size and a SHA-256 to check their
    bytes against (:attr:`WeightSpec.fully_pinned`), else only with ``use_mirrors``. Revoked links and
    pages are never tried.
    """
    found = []
    if mirror:
        url = f"{mirror.rstrip('/')}/{urllib.parse.quote(spec.file)}"
        found.append(Source(url, direct=True, official=False, note=f"{MIRROR_ENV}"))
    offered = [s for s in spec.offered_sources if s.direct]
    found += [s for s in offered if s.official]
    found += [s for s in offered if not s.official and (spec.fully_pinned or use_mirrors)]
    return found


def fetch(
    names: Iterable[str] | None = None,
    weights_dir: str | Path = WEIGHTS_DIR,
    progress: bool = True,
    *,
    use_mirrors: bool = False,
    manifest: Mapping[str, WeightSpec] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[Path]:
    """Download ``names`` (the defaults when None or empty) into ``weights_dir``; their paths.

    A file already there is kept (a size/hash it fails is an error). Sources are tried in the order of
    :func:`candidate_sources` (``LIPSYNC_WEIGHTS_MIRROR`` first). Each download goes to
    ``<file>.part`` (HTTP, resumed with a Range request) or through gdown (Google Drive), is checked
    against the size and SHA-256, and only then renamed to ``<file>``; bytes that do not match are
    deleted and the next source is tried. Raises :class:`~pipeline.core.errors.WeightsError` in one
    line when no source gives the right bytes: after any mismatch nothing is left in ``weights_dir``;
    after network failures alone the ``.part`` is kept for a resume.
    """
    specs = load_manifest() if manifest is None else manifest
    chosen = list(names or default_names(specs))
    mirror = mirror_base()
    return [
        _fetch_one(get_spec(n, specs), Path(weights_dir), progress, use_mirrors, timeout_s, mirror)
        for n in chosen
    ]


def _fetch_one(
    spec: WeightSpec,
    weights_dir: Path,
    progress: bool,
    use_mirrors: bool,
    timeout_s: float,
    mirror: str | None,
) -> Path:
    dest = weights_dir / spec.file
    if dest.is_file():
        reason = _mismatch_reason(spec, dest)
        if reason is not None:
            raise WeightsError(
                f"{spec.name}: existing {dest} does not match ({reason}); delete it and fetch again"
            )
        return dest
    sources = candidate_sources(spec, use_mirrors, mirror)
    if not sources:
        raise WeightsError(_no_direct_message(spec, dest))
    try:
        weights_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the weights folder {weights_dir}: {exc.strerror or exc}") from exc
    wrong, failed = [], []
    for source in sources:
        try:
            staged = _download(spec, source, dest, progress, timeout_s)
        except WrongSizeError as exc:
            wrong.append(f"{source.url}: {exc}")
            continue
        except TransferError as exc:
            failed.append(f"{source.url}: {exc}")
            continue
        except OSError as exc:
            raise WeightsError(f"cannot write in {weights_dir}: {exc.strerror or exc}") from exc
        reason = _mismatch_reason(spec, staged)
        if reason is None:
            os.replace(staged, dest)
            _warn_if_unofficial(spec, source)
            return dest
        staged.unlink(missing_ok=True)
        wrong.append(f"{source.url}: {reason}")
    raise WeightsError(_failure_message(spec, dest, wrong, failed))


def _download(spec: WeightSpec, source: Source, dest: Path, progress: bool, timeout_s: float) -> Path:
    """Fetch ``source`` into a staging file beside ``dest``; the staging file's path."""
    if source.is_drive_file:
        staging = dest.with_name(dest.name + DRIVE_SUFFIX)
        try:
            download_drive_file(source.url, staging, spec.size_bytes, progress, timeout_s)
        except WrongSizeError:
            for leftover in drive_partials(staging):  # another file behind the link: nothing to resume
                leftover.unlink(missing_ok=True)
            raise
        return staging
    part = dest.with_name(dest.name + PART_SUFFIX)
    download_to_part(source.url, part, spec.file, progress, timeout_s, spec.size_bytes)
    return part


def _failure_message(spec: WeightSpec, dest: Path, wrong: list[str], failed: list[str]) -> str:
    if wrong:  # wrong bytes somewhere: leave nothing a later run could mistake for a good start
        for leftover in _staging_files(dest):
            leftover.unlink(missing_ok=True)
        tried = f"; also tried {'; '.join(failed)}" if failed else ""
        return (
            f"{spec.file} ({spec.name}): wrong bytes from {'; '.join(wrong)}{tried}; "
            f"nothing kept in {dest.parent}"
        )
    part = dest.with_name(dest.name + PART_SUFFIX)
    kept = f"; partial data kept in {part}, run the fetch again to resume" if part.exists() else ""
    return (
        f"could not download {spec.name} ({'; '.join(failed)}){kept}; check the network, set "
        f"{MIRROR_ENV} to a mirror that holds {spec.file}, or download it by hand from "
        f"{spec.first_source.url} and place the file at {dest}"
    )


def _staging_files(dest: Path) -> list[Path]:
    drive = dest.with_name(dest.name + DRIVE_SUFFIX)
    found = [dest.with_name(dest.name + PART_SUFFIX), drive, *drive_partials(drive)]
    return [p for p in found if p.exists()]


def _no_direct_message(spec: WeightSpec, dest: Path) -> str:
    page = spec.first_source.url
    hint = "; add --mirrors (use_mirrors=True) to use an unofficial mirror" if _mirrors(spec) else ""
    return (
        f"{spec.name} has no direct official download: download it by hand from {page} "
        f"and place the file at {dest}{hint}"
    )


def _warn_if_unofficial(spec: WeightSpec, source: Source) -> None:
    if not source.official and source.note != MIRROR_ENV:  # the user's own mirror needs no warning
        checked = "checked against the SHA-256" if spec.has_hash else "NOT checked (no known hash)"
        warnings.warn(f"{spec.name} came from an unofficial mirror ({source.url}), {checked}", stacklevel=4)
