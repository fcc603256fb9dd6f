"""Read a deploy bundle: its manifest, file hashes and target check.

A bundle is only trusted after every file listed in ``manifest.json`` has the
SHA-256 recorded at export, and after its target's CPU architecture (and the
CPU features its code was compiled for) matches this machine. ``force`` skips
the target check, never the hash check.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from deploy import BUNDLE_FORMAT
from deploy.errors import DeployError

MODELS = ("student", "teacher")

_ARCH_ALIASES = {
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv8": "aarch64",
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "armv7l": "armv7",
    "armv7": "armv7",
    "arm": "armv7",
    "armhf": "armv7",
}

def default_bundle_dir() -> Path:
    """The bundle this copy of deploy/ lives in."""
    return Path(__file__).resolve().parent.parent


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(root: Path) -> Dict[str, Any]:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise DeployError(f"no manifest.json in {root}", "pass --bundle DIR pointing at an exported bundle")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DeployError(f"{path} is not valid JSON: {exc}", "re-export or re-copy the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DeployError(
            f"{path} has format {found!r}, expected {BUNDLE_FORMAT!r}",
            "export the bundle with a matching edgedistill version",
        )
    return manifest


def _safe_relative(name: str) -> PurePosixPath:
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise DeployError(f"manifest.json lists an unsafe path {name!r}", "the manifest is corrupt or tampered with")
    return rel


def verify_files(root: Path, manifest: Mapping[str, Any]) -> int:
    """Check every listed file's SHA-256; return how many were checked."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise DeployError("manifest.json lists no file hashes", "re-export the bundle")
    bad: List[str] = []
    for name, expected in files.items():
        path = Path(root) / _safe_relative(name)
        if not path.is_file():
            bad.append(f"{name} is missing")
        elif sha256_file(path) != str(expected).lower():
            bad.append(f"{name} does not match its SHA-256 in manifest.json")
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DeployError(f"bundle check failed: {bad[0]}{more}", "the bundle is corrupt or was modified: re-copy it")
    return len(files)


def normalise_arch(name: str) -> str:
    return _ARCH_ALIASES.get(name.lower(), name.lower())


def target_arch(target: Mapping[str, Any]) -> Optional[str]:
    """The CPU architecture a bundle's target was compiled for: its ``arch``, as the exporter wrote
    it from the target's TOML (``edgedistill.export.targets``), normalised; None if unstated."""
    arch = target.get("arch")
    return normalise_arch(arch) if isinstance(arch, str) else None


def required_cpu_flags(target: Mapping[str, Any]) -> List[str]:
    """The /proc/cpuinfo flags the target's code needs: its TOML's ``[cpu] flags``."""
    flags = (target.get("cpu") or {}).get("flags") or []
    return sorted({str(flag) for flag in flags})


def cpu_flags(cpuinfo: Optional[str] = None) -> Optional[set]:
    """This CPU's feature flags ("flags" on x86, "Features" on ARM), or None."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def check_target(
    manifest: Mapping[str, Any], machine: Optional[str] = None, flags: Optional[set] = None
) -> None:
    """Refuse a bundle compiled for another CPU architecture or missing CPU features."""
    target = manifest.get("target") or {}
    name = target.get("name", "?")
    here = normalise_arch(machine or platform.machine())
    wanted = target_arch(target)
    if wanted is not None and wanted != here:
        raise DeployError(
            f"bundle is for target '{name}' ({wanted}) but this machine is {here}",
            "export a bundle for this board, or pass --force to try anyway",
        )
    flags = flags if flags is not None else cpu_flags()
    if flags is None:
        return
    missing = [flag for flag in required_cpu_flags(target) if flag not in flags]
    if missing:
        raise DeployError(
            f"this CPU lacks {', '.join(missing)} needed by target '{name}'",
            "export for a target that matches this CPU, or pass --force to try anyway",
        )


@dataclass
class Bundle:
    """A verified bundle directory and its manifest."""

    root: Path
    manifest: Dict[str, Any]

    @classmethod
    def load(cls, root: Path, verify: bool = True, force: bool = False) -> "Bundle":
        root = Path(root).resolve()
        manifest = load_manifest(root)
        if verify:
            verify_files(root, manifest)
        if not force:
            check_target(manifest)
        return cls(root, manifest)

    @property
    def target_name(self) -> str:
        return str((self.manifest.get("target") or {}).get("name", "unknown"))

    @property
    def default_backend(self) -> str:
        return str(self.manifest.get("backend", "onnxruntime"))

    @property
    def default_threads(self) -> Optional[int]:
        """Threads the target asks for (its TOML's ``threads``)."""
        threads = (self.manifest.get("target") or {}).get("threads")
        return threads if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0 else None

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return tuple(int(d) for d in self.manifest["input"]["shape"])

    @property
    def input_dtype(self) -> str:
        return str(self.manifest["input"].get("dtype", "float32"))

    @property
    def output_shape(self) -> Optional[Tuple[int, ...]]:
        shape = (self.manifest.get("output") or {}).get("shape")
        return tuple(int(d) for d in shape) if shape else None

    def model_names(self, which: str = "both") -> List[str]:
        present = [name for name in MODELS if name in self.manifest.get("models", {})]
        if which == "both":
            return present
        if which not in present:
            raise DeployError(f"bundle has no {which} model", f"it has: {', '.join(present) or 'none'}")
        return [which]

    def model(self, name: str) -> Dict[str, Any]:
        return self.manifest["models"][self.model_names(name)[0]]

    def path(self, relative: str) -> Path:
        return self.root / _safe_relative(relative)

    def onnx_path(self, model: str) -> Path:
        return self.path(self.model(model)["onnx"])

    def engine_path(self, model: str, precision: Optional[str] = None) -> Path:
        """Where the TensorRT engine of ``model`` lives (built on the device)."""
        spec = (self.model(model).get("artifacts") or {}).get("tensorrt") or {}
        default = spec.get("engine") or f"models/{model}.{spec.get('precision', 'fp16')}.engine"
        if precision is None:
            return self.path(default)
        return self.path(str(PurePosixPath(default).parent / f"{model}.{precision}.engine"))

    def artifact_path(self, model: str, backend: str, precision: Optional[str] = None) -> Path:
        """The file a backend runs for ``model``; a clear error when it is absent."""
        from deploy.backends import get_backend

        return get_backend(backend).artifact(self, model, precision)

    def calibration_path(self) -> Optional[Path]:
        path = self.root / "calibration" / "calibration.npy"
        return path if path.is_file() else None

    def relative(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.root).as_posix()


def parse_shape(text: str) -> Sequence[int]:
    """"1,3,32,32" -> (1, 3, 32, 32)."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise DeployError(f"bad shape {text!r}", "write it as comma-separated integers, e.g. 1,3,32,32") from None
    if not shape or any(d <= 0 for d in shape):
        raise DeployError(f"bad shape {text!r}", "every dimension must be a positive integer")
    return shape
