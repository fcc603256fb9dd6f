"""Where datasets are looked for and downloaded to by default."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_root() -> Path:
    """``$EDGEDISTILL_DATA``, else ``$XDG_CACHE_HOME/edgedistill/data`` (``~/.cache/...``)."""
    explicit = os.environ.get("EDGEDISTILL_DATA")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "edgedistill" / "data"
