"""Where edgedistill keeps what it can reuse across runs: ``$XDG_CACHE_HOME/edgedistill`` (``~/.cache``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "edgedistill", *parts)
