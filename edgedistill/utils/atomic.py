"""Write files and directories so that a crash never leaves half of one behind.

File writes are the device runner's (``deploy.atomic``: temp sibling, then
``os.replace``); this module adds whole directories and writer callbacks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from deploy.atomic import atomic_path, current_umask, write_bytes_atomic, write_json_atomic, write_text_atomic

__all__ = ["atomic_directory", "atomic_path", "save_with", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def save_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and atomically move the result onto ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory; move it onto ``path`` when the block succeeds.

    With ``overwrite`` an existing ``path`` is replaced only after the new
    directory is complete, so a failure keeps the old one intact.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise FileExistsError(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except OSError:
                os.replace(old, final)  # put the previous directory back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
