"""Checksum-verified, atomic downloads of the official dataset files.

Only called when the user asks for ``download=True``; the file appears at its
final path only once it is complete and its MD5 matches.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from edgedistill.errors import DataError
from edgedistill.utils.atomic import atomic_path

_BLOCK = 1 << 20
TIMEOUT_S = 60.0


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def open_url(url: str, timeout: float) -> BinaryIO:
    """Open ``url`` for reading (the one network access; tests replace it)."""
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - fixed official https/http URLs


def download(url: str, dest: Path, md5: str) -> Path:
    """Make ``dest`` hold the file at ``url`` with checksum ``md5``.

    A ``dest`` that already matches is kept; otherwise the file is fetched to a
    temporary sibling, verified, then renamed into place.
    """
    if dest.is_file() and md5_of(dest) == md5:
        return dest
    hint = f"check the network, or fetch {url} yourself into {dest.parent}"
    try:
        with atomic_path(dest) as tmp:
            with open_url(url, TIMEOUT_S) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out, _BLOCK)
            actual = md5_of(tmp)
            if actual != md5:
                raise DataError(f"checksum mismatch for {url}: MD5 {actual}, expected {md5}", hint)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise DataError(f"could not download {url}: {getattr(exc, 'reason', exc)}", hint) from exc
    return dest
