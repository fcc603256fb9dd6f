"""Jetson GPU code from TVM 0.27 on a machine without a GPU: what can be made, and what cannot.

Measured with the PyPI wheel (apache-tvm 0.27.0.post1, LLVM 22, built with CUDA 13):

* ``tvm.compile`` with a ``cuda`` target schedules the kernels (dlight's default
  GPU rules) and emits them as **CUDA C source** embedded in the library (module
  format ``cuda``); no CUDA toolkit or GPU is needed for that. The source becomes
  GPU machine code only when the library is *loaded*: the runtime calls
  ``tvm_callback_cuda_compile`` (NVRTC through the ``cuda-bindings`` package, or
  nvcc when ``TVM_CUDA_COMPILE_MODE=nvcc``) on the device.
* The LLVM ``nvptx`` route, which would make PTX here, fails in this build
  (LLVM 22 rejects the barrier intrinsic TVM emits).
* A local nvcc can compile the source, which proves the kernels build for the
  GPU's arch; the cubin is not shipped because the runtime cannot take one in
  place of the source, and CUDA 13's nvcc no longer supports sm_72 (Xavier).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

NVCC_TIMEOUT_S = 300
_KERNEL = re.compile(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(')


def cuda_source(executable: Any) -> str:
    """The CUDA C the executable carries (all ``cuda`` modules, concatenated)."""
    sources, stack = [], [executable.mod]
    while stack:
        module = stack.pop()
        if module.kind == "cuda":
            sources.append(module.inspect_source(""))
        stack.extend(module.imports)
    return "\n".join(sources)


def kernel_names(source: str) -> list[str]:
    return sorted(set(_KERNEL.findall(source)))


def find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.access(Path(root, "bin", "nvcc"), os.X_OK):
            return str(Path(root, "bin", "nvcc"))
    return None


def nvcc_check(source: str, arch: str) -> tuple[bool, str]:
    """Compile ``source`` to a cubin for ``arch`` with a local nvcc: (compiled, what happened)."""
    nvcc = find_nvcc()
    if nvcc is None:
        return False, "not checked: no nvcc on this machine"
    try:
        version = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
        release = re.search(r"release (\d+\.\d+)", version)
        name = f"nvcc {release.group(1)}" if release else "nvcc"
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp, "kernels.cu")
            src.write_text(source, encoding="utf-8")
            done = subprocess.run(
                [nvcc, "-cubin", f"-arch={arch}", "-w", "-o", str(Path(tmp, "kernels.cubin")), str(src)],
                capture_output=True,
                text=True,
                timeout=NVCC_TIMEOUT_S,
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"not checked: nvcc did not run ({exc})"
    if "Unsupported gpu architecture" in done.stderr:
        return False, f"not checked: {name} does not support {arch}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
        return False, f"{name} rejects them: {last}"
    return True, f"they compile with {name} for {arch} here"


def gpu_note(arch: str, kernels: int, library: str, check: str) -> str:
    """Why the GPU is listed as not compiled, in one line for the manifest."""
    return (
        f"{kernels} CUDA kernels for {arch} generated as CUDA C in {library} ({check}); TVM 0.27 compiles them "
        "on the device when the library is loaded, which needs nvcc or `pip install cuda-bindings` there and a "
        "TVM runtime built with CUDA for the device's CUDA version (the PyPI wheel's links CUDA 13)"
    )
