"""The deploy bundle: a self-contained directory that runs on the board without torch.

```
BUNDLE/
  manifest.json           target, backend, input spec, per-model accuracy/params/MACs/parity, SHA-256 of every file
  models/<model>.onnx     single-file ONNX (fixed input shape unless --dynamic-batch)
  models/<model>.tvm.so   TVM library for the target (GPU targets: also <model>.tvm.cuda.so)
  models/<model>.int8.onnx      onnxruntime int8 model (--precision int8)
  calibration/calibration.npy   TensorRT INT8 calibration images (TensorRT bundles)
  evaluation/test-*.npy   a seeded test subset (uint8 images, labels) for 'deploy.run eval'
  deploy/                 the device runner: python3 -m deploy.run bench|verify|build-engine|info
  requirements.txt        what the device needs from pip for this bundle's backend
  README.md               how to run it on the device
```
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import shutil
from pathlib import Path
from typing import Any

import deploy
from deploy import BUNDLE_FORMAT
from deploy.backends import get_backend
from deploy.manifest import sha256_file
from edgedistill import __version__
from edgedistill.errors import EdgeDistillError
from edgedistill.utils.atomic import write_json_atomic, write_text_atomic



def versions() -> dict[str, str]:
    found = {"edgedistill": __version__}
    for package in ("torch", "onnx", "onnxruntime", "onnxslim", "apache-tvm", "tensorrt"):
        try:
            found[package.removeprefix("apache-")] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def copy_device_runner(root: Path) -> None:
    """Copy the ``deploy`` package (the device side) into the bundle."""
    source = Path(deploy.__file__).parent
    shutil.copytree(source, root / "deploy", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _readme(manifest: dict[str, Any]) -> str:
    target, backend = manifest["target"]["name"], manifest["backend"]
    models = ", ".join(manifest["models"])
    build = "python3 -m deploy.run build-engine            # TensorRT engine, built on this device\n" if backend == "tensorrt" else ""
    return f"""# edgedistill bundle for {target} ({backend})

Models: {models}. Input {manifest['input']['shape']} float32 {manifest['input']['layout']}, normalised with the
mean/std in manifest.json. Copy this directory to the device, then:

```
python3 -m pip install -r requirements.txt
python3 -m deploy.run verify                  # file hashes, target check, and a run of each model (output shape, finite)
{build}python3 -m deploy.run bench --json > result.json   # latency + memory, student vs teacher
python3 -m deploy.run eval                    # top-1 of each model on the bundle's test subset, on this device
```

Bring result.json back and run `edgedistill bench --import result.json` for the report.
"""


def finish_bundle(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Add the device runner, requirements, README and the manifest (with every file's hash)."""
    copy_device_runner(root)
    write_text_atomic(root / "requirements.txt", "\n".join(get_backend(manifest["backend"]).requirements) + "\n")
    write_text_atomic(root / "README.md", _readme(manifest))
    manifest = {
        "format": BUNDLE_FORMAT,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **manifest,
        "versions": versions(),
    }
    manifest["files"] = {
        str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"
    }
    write_json_atomic(root / "manifest.json", manifest)
    return manifest


def directory_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def foreign_files(bundle: Path) -> list[str] | None:
    """The files in ``bundle`` that edgedistill did not write, or None when it is not a bundle of ours.

    A bundle of ours has our manifest.json, which lists every file export wrote; ``report/`` holds
    what ``edgedistill bench`` wrote into it. Anything else is the user's.
    """
    try:
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not str(manifest.get("format", "")).startswith(BUNDLE_FORMAT.split("/")[0] + "/"):
        return None
    ours = set(manifest.get("files") or {}) | {"manifest.json"}
    return sorted(
        rel for rel in (str(p.relative_to(bundle)) for p in bundle.rglob("*") if not p.is_dir())
        if rel not in ours and not rel.startswith("report/")
    )


def check_out_dir(out: Path, overwrite: bool, source: Path) -> None:
    """Refuse, before any work, an --out that would lose a user's files or cannot be written."""
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise EdgeDistillError(f"{out} already exists", "choose another --out, or pass --force to replace a bundle of ours")
        resolved = out.resolve()
        if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents or resolved in source.resolve().parents \
                or resolved == source.resolve():
            raise EdgeDistillError(f"--out {out} is the current directory or holds the run being exported",
                                   "--force replaces only a bundle directory; choose another --out")
        foreign = foreign_files(out) if out.is_dir() and not out.is_symlink() else None
        if foreign is None:
            raise EdgeDistillError(f"{out} exists and is not an edgedistill bundle: --force will not replace it",
                                   "--force replaces only a bundle directory written by 'edgedistill export'; choose another --out")
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise EdgeDistillError(f"bundle {out} holds files edgedistill did not write ({shown}): --force will not delete them",
                                   "move them out of the bundle, or choose another --out")
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise EdgeDistillError(f"cannot write the bundle: {parent} is not a writable directory", "choose another --out")
