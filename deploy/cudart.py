"""The few CUDA runtime calls TensorRT inference needs, through ctypes.

JetPack ships ``libcudart`` with the CUDA toolkit but neither pycuda nor
cuda-python, and deploy/ may not use torch for device memory; ctypes needs
nothing beyond the library itself. Only what the TensorRT runner and the INT8
calibrator use is wrapped: device buffers, one stream, copies, versions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
from typing import List, Optional

import numpy as np

from deploy.errors import DeployError

_HOST_TO_DEVICE = 1
_DEVICE_TO_HOST = 2
_ATTR_CC_MAJOR = 75
_ATTR_CC_MINOR = 76


def _candidates() -> List[str]:
    names = ["libcudart.so", "libcudart.so.12", "libcudart.so.11.0"]
    found = ctypes.util.find_library("cudart")
    if found:
        names.insert(0, found)
    names += sorted(glob.glob("/usr/local/cuda*/lib64/libcudart.so*"), reverse=True)
    names += sorted(glob.glob("/usr/local/cuda*/targets/*/lib/libcudart.so*"), reverse=True)
    return names


def load_library(candidates: Optional[List[str]] = None) -> ctypes.CDLL:
    """Open libcudart or raise a DeployError naming what was tried."""
    tried = candidates if candidates is not None else _candidates()
    for name in tried:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise DeployError(
        "the CUDA runtime library (libcudart) was not found",
        "install the CUDA toolkit that comes with JetPack, or add its lib64 directory to LD_LIBRARY_PATH",
    )


class CudaRuntime:
    """Checked wrappers: every failing call raises a DeployError with CUDA's message."""

    def __init__(self, library: Optional[ctypes.CDLL] = None) -> None:
        self.lib = library if library is not None else load_library()
        self.lib.cudaGetErrorString.restype = ctypes.c_char_p
        self.lib.cudaGetErrorString.argtypes = [ctypes.c_int]
        self.lib.cudaMemcpyAsync.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        self.lib.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.lib.cudaMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        self.lib.cudaFree.argtypes = [ctypes.c_void_p]
        self.lib.cudaStreamSynchronize.argtypes = [ctypes.c_void_p]
        self.lib.cudaStreamDestroy.argtypes = [ctypes.c_void_p]

    def check(self, code: int, what: str) -> None:
        if code != 0:
            message = self.lib.cudaGetErrorString(code).decode(errors="replace")
            raise DeployError(f"CUDA {what} failed: {message} (error {code})", "check that the GPU is visible (nvidia-smi / tegrastats)")

    def malloc(self, nbytes: int) -> int:
        pointer = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(pointer), max(int(nbytes), 1)), "cudaMalloc")
        return int(pointer.value or 0)

    def free(self, pointer: int) -> None:
        self.check(self.lib.cudaFree(ctypes.c_void_p(pointer)), "cudaFree")

    def stream_create(self) -> int:
        stream = ctypes.c_void_p()
        self.check(self.lib.cudaStreamCreate(ctypes.byref(stream)), "cudaStreamCreate")
        return int(stream.value or 0)

    def stream_destroy(self, stream: int) -> None:
        self.check(self.lib.cudaStreamDestroy(ctypes.c_void_p(stream)), "cudaStreamDestroy")

    def synchronize(self, stream: int) -> None:
        self.check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    def to_device(self, pointer: int, host: np.ndarray, stream: Optional[int] = None) -> None:
        """Copy a C-contiguous host array to device memory at ``pointer``."""
        host = np.ascontiguousarray(host)
        source = ctypes.c_void_p(host.ctypes.data)
        if stream is None:
            self.check(self.lib.cudaMemcpy(ctypes.c_void_p(pointer), source, host.nbytes, _HOST_TO_DEVICE), "cudaMemcpy")
        else:
            code = self.lib.cudaMemcpyAsync(ctypes.c_void_p(pointer), source, host.nbytes, _HOST_TO_DEVICE, ctypes.c_void_p(stream))
            self.check(code, "cudaMemcpyAsync")

    def to_host(self, host: np.ndarray, pointer: int, stream: int) -> None:
        """Queue a copy from device memory into the C-contiguous array ``host``."""
        if not host.flags["C_CONTIGUOUS"]:
            raise ValueError("host buffer must be C-contiguous")
        code = self.lib.cudaMemcpyAsync(
            ctypes.c_void_p(host.ctypes.data), ctypes.c_void_p(pointer), host.nbytes, _DEVICE_TO_HOST, ctypes.c_void_p(stream)
        )
        self.check(code, "cudaMemcpyAsync")

    def _int_query(self, function: str, *args: int) -> int:
        value = ctypes.c_int()
        self.check(getattr(self.lib, function)(ctypes.byref(value), *args), function)
        return value.value

    def runtime_version(self) -> str:
        return _cuda_version(self._int_query("cudaRuntimeGetVersion"))

    def driver_version(self) -> str:
        return _cuda_version(self._int_query("cudaDriverGetVersion"))

    def device_name(self) -> str:
        # cudaDeviceProp starts with char name[256]; the rest of its layout
        # changes between CUDA versions, so a generous buffer is passed.
        properties = ctypes.create_string_buffer(16384)
        device = self._int_query("cudaGetDevice")
        function = getattr(self.lib, "cudaGetDeviceProperties_v2", None) or self.lib.cudaGetDeviceProperties
        self.check(function(properties, device), "cudaGetDeviceProperties")
        return properties.raw[:256].split(b"\x00", 1)[0].decode(errors="replace")

    def compute_capability(self) -> str:
        device = self._int_query("cudaGetDevice")
        major = self._int_query("cudaDeviceGetAttribute", _ATTR_CC_MAJOR, device)
        minor = self._int_query("cudaDeviceGetAttribute", _ATTR_CC_MINOR, device)
        return f"{major}.{minor}"


def _cuda_version(encoded: int) -> str:
    """CUDA encodes 12.2 as 12020."""
    return f"{encoded // 1000}.{(encoded % 1000) // 10}"
