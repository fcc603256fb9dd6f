"""Shared builders for the deploy tests (no tests here): small real ONNX models
exported with torch, and bundles around them finished by the exporter's own code.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Dict, Optional

import deploy

INPUT_SHAPE = (1, 3, 16, 16)
CLASSES = 10
DEPLOY_DIR = Path(deploy.__file__).resolve().parent


def export_cnn(path: Path, width: int = 8, depthwise: bool = False, seed: int = 0) -> Path:
    """A small conv net (optionally with a depthwise conv) as a single-file ONNX model."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    middle = nn.Conv2d(width, width, 3, padding=1, groups=width if depthwise else 1)
    model = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        middle,
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, CLASSES),
    ).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(*INPUT_SHAPE),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
        )
    return path


def compile_tvm(onnx_path: Path, out: Path) -> Path:
    """Compile an ONNX model for this CPU with TVM and export a shared library."""
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    module = from_onnx(onnx.load(str(onnx_path)), shape_dict={"input": list(INPUT_SHAPE)})
    executable = tvm.compile(module, target=tvm.target.Target({"kind": "llvm"}))
    executable.export_library(str(out))
    return out


def make_bundle(
    root: Path,
    models: Dict[str, Path],
    tvm: Optional[Dict[str, Path]] = None,
    target: str = "host",
    backend: str = "onnxruntime",
) -> Path:
    """A bundle in ``root`` from ready ONNX files (and TVM libraries), finished by the exporter's own
    code: the target's record as export writes it, TVM entries from :class:`TvmArtifact`, and
    :func:`finish_bundle` for deploy/, requirements, README and the manifest with every file's hash."""
    from edgedistill.backends.tvm.compile import TvmArtifact
    from edgedistill.export.bundle import finish_bundle
    from edgedistill.export.targets import load_target

    spec = load_target(target)
    (root / "models").mkdir(parents=True)
    entries = {}
    for name, onnx_path in models.items():
        shutil.copy(onnx_path, root / "models" / f"{name}.onnx")
        artifacts = {"tensorrt": {"build_on_device": True, "precision": "fp16", "engine": f"models/{name}.fp16.engine"}}
        if tvm and name in tvm:
            library = root / "models" / f"{name}.tvm.so"
            shutil.copy(tvm[name], library)
            artifacts["tvm"] = TvmArtifact(library, "so", spec.tvm_cpu_target, ["cpu"], {}).manifest(root)
        entries[name] = {
            "onnx": f"models/{name}.onnx",
            "artifacts": artifacts,
            "accuracy": {"val_top1": 0.5, "test_top1": 0.5},
            "params": 1000,
            "macs": 10000,
            "arch": "tiny",
            "cheap": "depthwise" if name == "student" else None,
        }
    finish_bundle(root, {
        "target": spec.raw,
        "backend": backend,
        "precision": "fp32",
        "input": {"name": "input", "shape": list(INPUT_SHAPE), "dtype": "float32", "layout": "NCHW"},
        "output": {"name": "logits", "shape": [1, CLASSES]},
        "class_names": [str(i) for i in range(CLASSES)],
        "models": entries,
    })
    return root
