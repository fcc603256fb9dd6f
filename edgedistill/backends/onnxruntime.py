"""onnxruntime: the verified ONNX file is the artifact; it runs on every CPU bench can reach."""

from edgedistill.backends.base import HostBackend, register

BACKEND = register(HostBackend(
    name="onnxruntime",
    summary="the verified ONNX file, run by onnxruntime on the CPU",
))
