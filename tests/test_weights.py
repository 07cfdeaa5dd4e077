"""The weights registry: manifest, resolve, fetch from a local HTTP server (Range/resume), verify, CLI."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from pipeline import weights as weights_cli
from pipeline.core import weight_store as weights
from pipeline.core.errors import ConfigError, MissingWeightsError, WeightsError
from pipeline.core.weight_store import MISMATCH, MISSING, PRESENT, VERIFIED, WeightSpec, load_manifest

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPECTED_NAMES = [
    "wav2lip", "wav2lip_gan", "lipsync_expert", "visual_quality_disc", "s3fd", "retinaface_resnet50",
    "retinaface_mobile0.25", "parsenet", "gfpgan_v1.3", "gfpgan_v1.4", "codeformer", "realesrgan_x2plus",
    "syncnet_v2",
]  # fmt: skip
PAYLOAD_BYTES = 300_000


# ---------------------------------------------------------------- a tiny HTTP server with Range support


@dataclass
class Served:
    """What the local server returns for one path, and what it saw."""

    body: bytes
    honour_range: bool = True
    cut_after: int | None = None  # send the full Content-Length header but close after this many bytes
    status: int = 200
    redirect_to: str | None = None  # answer 302 with this Location instead
    requests: list = field(default_factory=list)  # (Range header or None, bytes sent)


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, Served] = {}

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        served = self.routes.get(self.path)
        if served is not None and served.redirect_to:
            served.requests.append((self.headers.get("Range"), 0))
            self.send_response(302)
            self.send_header("Location", served.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if served is None or served.status != 200:
            self.send_error(404 if served is None else served.status)
            return
        start, code = self._range_start(served)
        if start is None:
            return
        body = served.body[start:]
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(served.body) - 1}/{len(served.body)}")
        self.end_headers()
        sent = body if served.cut_after is None else body[: served.cut_after]
        self.wfile.write(sent)
        served.requests.append((self.headers.get("Range"), len(sent)))
        self.close_connection = True

    def _range_start(self, served: Served) -> tuple[int | None, int]:
        header = self.headers.get("Range")
        if header is None or not served.honour_range:
            return 0, 200
        start = int(header.removeprefix("bytes=").rstrip("-"))
        if start >= len(served.body):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(served.body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            served.requests.append((header, 0))
            return None, 416
        return start, 206


@pytest.fixture
def server():
    """``(base_url, routes)``: a threaded HTTP server on 127.0.0.1; add ``Served`` entries to routes."""
    routes: dict[str, Served] = {}
    handler = type("Handler", (_Handler,), {"routes": routes})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", routes
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def payload() -> bytes:
    return random.Random(1234).randbytes(PAYLOAD_BYTES)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone.pth"


def _entry(url: str, **over) -> dict:
    entry = {
        "file": "model.pth",
        "stage": "restore",
        "description": "test model",
        "licence": "MIT",
        "size_bytes": None,
        "sha256": None,
        "sources": [{"url": url, "direct": True, "official": True}],
    }
    entry.update(over)
    return entry


EVIDENCE_PAGE = "https://example.org/file-page"


def _evidenced(entries: dict) -> dict:
    """The entries with each plain size / hash value wrapped as the manifest records it."""
    out = {}
    for name, entry in entries.items():
        entry = dict(entry)
        for key in ("size_bytes", "sha256", "sha256_prefix"):
            value = entry.get(key)
            if value is not None and not isinstance(value, dict):
                entry[key] = {"value": value, "page": EVIDENCE_PAGE, "kind": "observed"}
        out[name] = entry
    return out


def _write_manifest(tmp_path: Path, entries: dict) -> Path:
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"weights": _evidenced(entries)}, sort_keys=False))
    return path


def _manifest(tmp_path: Path, entries: dict) -> dict[str, WeightSpec]:
    return load_manifest(_write_manifest(tmp_path, entries))


# ---------------------------------------------------------------- the real manifest


def test_real_manifest_lists_every_checkpoint_with_file_stage_source_licence():
    specs = load_manifest()
    assert list(specs) == EXPECTED_NAMES
    for name, spec in specs.items():
        assert spec.name == name
        assert spec.file and "/" not in spec.file
        assert spec.stage in weights.STAGES
        assert spec.licence.strip() and spec.description.strip()
        assert spec.sources[0].official and spec.sources[0].url.startswith(("http://", "https://"))
    assert weights.default_names(specs) == ["wav2lip_gan", "retinaface_resnet50", "parsenet", "gfpgan_v1.4"]


def test_real_manifest_pins_every_file_with_the_page_and_kind_of_each_value():
    specs = load_manifest()
    for name, spec in specs.items():
        assert spec.fully_pinned, name
        for evidence in (spec.size_evidence, spec.sha256_evidence):
            assert evidence.page.startswith("https://") and evidence.kind in ("stated", "observed"), name
    # No publisher states a full SHA-256 or a size: all observed on public copies. The S3FD file name
    # carries a publisher-stated prefix, and the observed hash agrees with it.
    assert {spec.sha256_evidence.kind for spec in specs.values()} == {"observed"}
    assert {n: s.sha256_prefix for n, s in specs.items() if s.sha256_prefix} == {"s3fd": "619a316812"}
    assert specs["s3fd"].prefix_evidence.kind == "stated"
    assert specs["s3fd"].sha256.startswith(specs["s3fd"].sha256_prefix)
    assert specs["wav2lip_gan"].sha256 == "ca9ab7b7b812c0e80a6e70a5977c545a1e8a365a6c49d5e533023c034d7ac3d8"
    assert specs["wav2lip_gan"].size_bytes == 435_801_865


def test_real_manifest_wav2lip_sources_drive_first_sharepoint_revoked_no_false_mirror():
    specs = load_manifest()
    gan = specs["wav2lip_gan"]
    assert gan.first_source.url == "https://drive.google.com/file/d/15G3U08c8xsCkOqQxE38Z2XXDnPcOptNk/view"
    assert gan.first_source.is_drive_file and "TorchScript" in gan.first_source.note
    assert specs["wav2lip"].first_source.url.startswith(
        "https://drive.google.com/drive/folders/153HLrqlBNxzZcHi17PEvP09kkAfzRshM"
    )
    for name in ("wav2lip", "wav2lip_gan", "lipsync_expert", "visual_quality_disc"):
        spec = specs[name]
        sharepoint = [s for s in spec.sources if "sharepoint.com" in s.url]
        assert sharepoint and all(s.revoked for s in sharepoint), name
        assert not any("sharepoint" in s.url for s in weights.candidate_sources(spec)), name
        # camenduru's wav2lip.pth is a 167 kB file, not the model: not listed anywhere
        assert not any("camenduru" in s.url for s in spec.sources), name
        assert "non-commercial" in spec.licence
        mirrors = [s for s in weights.candidate_sources(spec) if not s.official]
        assert mirrors and all(s.url.startswith("https://huggingface.co/") for s in mirrors), name
    assert specs["gfpgan_v1.4"].file == "GFPGANv1.4.pth"
    assert specs["retinaface_resnet50"].file == "detection_Resnet50_Final.pth"
    assert specs["codeformer"].licence.startswith("S-Lab License 1.0")


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"licence": None}, "licence must be a non-empty string"),
        ({"stage": "paint"}, "stage 'paint' is not one of"),
        ({"file": "../model.pth"}, "bare file name"),
        ({"sha256": "abc"}, "sha256 (64 lowercase hex digits) expected"),
        ({"sha256_prefix": "XYZ123"}, "sha256_prefix"),
        ({"size_bytes": -5}, "size_bytes must be a positive integer"),
        ({"default": "yes"}, "default must be true or false"),
        ({"sources": []}, "sources must be a non-empty list"),
        ({"sources": [{"url": "ftp://x/y", "direct": True, "official": True}]}, "http(s) URL"),
        ({"sources": [{"url": "https://x/y", "direct": True}]}, "missing key 'official'"),
        ({"sources": [{"url": "https://x/y", "direct": True, "official": False}]}, "first source"),
    ],
)
def test_load_manifest_rejects_bad_entries(tmp_path, change, expected):
    entry = _entry("https://example.org/model.pth", **change)
    with pytest.raises(WeightsError, match="entry m") as info:
        _manifest(tmp_path, {"m": entry})
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_load_manifest_rejects_missing_field_duplicates_and_bad_top_level(tmp_path):
    entry = _entry("https://example.org/model.pth")
    del entry["sha256"]
    with pytest.raises(WeightsError, match="missing key 'sha256'"):
        _manifest(tmp_path, {"m": entry})
    path = tmp_path / "dup.yaml"
    path.write_text(
        "weights:\n  a: {file: a.pth}\n  a: {file: b.pth}\n",
    )
    with pytest.raises(WeightsError, match="duplicate key 'a'"):
        load_manifest(path)
    with pytest.raises(WeightsError, match="more than one entry"):
        _manifest(tmp_path, {"a": _entry("https://x/a"), "b": _entry("https://x/b")})
    (tmp_path / "top.yaml").write_text("models: {}\n")
    with pytest.raises(WeightsError, match="exactly one mapping key"):
        load_manifest(tmp_path / "top.yaml")


# ---------------------------------------------------------------- resolve / path_of


def test_resolve_returns_present_file_and_override(tmp_path):
    (tmp_path / "GFPGANv1.4.pth").write_bytes(b"x")
    assert weights.resolve("gfpgan_v1.4", weights_dir=tmp_path) == tmp_path / "GFPGANv1.4.pth"
    other = tmp_path / "elsewhere.pth"
    other.write_bytes(b"y")
    assert weights.resolve("gfpgan_v1.4", str(other), weights_dir=tmp_path / "empty") == other
    assert weights.path_of("codeformer", tmp_path) == tmp_path / "codeformer.pth"


def test_resolve_missing_direct_names_path_stage_url_and_fetch_command(tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        weights.resolve("retinaface_resnet50", weights_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "detection_Resnet50_Final.pth") in message
    assert "detect stage" in message
    assert (
        "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth" in message
    )
    assert "python -m pipeline.weights fetch retinaface_resnet50" in message
    assert info.value.exit_code == 3


def test_resolve_missing_wav2lip_names_the_drive_link_and_fetch(tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        weights.resolve("wav2lip_gan", weights_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "wav2lip stage" in message
    assert "drive.google.com/file/d/15G3U08c8xsCkOqQxE38Z2XXDnPcOptNk" in message
    assert "python -m pipeline.weights fetch wav2lip_gan" in message
    assert "sharepoint" not in message


def test_resolve_missing_page_only_source_says_download_by_hand(tmp_path):
    page = {"url": "https://example.org/share-page", "direct": False, "official": True}
    specs = _manifest(tmp_path, {"m": _entry("", sources=[page])})
    with pytest.raises(MissingWeightsError) as info:
        weights.resolve("m", weights_dir=tmp_path, manifest=specs)
    message = str(info.value)
    assert "by hand" in message and f"place the file at {tmp_path / 'model.pth'}" in message
    assert "https://example.org/share-page" in message and "\n" not in message


def test_resolve_bad_override_and_unknown_name(tmp_path):
    with pytest.raises(MissingWeightsError, match="not found at the given path"):
        weights.resolve("codeformer", tmp_path / "nope.pth", weights_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown checkpoint name 'gfpgan_v9'"):
        weights.resolve("gfpgan_v9", weights_dir=tmp_path)


# ---------------------------------------------------------------- fetch


def test_fetch_downloads_checks_and_renames(tmp_path, server, payload):
    base, routes = server
    routes["/m.pth"] = Served(payload)
    specs = _manifest(tmp_path, {"m": _entry(f"{base}/m.pth", sha256=_sha(payload), size_bytes=len(payload))})
    out = tmp_path / "w"
    assert weights.fetch(["m"], out, progress=False, manifest=specs) == [out / "model.pth"]
    assert (out / "model.pth").read_bytes() == payload
    assert not (out / "model.pth.part").exists()
    assert routes["/m.pth"].requests == [(None, len(payload))]
    # Already there and matching: nothing is downloaded again.
    weights.fetch(["m"], out, progress=False, manifest=specs)
    assert len(routes["/m.pth"].requests) == 1


@pytest.mark.parametrize("honour_range", [True, False])
def test_fetch_resumes_a_partial_file(tmp_path, server, payload, honour_range):
    base, routes = server
    routes["/m.pth"] = Served(payload, honour_range=honour_range)
    specs = _manifest(tmp_path, {"m": _entry(f"{base}/m.pth", sha256=_sha(payload))})
    (tmp_path / "model.pth.part").write_bytes(payload[:100_000])
    weights.fetch(["m"], tmp_path, progress=False, manifest=specs)
    assert (tmp_path / "model.pth").read_bytes() == payload
    expected_sent = len(payload) - 100_000 if honour_range else len(payload)
    assert routes["/m.pth"].requests == [("bytes=100000-", expected_sent)]


def test_fetch_resume_survives_a_redirect(tmp_path, server, payload):
    # GitHub release and Hugging Face URLs answer with a redirect to the storage host.
    base, routes = server
    routes["/release/m.pth"] = Served(b"", redirect_to=f"{base}/storage/m.pth")
    routes["/storage/m.pth"] = Served(payload)
    specs = _manifest(tmp_path, {"m": _entry(f"{base}/release/m.pth", sha256=_sha(payload))})
    (tmp_path / "model.pth.part").write_bytes(payload[:50_000])
    weights.fetch(["m"], tmp_path, progress=False, manifest=specs)
    assert (tmp_path / "model.pth").read_bytes() == payload
    assert routes["/storage/m.pth"].requests == [("bytes=50000-", len(payload) - 50_000)]


def test_fetch_interrupted_transfer_keeps_part_then_resumes(tmp_path, server, payload):
    base, routes = server
    routes["/m.pth"] = Served(payload, cut_after=120_000)
    specs = _manifest(tmp_path, {"m": _entry(f"{base}/m.pth", sha256=_sha(payload))})
    with pytest.raises(WeightsError) as info:
        weights.fetch(["m"], tmp_path, progress=False, manifest=specs)
    message = str(info.value)
    assert "\n" not in message and "120000 of 300000 bytes" in message and "resume" in message
    assert not (tmp_path / "model.pth").exists()
    assert (tmp_path / "model.pth.part").read_bytes() == payload[:120_000]
    routes["/m.pth"].cut_after = None
    weights.fetch(["m"], tmp_path, progress=False, manifest=specs)
    assert (tmp_path / "model.pth").read_bytes() == payload
    assert routes["/m.pth"].requests[-1] == ("bytes=120000-", len(payload) - 120_000)


def test_fetch_sha256_mismatch_deletes_part_and_leaves_no_file(tmp_path, server, payload):
    base, routes = server
    routes["/m.pth"] = Served(payload)
    specs = _manifest(tmp_path, {"m": _entry(f"{base}/m.pth", sha256=_sha(b"something else"))})
    with pytest.raises(WeightsError, match="SHA-256 does not match") as info:
        weights.fetch(["m"], tmp_path, progress=False, manifest=specs)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "model.pth").exists()
    assert not (tmp_path / "model.pth.part").exists()


def test_fetch_checks_size_and_sha256_prefix(tmp_path, server, payload):
    base, routes = server
    routes["/m.pth"] = Served(payload)
    specs = _manifest(tmp_path, {"m": _entry(f"{base}/m.pth", size_bytes=len(payload) + 1)})
    with pytest.raises(
        WeightsError, match=r"size does not match \(the server announces 300000 bytes, expected 300001\)"
    ):
        weights.fetch(["m"], tmp_path, progress=False, manifest=specs)
    assert not (tmp_path / "model.pth").exists() and not (tmp_path / "model.pth.part").exists()
    good = _manifest(tmp_path, {"m": _entry(f"{base}/m.pth", sha256_prefix=_sha(payload)[:10])})
    weights.fetch(["m"], tmp_path, progress=False, manifest=good)
    assert weights.verify(["m"], tmp_path, good) == [("m", VERIFIED)]


def test_fetch_network_failures_are_one_line_weights_errors(tmp_path, server):
    base, routes = server
    specs = _manifest(
        tmp_path, {"gone": _entry(_closed_port_url()), "nf": _entry(f"{base}/nf.pth", file="n")}
    )
    with pytest.raises(WeightsError, match="could not download gone") as info:
        weights.fetch(["gone"], tmp_path, progress=False, manifest=specs, timeout_s=5)
    assert "cannot connect" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(WeightsError, match="HTTP 404"):
        weights.fetch(["nf"], tmp_path, progress=False, manifest=specs, timeout_s=5)
    assert not any(tmp_path.glob("*.part")) and not (tmp_path / "model.pth").exists()


def test_fetch_falls_back_to_the_next_official_source(tmp_path, server, payload):
    base, routes = server
    routes["/b.pth"] = Served(payload)
    entry = _entry(f"{base}/a.pth")
    entry["sources"].append({"url": f"{base}/b.pth", "direct": True, "official": True})
    specs = _manifest(tmp_path, {"m": entry})
    weights.fetch(["m"], tmp_path, progress=False, manifest=specs)
    assert (tmp_path / "model.pth").read_bytes() == payload


def test_fetch_page_only_source_asks_for_hand_download_and_mirrors_need_opt_in(tmp_path, server, payload):
    base, routes = server
    routes["/mirror.pth"] = Served(payload)
    page = {"url": "https://example.org/share-page", "direct": False, "official": True}
    mirror = {"url": f"{base}/mirror.pth", "direct": True, "official": False, "note": "third party"}
    specs = _manifest(tmp_path, {"m": _entry("", sources=[page, mirror])})
    with pytest.raises(WeightsError) as info:
        weights.fetch(["m"], tmp_path, progress=False, manifest=specs)
    message = str(info.value)
    assert "by hand from https://example.org/share-page" in message
    assert f"place the file at {tmp_path / 'model.pth'}" in message and "--mirrors" in message
    assert routes["/mirror.pth"].requests == []
    with pytest.warns(UserWarning, match="unofficial mirror .* NOT checked"):
        weights.fetch(["m"], tmp_path, progress=False, use_mirrors=True, manifest=specs)
    assert (tmp_path / "model.pth").read_bytes() == payload


def test_fetch_refuses_an_existing_file_that_fails_its_hash(tmp_path):
    specs = _manifest(tmp_path, {"m": _entry("https://example.org/m.pth", sha256=_sha(b"right"))})
    (tmp_path / "model.pth").write_bytes(b"wrong")
    with pytest.raises(WeightsError, match="existing .* does not match"):
        weights.fetch(["m"], tmp_path, progress=False, manifest=specs)
    assert (tmp_path / "model.pth").read_bytes() == b"wrong"


def test_fetch_restarts_when_the_partial_file_is_too_long(tmp_path, server, payload):
    base, routes = server
    routes["/m.pth"] = Served(payload)
    specs = _manifest(tmp_path, {"m": _entry(f"{base}/m.pth", sha256=_sha(payload))})
    (tmp_path / "model.pth.part").write_bytes(payload + b"extra")
    weights.fetch(["m"], tmp_path, progress=False, manifest=specs)
    assert (tmp_path / "model.pth").read_bytes() == payload
    assert [r[0] for r in routes["/m.pth"].requests] == [f"bytes={len(payload) + 5}-", None]


# ---------------------------------------------------------------- verify


def test_verify_statuses(tmp_path):
    entries = {
        "absent": _entry("https://x/a", file="a.pth"),
        "plain": _entry("https://x/b", file="b.pth"),
        "good": _entry("https://x/c", file="c.pth", sha256=_sha(b"ccc")),
        "bad": _entry("https://x/d", file="d.pth", sha256=_sha(b"ddd")),
        "short": _entry("https://x/e", file="e.pth", size_bytes=10),
        "empty": _entry("https://x/f", file="f.pth"),
        "prefix": _entry("https://x/g", file="g.pth", sha256_prefix=_sha(b"ggg")[:8]),
    }
    specs = _manifest(tmp_path, entries)
    for file, data in [("b", b"bbb"), ("c", b"ccc"), ("d", b"xxx"), ("e", b"eee"), ("f", b""), ("g", b"ggg")]:
        (tmp_path / f"{file}.pth").write_bytes(data)
    assert weights.verify(None, tmp_path, specs) == [
        ("absent", MISSING),
        ("plain", PRESENT),
        ("good", VERIFIED),
        ("bad", MISMATCH),
        ("short", MISMATCH),
        ("empty", MISMATCH),
        ("prefix", VERIFIED),
    ]
    assert weights.verify(["good"], tmp_path, specs) == [("good", VERIFIED)]


def test_sha256_of_reads_in_chunks(tmp_path, monkeypatch):
    data = random.Random(5).randbytes(10_000)
    (tmp_path / "f").write_bytes(data)
    monkeypatch.setattr(weights, "HASH_CHUNK_BYTES", 1000)
    assert weights.sha256_of(tmp_path / "f") == _sha(data)


# ---------------------------------------------------------------- command line


def test_cli_list_and_verify_say_status_and_where_a_file_would_come_from(tmp_path, capsys):
    common = ["--weights-dir", str(tmp_path)]
    assert weights_cli.main([*common, "verify"]) == 0  # missing optional files are fine
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(EXPECTED_NAMES) and all(line.split()[1] == "missing" for line in out)
    gan = next(line for line in out if line.startswith("wav2lip_gan "))
    assert (
        "from: https://drive.google.com/file/d/15G3U08c8xsCkOqQxE38Z2XXDnPcOptNk/view (official, via gdown)"
        in gan
    )
    expert = next(line for line in out if line.startswith("lipsync_expert "))
    assert (
        "from: https://huggingface.co/Nekochu/Wav2Lip/resolve/main/lipsync_expert.pth (verified mirror)"
        in expert
    )
    (tmp_path / "codeformer.pth").write_bytes(b"not the model")
    assert weights_cli.main([*common, "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[1].split()[:4] == ["wav2lip_gan", "wav2lip", "default", "missing"]
    assert [line.split()[3] for line in listed if line.startswith("codeformer")] == ["mismatch"]
    assert weights_cli.main([*common, "verify", "codeformer"]) == 3
    line = capsys.readouterr().out.strip()
    assert line.split()[1] == "mismatch" and "from: https://github.com/sczhou/CodeFormer/releases" in line
    assert weights_cli.main([*common, "verify", "gfpgan_v1.4"]) == 3  # a named missing file is an error


def test_cli_exit_codes_for_usage_and_weights_errors(tmp_path, server, payload, capsys):
    base, routes = server
    routes["/m.pth"] = Served(payload)
    manifest = _write_manifest(
        tmp_path,
        {
            "good": _entry(f"{base}/m.pth", file="good.pth", sha256=_sha(payload), default=True),
            "bad": _entry(f"{base}/m.pth", file="bad.pth", sha256=_sha(b"other")),
        },
    )
    common = ["--manifest", str(manifest), "--weights-dir", str(tmp_path / "w")]
    assert weights_cli.main([*common, "frobnicate"]) == 2
    assert weights_cli.main([*common, "fetch", "nonexistent"]) == 2
    assert "unknown checkpoint name 'nonexistent'" in capsys.readouterr().err
    assert weights_cli.main([*common, "fetch", "--quiet"]) == 0  # the defaults: just "good"
    assert (tmp_path / "w" / "good.pth").read_bytes() == payload
    capsys.readouterr()
    assert weights_cli.main([*common, "fetch", "--quiet", "bad", "good"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("error: bad.pth (bad): wrong bytes from") and "SHA-256" in err[0]
    )
    assert not (tmp_path / "w" / "bad.pth").exists()
    (tmp_path / "w" / "bad.pth").write_bytes(b"corrupt")
    assert weights_cli.main([*common, "verify"]) == 3
    (tmp_path / "broken.yaml").write_text("weights: [\n")
    assert weights_cli.main(["--manifest", str(tmp_path / "broken.yaml"), "list"]) == 3


def test_module_runs_as_a_script():
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.weights", "verify", "no_such_model"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown checkpoint name 'no_such_model'")
