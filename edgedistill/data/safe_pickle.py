"""Unpickling restricted to plain data and numpy arrays.

The official CIFAR batches are Python pickles. Unpickling runs whatever
callable the file names, so a file from anywhere could run code; this loader
only lets numpy's array reconstruction helpers through and refuses anything else.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.dtypes", "UInt8DType"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in protocol 2 (pure: str -> bytes)
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays and plain data)")
        return super().find_class(module, name)


def load_data_pickle(file: IO[bytes]) -> Any:
    """Load a pickle of dicts/lists/bytes/numbers/numpy arrays (Python 2 pickles as bytes)."""
    return _DataOnlyUnpickler(file, encoding="bytes").load()
