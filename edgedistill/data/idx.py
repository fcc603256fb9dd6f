"""Reader for the IDX format of MNIST and Fashion-MNIST (plain or gzipped).

Layout: two zero bytes, a type code, the number of dimensions ``d``, then ``d``
big-endian uint32 sizes and the data, big-endian, row-major. Label files are
``0x00000801`` (2049: uint8, 1-D), image files ``0x00000803`` (2051: uint8, 3-D).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from edgedistill.errors import DataError

_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode one IDX file's bytes into an array of its declared shape and type."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPES:
        raise DataError(f"{source} is not an IDX file (bad magic number)")
    dtype, ndim = _TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source} is truncated (IDX header cut short)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{source} has {len(data) - header} data bytes, its header declares {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, transparently un-gzipping it (detected by content, not name)."""
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        hint = "the file is corrupt or truncated; re-install or re-download it"
        raise DataError(f"cannot read {path}: {exc}", hint) from exc
    return parse_idx(raw, str(path))
