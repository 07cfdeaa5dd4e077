"""The weights registry: which checkpoints exist, where they live, how to fetch and check them.

``weights/manifest.yaml`` lists every checkpoint (file name, stage, sources, licence, and a size or
SHA-256 only where the publisher states one). :func:`resolve` finds a checkpoint or raises a
:class:`~pipeline.core.errors.MissingWeightsError` that says how to get it; :func:`fetch` downloads the
direct ones (resuming ``<file>.part``, checking what can be checked, renaming only when complete);
:func:`verify` reports what is on disk. Command line: ``python -m pipeline.weights list|fetch|verify``
(:mod:`pipeline.weights`).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

from pipeline.core.config_io import WEIGHTS_DIR
from pipeline.core.download import DEFAULT_TIMEOUT_S, TransferError, download_to_part
from pipeline.core.errors import (
    ConfigError,
    MissingWeightsError,
    WeightsError,
)
from pipeline.core.weight_manifest import MANIFEST_PATH, STAGES, Source, WeightSpec, load_manifest

__all__ = [
    "MANIFEST_PATH", "STAGES", "Source", "WeightSpec", "load_manifest", "get_spec", "default_names",
    "path_of", "resolve", "file_status", "verify", "sha256_of", "fetch",
]  # fmt: skip

FETCH_COMMAND = "python -m pipeline.weights fetch"
PART_SUFFIX = ".part"
HASH_CHUNK_BYTES = 1 << 20  # bytes read from disk per SHA-256 update

# verify() statuses
MISSING = "missing"  # no file at the expected path
PRESENT = "present"  # file there; the publisher states no hash to check it against
VERIFIED = "verified"  # file there and it matches the published SHA-256 (or SHA-256 prefix)
MISMATCH = "mismatch"  # file there but its size or hash differs from the published one, or it is empty


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
    if source.direct:
        return f"{head}; it comes from {source.url} - get it with `{FETCH_COMMAND} {spec.name}`"
    mirror = " (add --mirrors to try an unofficial mirror)" if _mirrors(spec) else ""
    return (
        f"{head}; it is published on a page, not as a direct download ({source.url}): download it by hand "
        f"and place the file at {path}; `{FETCH_COMMAND} {spec.name}` cannot fetch it directly{mirror}"
    )


def _mirrors(spec: WeightSpec) -> list[Source]:
    return [s for s in spec.sources if s.direct and not s.official]


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
        return f"size is {size} bytes, the publisher states {spec.size_bytes}"
    if not spec.has_hash:
        return None
    digest = sha256_of(path)
    if spec.sha256 is not None and digest != spec.sha256:
        return f"SHA-256 is {digest}, the publisher states {spec.sha256}"
    if spec.sha256_prefix is not None and not digest.startswith(spec.sha256_prefix):
        return f"SHA-256 is {digest}, the published file name says it starts with {spec.sha256_prefix}"
    return None


# ---------------------------------------------------------------- fetch


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

    A file already there is kept (a published size/hash it fails is an error). Each download goes to
    ``<file>.part``, resumes it with an HTTP Range request, is checked against the published size and
    hash, and only then is renamed to ``<file>``. Official direct sources are tried in order, then
    (``use_mirrors``) third-party mirrors, with a warning. Raises :class:`~pipeline.core.errors.WeightsError`
    with one line on a mismatch (the .part is deleted), on network failure (the .part is kept for a
    resume), or when the only sources are pages to download from by hand.
    """
    specs = load_manifest() if manifest is None else manifest
    chosen = list(names or default_names(specs))
    return [
        _fetch_one(get_spec(n, specs), Path(weights_dir), progress, use_mirrors, timeout_s) for n in chosen
    ]


def _fetch_one(
    spec: WeightSpec, weights_dir: Path, progress: bool, use_mirrors: bool, timeout_s: float
) -> Path:
    dest = weights_dir / spec.file
    if dest.is_file():
        reason = _mismatch_reason(spec, dest)
        if reason is not None:
            raise WeightsError(
                f"{spec.name}: existing {dest} does not match ({reason}); delete it and fetch again"
            )
        return dest
    sources = [s for s in spec.sources if s.direct and (s.official or use_mirrors)]
    if not sources:
        raise WeightsError(_no_direct_message(spec, dest))
    try:
        weights_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the weights folder {weights_dir}: {exc.strerror or exc}") from exc
    part = dest.with_name(dest.name + PART_SUFFIX)
    failures = []
    for source in sources:
        try:
            download_to_part(source.url, part, spec.name, progress, timeout_s)
        except TransferError as exc:
            failures.append(f"{source.url}: {exc}")
            continue
        except OSError as exc:
            raise WeightsError(f"cannot write {part}: {exc.strerror or exc}") from exc
        _finish(spec, part, dest, source)
        return dest
    kept = f"; partial data kept in {part}, run the fetch again to resume" if part.exists() else ""
    raise WeightsError(
        f"could not download {spec.name} ({'; '.join(failures)}){kept}; check the network, or download "
        f"it by hand from {sources[0].url} and place the file at {dest}"
    )


def _no_direct_message(spec: WeightSpec, dest: Path) -> str:
    page = spec.first_source.url
    hint = "; add --mirrors (use_mirrors=True) to use an unofficial mirror" if _mirrors(spec) else ""
    return (
        f"{spec.name} has no direct official download: download it by hand from {page} "
        f"and place the file at {dest}{hint}"
    )


def _finish(spec: WeightSpec, part: Path, dest: Path, source: Source) -> None:
    """Check the complete ``part`` and rename it to ``dest``; a mismatch deletes it and raises."""
    reason = _mismatch_reason(spec, part)
    if reason is not None:
        part.unlink(missing_ok=True)
        raise WeightsError(
            f"downloaded {spec.name} from {source.url} is wrong ({reason}); deleted it, no file kept"
        )
    os.replace(part, dest)
    if not source.official:
        checked = "checked against the published hash" if spec.has_hash else "NOT checked (no published hash)"
        warnings.warn(f"{spec.name} came from an unofficial mirror ({source.url}), {checked}", stacklevel=3)
