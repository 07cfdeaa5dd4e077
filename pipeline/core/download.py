"""Resumable HTTP(S) download of one file into a ``.part`` file, with urllib and a tqdm bar.

:func:`download_to_part` appends to an existing partial file with an HTTP ``Range`` request (and
starts over when the server ignores or refuses the range). It raises :class:`TransferError` for
anything the network did (the partial file stays for a later resume) and lets ``OSError`` from
writing the local file through. Checking and renaming the finished file is the caller's job.

Why not pooch (already installed, via librosa): pooch downloads into a fresh temporary file that it
deletes on any failure and sends no Range header, so a broken 400 MB download starts again from zero.
Resuming ``<file>.part`` is the one thing this module does that pooch cannot; Google Drive, which
needs its confirm page followed, goes through gdown (:mod:`pipeline.core.drive`).
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

DOWNLOAD_CHUNK_BYTES = 1 << 20  # bytes read from the network per step
DEFAULT_TIMEOUT_S = 60.0  # seconds a connect or a read may stall before the download fails
USER_AGENT = "lipsync-pipeline-weights/1 (python urllib)"


class TransferError(Exception):
    """A network failure for one URL: cannot connect, HTTP error, or the body ended early."""


class WrongSizeError(TransferError):
    """The server announced a size other than the expected one; nothing more was downloaded."""


def download_to_part(
    url: str,
    part: Path,
    label: str,
    progress: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    expected_size: int | None = None,
) -> None:
    """Fetch ``url`` into ``part`` (bytes on disk), resuming what is there.

    Returns when the body is complete (its length matches what the server announced, where it did);
    raises :class:`TransferError` otherwise. ``label`` names the progress bar. A server announcing a
    total other than ``expected_size`` is a :class:`WrongSizeError` before any byte is written.
    """
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset, timeout_s)
    if response is None:  # 416: the partial file does not fit this resource; start over
        part.unlink(missing_ok=True)
        offset = 0
        response = _open(url, 0, timeout_s)
    with response:
        start, total = _response_span(response, offset)
        if expected_size is not None and total is not None and total != expected_size:
            raise WrongSizeError(
                f"size does not match (the server announces {total} bytes, expected {expected_size})"
            )
        with open(part, "ab" if start else "wb") as out:
            bar = tqdm(
                total=total, initial=start, unit="B", unit_scale=True, desc=label, disable=not progress
            )
            with bar:
                _copy(response, out, bar)
            out.flush()
            os.fsync(out.fileno())
    got = part.stat().st_size
    if total is not None and got != total:
        raise TransferError(f"connection closed after {got} of {total} bytes")


def _open(url: str, offset: int, timeout_s: float) -> http.client.HTTPResponse | None:
    """Open ``url`` asking for bytes from ``offset`` on; None when the server answers 416."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout_s)  # caller passes http(s) URLs only
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            return None
        raise TransferError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise TransferError(f"cannot connect ({one_line(exc.reason)})") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise TransferError(one_line(exc)) from None


def _response_span(response: http.client.HTTPResponse, offset: int) -> tuple[int, int | None]:
    """``(first byte the body holds, total file size or None)``; 0 when the server ignored the Range."""
    length = response.headers.get("Content-Length")
    length_n = int(length) if length and length.isdigit() else None
    if response.status != 206:
        return 0, length_n
    content_range = response.headers.get("Content-Range", "")
    match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range)
    if not match or int(match.group(1)) != offset:
        raise TransferError(f"asked for bytes from {offset} on, the server sent range {content_range!r}")
    total = match.group(3)
    return offset, int(total) if total.isdigit() else None


def _copy(response: http.client.HTTPResponse, out: BinaryIO, bar: tqdm) -> None:
    while True:
        try:
            chunk = response.read(DOWNLOAD_CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            raise TransferError(f"transfer failed ({one_line(exc)})") from None
        if not chunk:
            return
        out.write(chunk)
        bar.update(len(chunk))


def one_line(value: object) -> str:
    """The first line of ``str(value)`` (or the type name): errors here are one line."""
    lines = str(value).strip().splitlines()
    return lines[0] if lines else type(value).__name__
