"""Fetching through LIPSYNC_WEIGHTS_MIRROR and Google Drive, against a loopback server only."""

from __future__ import annotations

import random

import pytest
import yaml

from pipeline import weights as weights_cli
from pipeline.core import weight_store
from pipeline.core.weight_manifest import load_manifest
from tests.loopback import (
    File,
    LoopbackServer,
    drive_confirm_page,
    drive_download_path,
    manifest_copy,
    self_signed_tls,
    sha256_hex,
)

SEEDED_NAMES = ("wav2lip_gan", "retinaface_resnet50", "parsenet", "gfpgan_v1.4")  # the default set
FILE_BYTES = 200_000


@pytest.fixture
def seeded() -> dict[str, bytes]:
    rng = random.Random(13)
    return {name: rng.randbytes(FILE_BYTES + i) for i, name in enumerate(SEEDED_NAMES)}


@pytest.fixture
def loopback():
    with LoopbackServer() as server:
        yield server


def _serve_mirror(server: LoopbackServer, seeded: dict[str, bytes]) -> dict[str, File]:
    specs = load_manifest()
    files = {name: File(data) for name, data in seeded.items()}
    for name, item in files.items():
        server.add(f"/mirror/{specs[name].file}", item)
    return files


def _cli(tmp_path, monkeypatch, server, seeded, *args: str) -> int:
    """``python -m pipeline.weights`` with the mirror set and a manifest copy pinned to ``seeded``."""
    monkeypatch.setenv("LIPSYNC_WEIGHTS_MIRROR", f"{server.base}/mirror/")
    manifest = tmp_path / "manifest.yaml"
    if not manifest.exists():
        manifest_copy(manifest, seeded, f"{server.base}/public")
    return weights_cli.main(["--manifest", str(manifest), "--weights-dir", str(tmp_path / "w"), *args])


def test_mirror_is_tried_first_by_file_name_verified_renamed_and_licence_printed(
    tmp_path, monkeypatch, loopback, seeded, capsys
):
    _serve_mirror(loopback, seeded)
    assert _cli(tmp_path, monkeypatch, loopback, seeded, "fetch", "--quiet") == 0
    specs = load_manifest()
    out = capsys.readouterr().out
    for name, data in seeded.items():
        assert (tmp_path / "w" / specs[name].file).read_bytes() == data
        assert f"{name}: {specs[name].file} - licence: {specs[name].licence}" in out
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == sorted(specs[n].file for n in seeded)
    assert not any(path.startswith("/public") for _, path in loopback.seen)  # the mirror came first
    assert _cli(tmp_path, monkeypatch, loopback, seeded, "verify", *SEEDED_NAMES) == 0
    assert all(line.split()[1] == "verified" for line in capsys.readouterr().out.splitlines())


def test_mirror_with_wrong_bytes_exits_3_one_line_and_leaves_nothing(
    tmp_path, monkeypatch, loopback, seeded, capsys
):
    loopback.add("/mirror/GFPGANv1.4.pth", File(b"an older file" * 1000))
    assert _cli(tmp_path, monkeypatch, loopback, seeded, "fetch", "--quiet", "gfpgan_v1.4") == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "GFPGANv1.4.pth" in err[0] and f"{loopback.base}/mirror/GFPGANv1.4.pth" in err[0]
    assert "SHA-256 does not match" in err[0] or "size does not match" in err[0]
    assert list((tmp_path / "w").iterdir()) == []  # no .part, no file


def test_mirror_with_wrong_hash_same_size_names_the_sha256(tmp_path, monkeypatch, loopback, seeded, capsys):
    wrong = bytes(len(seeded["parsenet"]))
    loopback.add("/mirror/parsing_parsenet.pth", File(wrong))
    assert _cli(tmp_path, monkeypatch, loopback, seeded, "fetch", "--quiet", "parsenet") == 3
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"SHA-256 does not match (got {sha256_hex(wrong)}" in line and "parsing_parsenet.pth" in line
    assert list((tmp_path / "w").iterdir()) == []


def test_interrupted_mirror_download_resumes_from_part_and_is_verified(
    tmp_path, monkeypatch, loopback, seeded, capsys
):
    files = _serve_mirror(loopback, seeded)
    files["wav2lip_gan"].cut_after = 70_000
    assert _cli(tmp_path, monkeypatch, loopback, seeded, "fetch", "--quiet", "wav2lip_gan") == 3
    assert "resume" in capsys.readouterr().err
    part = tmp_path / "w" / "wav2lip_gan.pth.part"
    assert part.read_bytes() == seeded["wav2lip_gan"][:70_000]
    assert not (tmp_path / "w" / "wav2lip_gan.pth").exists()
    files["wav2lip_gan"].cut_after = None
    assert _cli(tmp_path, monkeypatch, loopback, seeded, "fetch", "--quiet", "wav2lip_gan") == 0
    assert (tmp_path / "w" / "wav2lip_gan.pth").read_bytes() == seeded["wav2lip_gan"]
    assert not part.exists()
    assert files["wav2lip_gan"].ranges[-1] == "bytes=70000-"


def test_verified_mirrors_need_no_flag_unverified_ones_do(tmp_path, loopback):
    data = random.Random(3).randbytes(50_000)
    loopback.add("/m.pth", File(data))
    page = {"url": "https://example.org/page", "direct": False, "official": True}
    mirror = {"url": f"{loopback.base}/m.pth", "direct": True, "official": False}
    evidence = {"page": "https://example.org/p", "kind": "observed"}
    pinned = {
        "size_bytes": {"value": len(data), **evidence},
        "sha256": {"value": sha256_hex(data), **evidence},
    }
    entry = {
        "file": "m.pth",
        "stage": "restore",
        "description": "d",
        "licence": "MIT",
        "sources": [page, mirror],
    }
    path = tmp_path / "manifest.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "weights": {
                    "pinned": {**entry, **pinned},
                    "bare": {**entry, "file": "b.pth", "size_bytes": None, "sha256": None},
                }
            }
        )  # fmt: skip
    )
    specs = load_manifest(path)
    assert [s.url for s in weight_store.candidate_sources(specs["pinned"])] == [mirror["url"]]
    assert weight_store.candidate_sources(specs["bare"]) == []
    assert [s.url for s in weight_store.candidate_sources(specs["bare"], use_mirrors=True)] == [mirror["url"]]
    with pytest.warns(UserWarning, match="checked against the SHA-256"):
        weight_store.fetch(["pinned"], tmp_path / "w", progress=False, manifest=specs)
    assert (tmp_path / "w" / "m.pth").read_bytes() == data


# ---------------------------------------------------------------- Google Drive (gdown) over a loopback proxy

DRIVE_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"


@pytest.fixture
def drive(tmp_path, monkeypatch):
    """A loopback server that answers for drive.google.com over TLS, reached as an HTTPS proxy."""
    tls = self_signed_tls(tmp_path)
    if tls is None:
        pytest.skip("needs the openssl program to make a test certificate")
    context, cert = tls
    with LoopbackServer(context) as server:
        for key in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", server.base)  # requests (under gdown) tunnels through it
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        yield server


def _drive_manifest(tmp_path, data: bytes, mirror_url: str) -> dict:
    evidence = {"page": "https://example.org/p", "kind": "observed"}
    entry = {
        "file": "wav2lip_gan.pth", "stage": "wav2lip", "description": "d", "licence": "non-commercial",
        "size_bytes": {"value": len(data), **evidence}, "sha256": {"value": sha256_hex(data), **evidence},
        "sources": [
            {"url": f"https://drive.google.com/file/d/{DRIVE_ID}/view", "direct": True, "official": True},
            {"url": mirror_url, "direct": True, "official": False},
        ],
    }  # fmt: skip
    path = tmp_path / "drive.yaml"
    path.write_text(yaml.safe_dump({"weights": {"wav2lip_gan": entry}}))
    return load_manifest(path)


def _serve_drive(server: LoopbackServer, body: bytes) -> File:
    server.add(f"/uc?id={DRIVE_ID}", drive_confirm_page(DRIVE_ID, "wav2lip_gan.pth"), host="drive.google.com")
    item = File(body, headers={"Content-Disposition": 'attachment; filename="wav2lip_gan.pth"'})
    server.add(drive_download_path(DRIVE_ID), item, host="drive.usercontent.google.com")
    return item


def test_drive_confirm_page_is_followed_by_gdown_and_the_file_verified(tmp_path, drive):
    data = random.Random(7).randbytes(120_000)
    _serve_drive(drive, data)
    specs = _drive_manifest(tmp_path, data, f"{drive.base}/never.pth")
    out = tmp_path / "w"
    assert weight_store.fetch(["wav2lip_gan"], out, progress=False, manifest=specs) == [
        out / "wav2lip_gan.pth"
    ]
    assert (out / "wav2lip_gan.pth").read_bytes() == data
    assert [p.name for p in out.iterdir()] == ["wav2lip_gan.pth"]  # gdown's staging files are gone
    assert drive.seen[:2] == [
        ("drive.google.com", f"/uc?id={DRIVE_ID}"),
        ("drive.usercontent.google.com", drive_download_path(DRIVE_ID)),
    ]
    assert ("127.0.0.1", "/never.pth") not in drive.seen


def test_drive_file_of_another_size_is_rejected_and_the_verified_mirror_used(tmp_path, drive):
    # What users report for the new official link: a TorchScript export, not wav2lip_gan.pth.
    data = random.Random(8).randbytes(90_000)
    torchscript = _serve_drive(drive, b"PK\x03\x04 Wav2Lip-SD-GAN.pt" * 500)
    drive.add("/mirror/wav2lip_gan.pth", File(data))
    specs = _drive_manifest(tmp_path, data, f"{drive.base}/mirror/wav2lip_gan.pth")
    with pytest.warns(UserWarning, match="unofficial mirror"):
        weight_store.fetch(["wav2lip_gan"], tmp_path / "w", progress=False, manifest=specs)
    assert (tmp_path / "w" / "wav2lip_gan.pth").read_bytes() == data
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["wav2lip_gan.pth"]
    assert torchscript.ranges == [None]


def test_drive_error_page_is_a_one_line_transfer_failure(tmp_path, drive):
    quota = "Too many users have viewed or downloaded this file recently."
    page = f'<html><body><p class="uc-error-subcaption">{quota}</p></body></html>'
    drive.add(f"/uc?id={DRIVE_ID}", page, host="drive.google.com")
    specs = _drive_manifest(tmp_path, b"x" * 10, f"{drive.base}/gone.pth")
    with pytest.raises(weight_store.WeightsError) as info:
        weight_store.fetch(["wav2lip_gan"], tmp_path / "w", progress=False, manifest=specs)
    message = str(info.value)
    assert "\n" not in message and quota in message
    assert "HTTP 404" in message
