"""A loopback web server for the weights tests: files by path (with Range), and Google Drive imitated
behind an HTTPS proxy on 127.0.0.1. Nothing leaves the machine."""

from __future__ import annotations

import hashlib
import shutil
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import _SocketWriter

import yaml

from pipeline.core.weight_manifest import MANIFEST_PATH

DRIVE_HOSTS = ("drive.google.com", "drive.usercontent.google.com")


@dataclass
class File:
    """What the server returns for one path, and the Range headers it was asked with."""

    body: bytes
    cut_after: int | None = None  # announce the full length but close after this many bytes
    headers: dict = field(default_factory=dict)
    ranges: list = field(default_factory=list)


class LoopbackServer:
    """``routes[(host, path)] = File | str`` (a str is an HTML page); ``base`` is the plain-HTTP URL.

    Requests tunnelled through CONNECT (``HTTPS_PROXY`` pointed here) are answered over TLS with the
    certificate given, so https://drive.google.com/... is served from these routes.
    """

    def __init__(self, tls_context: ssl.SSLContext | None = None) -> None:
        self.routes: dict[tuple[str, str], File | str] = {}
        self.seen: list[tuple[str, str]] = []
        handler = type("Handler", (_Handler,), {"owner": self})
        self.tls_context = tls_context
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def add(self, path: str, item: File | str, host: str = "127.0.0.1") -> None:
        self.routes[(host, path)] = item


class _Handler(BaseHTTPRequestHandler):
    owner: LoopbackServer

    def log_message(self, *args) -> None:
        pass

    def do_CONNECT(self) -> None:  # noqa: N802 (http.server API)
        host = self.path.split(":")[0]
        if host not in DRIVE_HOSTS or self.owner.tls_context is None:
            self.send_error(403)
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.connection = self.owner.tls_context.wrap_socket(self.connection, server_side=True)
        self.rfile = self.connection.makefile("rb")
        self.wfile = _SocketWriter(self.connection)
        self.close_connection = False

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        host = (self.headers.get("Host") or "").split(":")[0]
        self.owner.seen.append((host, self.path))
        item = self.owner.routes.get((host, self.path))
        if item is None:
            self.send_error(404)
        elif isinstance(item, str):
            self._send(200, item.encode(), {"Content-Type": "text/html; charset=utf-8"})
        else:
            self._send_file(item)
        self.close_connection = True

    def _send_file(self, item: File) -> None:
        header = self.headers.get("Range")
        item.ranges.append(header)
        start = int(header.removeprefix("bytes=").rstrip("-")) if header else 0
        body = item.body[start:]
        extra = {"Content-Type": "application/octet-stream", **item.headers}
        if start:
            extra["Content-Range"] = f"bytes {start}-{len(item.body) - 1}/{len(item.body)}"
        sent = body if item.cut_after is None else body[: item.cut_after]
        self._send(206 if start else 200, sent, extra, length=len(body))

    def _send(self, code: int, body: bytes, headers: dict, length: int | None = None) -> None:
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)


def drive_confirm_page(file_id: str, name: str) -> str:
    """Drive's "virus scan warning" page for a large file, as public captures show it."""
    inputs = "".join(
        f'<input type="hidden" name="{k}" value="{v}">'
        for k, v in (("id", file_id), ("export", "download"), ("confirm", "t"), ("uuid", "0f1e2d3c"))
    )
    return (
        "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>\n"
        f'<span class="uc-name-size"><a href="/open?id={file_id}">{name}</a> (433M)</span>\n'
        f'<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
        f'{inputs}<input type="submit" value="Download anyway"></form>\n</body></html>\n'
    )


def drive_download_path(file_id: str) -> str:
    return f"/download?id={file_id}&export=download&confirm=t&uuid=0f1e2d3c"


def self_signed_tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path] | None:
    """A server context for the Drive hosts and the certificate file to trust; None without openssl."""
    if shutil.which("openssl") is None:
        return None
    key, cert = tmp_path / "drive.key", tmp_path / "drive.pem"
    san = "subjectAltName=" + ",".join(f"DNS:{h}" for h in DRIVE_HOSTS)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=drive.google.com", "-addext", san],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, cert


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_copy(path: Path, seeded: dict[str, bytes], public_base: str) -> Path:
    """The real manifest with ``seeded`` entries' size and SHA-256 set to those bytes' (``{name: bytes}``),
    and every source URL moved to ``public_base`` (a loopback path that answers 404), so a test never
    reaches the internet even when it falls through to the public sources."""
    data = yaml.safe_load(MANIFEST_PATH.read_text())
    for name, entry in data["weights"].items():
        for i, source in enumerate(entry["sources"]):
            source["url"] = f"{public_base}/{name}/{i}/{entry['file']}"
        if name in seeded:
            page = "https://example.org/seeded-in-the-test"
            entry["size_bytes"] = {"value": len(seeded[name]), "page": page, "kind": "observed"}
            entry["sha256"] = {"value": sha256_hex(seeded[name]), "page": page, "kind": "observed"}
            entry.pop("sha256_prefix", None)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
