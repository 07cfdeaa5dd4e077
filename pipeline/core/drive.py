"""Google Drive downloads through gdown, which follows Drive's confirm page for large files.

Drive does not serve a large file at its share link: it answers with a "virus scan warning" page whose
form leads to the bytes. gdown (a maintained library made for this) reads that page, so no Drive HTML is
scraped here. :func:`download_drive_file` writes to its own resumable temporary file beside ``staging``
and moves it to ``staging`` when complete; checking and renaming is the caller's job, as for
:func:`pipeline.core.download.download_to_part`.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.download import DEFAULT_TIMEOUT_S, TransferError, WrongSizeError, one_line

DRIVE_RETRIES = 2  # extra attempts gdown makes on a dropped connection, resuming each time


def download_drive_file(
    url: str,
    staging: Path,
    expected_size: int | None,
    progress: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Fetch the Drive file ``url`` into ``staging`` with gdown (resuming gdown's ``<staging>*.part``).

    A body whose announced length differs from ``expected_size`` is abandoned at once
    (:class:`WrongSizeError`), so a different file behind the link costs no full download. Network and
    Drive failures (quota, permission, no confirm form) raise :class:`TransferError` in one line.
    """
    import gdown
    import requests

    def _check_size(_done: int, total: int | None) -> None:
        if expected_size is not None and total is not None and total != expected_size:
            raise WrongSizeError(
                f"size does not match (the server announces {total} bytes, expected {expected_size})"
            )

    try:
        gdown.download(
            url=url,
            output=str(staging),
            quiet=not progress,
            use_cookies=False,  # nothing written to ~/.cache/gdown
            resume=True,
            progress=_check_size,
            timeout=timeout_s,
            retries=DRIVE_RETRIES,
        )
    except WrongSizeError:
        raise
    except (gdown.exceptions.FileURLRetrievalError, gdown.exceptions.DownloadError) as exc:
        raise TransferError(f"Google Drive: {_drive_reason(exc)}") from None
    except requests.RequestException as exc:  # before OSError: requests' errors subclass it
        raise TransferError(f"Google Drive: {one_line(exc)}") from None


def drive_partials(staging: Path) -> list[Path]:
    """gdown's temporary files for ``staging`` (``<staging name><8 characters>.part``)."""
    return [
        p for p in staging.parent.glob(f"{staging.name}*.part") if len(p.name) == len(staging.name) + 8 + 5
    ]


def _drive_reason(exc: Exception) -> str:
    # gdown's messages are paragraphs; keep the line that says what went wrong.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    boilerplate = ("Failed to retrieve", "You may", "but Gdown")
    informative = [line for line in lines if not line.startswith(boilerplate)]
    return (informative or lines or [type(exc).__name__])[0]
