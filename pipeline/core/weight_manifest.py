"""Reading ``weights/manifest.yaml``: the typed, validated list of every checkpoint the project can use.

Each entry becomes a frozen :class:`WeightSpec`. A size or SHA-256 is recorded only with the public page
that shows it and whether the publisher stated it or it was observed on a public copy
(:class:`Evidence`); anything malformed, unknown or missing is a one-line
:class:`~pipeline.core.errors.WeightsError` naming the manifest and the entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.config_io import REPO_ROOT
from pipeline.core.errors import WeightsError
from pipeline.core.file_memo import FileMemo

MANIFEST_PATH = REPO_ROOT / "weights" / "manifest.yaml"  # the manifest ships with the code
STAGES = ("wav2lip", "syncnet", "disc", "detect", "parse", "restore", "upsample", "eval")

_ENTRY_REQUIRED = {"file", "stage", "description", "licence", "size_bytes", "sha256", "sources"}
_ENTRY_OPTIONAL = {"default", "sha256_prefix"}
_SOURCE_REQUIRED = {"url", "direct", "official"}
_SOURCE_OPTIONAL = {"note", "revoked"}
_EVIDENCE_KEYS = {"value", "page", "kind"}
EVIDENCE_KINDS = ("stated", "observed")  # stated by the publisher / observed on a public copy
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SHA256_PREFIX_RE = re.compile(r"[0-9a-f]{6,63}")


@dataclass(frozen=True)
class Source:
    """One place a checkpoint can be had. ``direct``: a plain file URL (else a page to use by hand)."""

    url: str
    direct: bool
    official: bool
    note: str | None = None
    revoked: bool = False  # withdrawn by the publisher: kept for the record, never offered

    @property
    def is_drive_file(self) -> bool:
        """A Google Drive file link (downloaded with gdown, which handles Drive's confirm page)."""
        return self.url.startswith(DRIVE_FILE_PREFIXES)


DRIVE_FILE_PREFIXES = ("https://drive.google.com/file/d/", "https://drive.google.com/uc?")


@dataclass(frozen=True)
class Evidence:
    """Where a size or hash comes from: the public ``page`` that shows it, and its ``kind``."""

    page: str
    kind: str  # one of EVIDENCE_KINDS


@dataclass(frozen=True)
class WeightSpec:
    """One manifest entry. ``size_bytes`` / ``sha256`` are None where the publisher states none."""

    name: str
    file: str
    stage: str
    description: str
    licence: str
    sources: tuple[Source, ...]
    size_bytes: int | None
    sha256: str | None
    sha256_prefix: str | None = None
    default: bool = False
    size_evidence: Evidence | None = None
    sha256_evidence: Evidence | None = None
    prefix_evidence: Evidence | None = None

    @property
    def offered_sources(self) -> tuple[Source, ...]:
        """The sources that are not revoked, in manifest order (official ones first)."""
        return tuple(s for s in self.sources if not s.revoked)

    @property
    def first_source(self) -> Source:
        """The first official source still offered (the first one at all if every one is revoked)."""
        return next((s for s in self.offered_sources if s.official), self.sources[0])

    @property
    def fully_pinned(self) -> bool:
        """Size and full SHA-256 known: any copy can be checked byte for byte, so mirrors are safe."""
        return self.sha256 is not None and self.size_bytes is not None

    @property
    def has_hash(self) -> bool:
        return self.sha256 is not None or self.sha256_prefix is not None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate mapping keys (PyYAML keeps the last one silently)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    keys = [loader.construct_object(key_node, deep=deep) for key_node, _ in node.value]
    duplicates = sorted({str(k) for k in keys if keys.count(k) > 1})
    if duplicates:
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate key {duplicates[0]!r}", node.start_mark
        )
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_manifest(path: str | Path = MANIFEST_PATH) -> dict[str, WeightSpec]:
    """Read and validate the manifest; ``{name: WeightSpec}`` in file order.

    Unknown or missing keys, a stage outside :data:`STAGES`, malformed hashes, file names with a
    directory part, repeated names or files, and entries without an official source raise
    :class:`~pipeline.core.errors.WeightsError` naming the manifest and the entry.
    """
    path = Path(path)
    return dict(_MANIFESTS.get(path, lambda: _read_manifest(path)))  # a copy: callers may change theirs


# Each manifest read and checked once per version of the file: the render resolves its weights through
# it every job, and PyYAML's pure-Python loader takes 40-180 ms for it on 2 busy cores.
_MANIFESTS = FileMemo(max_entries=4)


def _read_manifest(path: Path) -> dict[str, WeightSpec]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except OSError as exc:
        raise WeightsError(f"weights manifest {path} cannot be read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise WeightsError(f"weights manifest {path} is not valid YAML: {_one_line(exc)}") from exc
    if not isinstance(data, dict) or set(data) != {"weights"} or not isinstance(data["weights"], dict):
        raise WeightsError(f"weights manifest {path} must hold exactly one mapping key, 'weights'")
    specs = {str(name): _parse_entry(str(name), entry, path) for name, entry in data["weights"].items()}
    files = [spec.file for spec in specs.values()]
    repeated = sorted({f for f in files if files.count(f) > 1})
    if repeated:
        raise WeightsError(f"weights manifest {path}: file {repeated[0]} is listed by more than one entry")
    return specs


def _parse_entry(name: str, entry: Any, path: Path) -> WeightSpec:
    where = f"weights manifest {path}, entry {name}"
    _check_keys(entry, _ENTRY_REQUIRED, _ENTRY_OPTIONAL, where)
    file, stage = entry["file"], entry["stage"]
    if not isinstance(file, str) or not file or Path(file).name != file or file in (".", ".."):
        raise WeightsError(f"{where}: file must be a bare file name, got {file!r}")
    if stage not in STAGES:
        raise WeightsError(f"{where}: stage {stage!r} is not one of {', '.join(STAGES)}")
    for key in ("description", "licence"):
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise WeightsError(f"{where}: {key} must be a non-empty string")
    size, size_from = _evidenced(entry["size_bytes"], "size_bytes", where)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise WeightsError(f"{where}: size_bytes must be a positive integer or null, got {size!r}")
    sha256, sha256_from = _evidenced(entry["sha256"], "sha256", where)
    sha256 = _hash_field(sha256, _SHA256_RE, "sha256 (64 lowercase hex digits)", where)
    prefix, prefix_from = _evidenced(entry.get("sha256_prefix"), "sha256_prefix", where)
    prefix = _hash_field(prefix, _SHA256_PREFIX_RE, "sha256_prefix (6-63 hex)", where)
    default = entry.get("default", False)
    if not isinstance(default, bool):
        raise WeightsError(f"{where}: default must be true or false")
    sources = _parse_sources(entry["sources"], where)
    return WeightSpec(
        name=name,
        file=file,
        stage=stage,
        description=entry["description"].strip(),
        licence=entry["licence"].strip(),
        sources=sources,
        size_bytes=size,
        sha256=sha256,
        sha256_prefix=prefix,
        default=default,
        size_evidence=size_from,
        sha256_evidence=sha256_from,
        prefix_evidence=prefix_from,
    )


def _evidenced(raw: Any, key: str, where: str) -> tuple[Any, Evidence | None]:
    """``(value, Evidence)`` of a ``{value, page, kind}`` field; ``(None, None)`` for null."""
    if raw is None:
        return None, None
    field_where = f"{where}, {key}"
    _check_keys(raw, _EVIDENCE_KEYS, set(), field_where)
    page, kind = raw["page"], raw["kind"]
    if not isinstance(page, str) or not re.fullmatch(r"https?://\S+", page):
        raise WeightsError(f"{field_where}: page must be the http(s) URL that shows the value, got {page!r}")
    if kind not in EVIDENCE_KINDS:
        raise WeightsError(f"{field_where}: kind must be one of {', '.join(EVIDENCE_KINDS)}, got {kind!r}")
    return raw["value"], Evidence(page, kind)


def _parse_sources(raw: Any, where: str) -> tuple[Source, ...]:
    if not isinstance(raw, list) or not raw:
        raise WeightsError(f"{where}: sources must be a non-empty list")
    sources = []
    for i, item in enumerate(raw):
        item_where = f"{where}, source {i + 1}"
        _check_keys(item, _SOURCE_REQUIRED, _SOURCE_OPTIONAL, item_where)
        url = item["url"]
        if not isinstance(url, str) or not re.fullmatch(r"https?://\S+", url):
            raise WeightsError(f"{item_where}: url must be an http(s) URL, got {url!r}")
        revoked = item.get("revoked", False)
        if not all(isinstance(item.get(k, False), bool) for k in ("direct", "official", "revoked")):
            raise WeightsError(f"{item_where}: direct, official and revoked must be true or false")
        note = item.get("note")
        if note is not None and not isinstance(note, str):
            raise WeightsError(f"{item_where}: note must be a string")
        sources.append(Source(url, item["direct"], item["official"], note, revoked))
    if not sources[0].official:
        raise WeightsError(f"{where}: the first source must be the official one")
    return tuple(sources)


def _check_keys(mapping: Any, required: set[str], optional: set[str], where: str) -> None:
    if not isinstance(mapping, dict):
        raise WeightsError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    unknown = sorted(set(mapping) - required - optional)
    if unknown:
        raise WeightsError(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(required | optional))})"
        )
    missing = sorted(required - set(mapping))
    if missing:
        raise WeightsError(f"{where}: missing key {missing[0]!r}")


def _hash_field(value: Any, pattern: re.Pattern, what: str, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise WeightsError(f"{where}: {what} expected, got {value!r}")
    return value


def _one_line(value: object) -> str:
    lines = str(value).strip().splitlines()
    return lines[0] if lines else type(value).__name__
