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
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

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

#: LLVM feature names that differ from the kernel's cpuinfo flag names.
_LLVM_TO_CPUINFO = {
    "sse4.1": "sse4_1",
    "sse4.2": "sse4_2",
    "neon": "asimd",
    "dotprod": "asimddp",
    "fullfp16": "asimdhp",
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


def _walk(obj: Any) -> Iterator[Tuple[str, Any]]:
    """All (key, value) pairs of nested dicts/lists, depth first."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield str(key), value
            yield from _walk(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _walk(item)


def target_arch(target: Mapping[str, Any]) -> Optional[str]:
    """The CPU architecture a target was built for, from whichever key states it.

    Targets state it as ``arch``/``machine`` or through the LLVM triple of
    their TVM target (``mtriple = "aarch64-linux-gnu"``); values that are not
    CPU architectures (a GPU ``arch = "sm_87"``) are skipped.
    """
    known = set(_ARCH_ALIASES.values())
    for keys, pick in ((("arch", "machine"), lambda v: v), (("mtriple",), lambda v: v.split("-", 1)[0])):
        for key, value in _walk(dict(target)):
            if key in keys and isinstance(value, str) and normalise_arch(pick(value)) in known:
                return normalise_arch(pick(value))
    return None


def required_cpu_flags(target: Mapping[str, Any]) -> List[str]:
    """cpuinfo flags implied by the target's LLVM ``mattr`` (``+avx512f`` ...)."""
    flags: List[str] = []
    for key, value in _walk(dict(target)):
        if key != "mattr":
            continue
        items = value.split(",") if isinstance(value, str) else list(value)
        for item in items:
            item = str(item).strip()
            if item.startswith("+"):
                feature = item[1:].lower()
                flags.append(_LLVM_TO_CPUINFO.get(feature, feature.replace(".", "_")))
    return sorted(set(flags))


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
        """Threads the target asks for, when its TOML states them."""
        for key, value in _walk(dict(self.manifest.get("target") or {})):
            if key == "threads" and isinstance(value, int) and value > 0:
                return value
        return None

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
