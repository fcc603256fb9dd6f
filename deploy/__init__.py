"""Device side of edgedistill: runs a deploy bundle on the board.

This package is copied into every bundle and executed there with
``python3 -m deploy.run ...``. It needs only numpy and one runtime
(onnxruntime, the TVM runtime or TensorRT); it must never import torch or
edgedistill. Runtimes are imported lazily, so a board with only one of them
installed can still use the rest of the package. The host side imports
:mod:`deploy.measure` and :mod:`deploy.backends` so that host and device
figures come from the same code.

Python >= 3.8 (JetPack 5 ships 3.8): no ``match``, no runtime ``X | Y`` types.
"""

BENCH_FORMAT = "edgedistill-bench/1"
BUNDLE_FORMAT = "edgedistill-bundle/1"
