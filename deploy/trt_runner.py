"""Run a serialized TensorRT engine (TensorRT >= 8.5 name-based I/O API).

The engine was built on this device by :mod:`deploy.trt_build`; engines are
not portable across GPUs or TensorRT versions, so a failed deserialisation
says to rebuild. Device memory and the stream come from :mod:`deploy.cudart`.
A timed ``run`` covers copy in, ``execute_async_v3``, copy out and the
stream synchronisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from deploy.cudart import CudaRuntime
from deploy.errors import DeployError
from deploy.backends.base import Runner
from deploy.runtime import require


class TensorRTRunner(Runner):
    """One engine, one execution context, one stream; single input, first output returned."""

    backend = "tensorrt"

    def __init__(self, path: Path, threads: int) -> None:
        super().__init__(path, threads)
        trt = require("tensorrt")
        self.cuda = CudaRuntime()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise DeployError(
                f"TensorRT could not deserialise {self.path.name}",
                "engines are tied to the GPU and TensorRT version: rebuild with python3 -m deploy.run build-engine",
            )
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream_create()
        self.inputs: List[Tuple[str, np.dtype, Tuple[int, ...], int]] = []
        self.outputs: List[Tuple[str, np.ndarray, int]] = []
        self._buffers: Dict[str, int] = {}
        for index in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(index)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise DeployError(
                    f"engine tensor {name} has a dynamic shape {shape}", "build the engine from a fixed-shape ONNX model"
                )
            pointer = self.cuda.malloc(int(np.prod(shape)) * dtype.itemsize)
            self._buffers[name] = pointer
            self.context.set_tensor_address(name, pointer)
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs.append((name, dtype, shape, pointer))
            else:
                self.outputs.append((name, np.empty(shape, dtype=dtype), pointer))
        if len(self.inputs) != 1 or not self.outputs:
            raise DeployError(f"engine {self.path.name} has {len(self.inputs)} inputs", "expected one image input")

    def run(self, x: np.ndarray) -> np.ndarray:
        name, dtype, shape, pointer = self.inputs[0]
        if tuple(x.shape) != shape:
            raise DeployError(f"input shape {tuple(x.shape)} does not match the engine's {shape}", "use the bundle's input shape")
        self.cuda.to_device(pointer, x.astype(dtype, copy=False), self.stream)
        if not self.context.execute_async_v3(self.stream):
            raise DeployError(f"TensorRT execution of {self.path.name} failed", "see the TensorRT log above")
        for _, host, device_pointer in self.outputs:
            self.cuda.to_host(host, device_pointer, self.stream)
        self.cuda.synchronize(self.stream)
        return self.outputs[0][1].copy()

    def __del__(self) -> None:
        cuda = getattr(self, "cuda", None)
        if cuda is None:
            return
        for pointer in getattr(self, "_buffers", {}).values():
            cuda.lib.cudaFree(pointer)
        if getattr(self, "stream", None):
            cuda.lib.cudaStreamDestroy(self.stream)
