"""Shared builders for the deploy tests (no tests here): small real ONNX models
exported with torch, and bundles assembled by hand the way ``edgedistill
export`` lays them out (manifest with SHA-256 of every file, a copy of deploy/).
"""

from __future__ import annotations

import hashlib
import json
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


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_bundle(
    root: Path,
    models: Dict[str, Path],
    tvm: Optional[Dict[str, Path]] = None,
    target: Optional[dict] = None,
    backend: str = "onnxruntime",
) -> Path:
    """Lay out a bundle in ``root``: models/, a copy of deploy/, manifest.json with hashes."""
    (root / "models").mkdir(parents=True)
    shutil.copytree(DEPLOY_DIR, root / "deploy", ignore=shutil.ignore_patterns("__pycache__"))
    entries = {}
    for name, onnx_path in models.items():
        shutil.copy(onnx_path, root / "models" / f"{name}.onnx")
        artifacts = {"tensorrt": {"build_on_device": True, "precision": "fp16", "engine": f"models/{name}.fp16.engine"}}
        if tvm and name in tvm:
            shutil.copy(tvm[name], root / "models" / f"{name}.tvm.so")
            artifacts["tvm"] = {"path": f"models/{name}.tvm.so", "format": "so", "compiled_for": ["cpu"], "not_compiled": []}
        entries[name] = {
            "onnx": f"models/{name}.onnx",
            "artifacts": artifacts,
            "accuracy": {"val_top1": 0.5, "test_top1": 0.5},
            "params": 1000,
            "macs": 10000,
            "arch": "tiny",
            "cheap": "depthwise" if name == "student" else None,
        }
    files = {
        path.relative_to(root).as_posix(): sha256(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }
    manifest = {
        "format": "edgedistill-bundle/1",
        "created": "2026-11-25T12:00:00Z",
        "target": target if target is not None else {"name": "host", "tvm": {"kind": "llvm", "mtriple": "x86_64-linux-gnu"}},
        "backend": backend,
        "precision": "fp32",
        "input": {"name": "input", "shape": list(INPUT_SHAPE), "dtype": "float32", "layout": "NCHW"},
        "output": {"name": "logits", "shape": [1, CLASSES]},
        "class_names": [str(i) for i in range(CLASSES)],
        "models": entries,
        "files": files,
        "versions": {},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root
