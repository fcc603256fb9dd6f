"""Deployment targets: one TOML file per board, shipped as ``edgedistill.target_files``.

A target says where a model runs (CPU or GPU, architecture, threads), how to
compile for it (the TVM 0.27 target dict, the cross compiler), which backends
and precision to use, which ONNX opset its runtimes read, and which software
versions the device is expected to have. Adding a board means adding a file;
users can also pass the path of their own file wherever a target name goes.

The ``host`` target is special: its file sets ``detect = true`` and the CPU
architecture, LLVM CPU name and thread count are filled in when it is loaded.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib.resources
import importlib.util
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.backends.base import PRECISIONS
from deploy.env import usable_cores
from deploy.manifest import cpu_flags, normalise_arch
from edgedistill.errors import EdgeDistillError
from edgedistill.utils.names import unknown_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

PACKAGE = "edgedistill.target_files"
DEVICES = ("cpu", "gpu")
ARCHES = ("x86_64", "aarch64")
OPSET_RANGE = (7, 23)
CROSS_TRIPLES = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}

_REQUIRED = ("name", "description", "device", "backends", "precision", "onnx_opset")
_DETECTED = ("arch", "threads")
_OPTIONAL = ("aliases", "detect", "cpu", "gpu", "tvm", "tensorrt", "software")
_TABLES = ("cpu", "gpu", "tvm", "tensorrt", "software")
_TVM_KEYS = ("target", "cross_compiler", "tune_trials")
# Hints name a command, not a repository path: a pip install has no targets/ folder.
_EXAMPLE_HINT = "'edgedistill targets --show rpi4' prints a complete example"
_GPU_EXAMPLE_HINT = "'edgedistill targets --show jetson-orin-nano' prints a GPU example"


@dataclass(frozen=True)
class Target:
    """One deployment target, validated. ``raw`` is the TOML content (after host detection) for the manifest."""

    name: str
    description: str
    aliases: tuple[str, ...]
    device: str  # "cpu" | "gpu": where the model runs by default
    arch: str  # "x86_64" | "aarch64"
    backends: tuple[str, ...]  # first is the default
    precision: str
    onnx_opset: int
    threads: int
    tvm_target: dict[str, Any]  # TVM 0.27 dict form; GPU targets carry their CPU as "host"
    cross_compiler: str | None  # None: the machine's own compiler
    cpu_flags: tuple[str, ...]  # /proc/cpuinfo flags the compiled CPU code needs
    software: dict[str, str]  # versions expected on the device (python, cuda, jetpack, ...)
    tensorrt: dict[str, Any] | None
    source: str  # the file it was read from
    raw: dict[str, Any]
    tune_trials: int = 0  # [tvm] tune_trials: the MetaSchedule budget when export is given no --tune-trials

    @property
    def default_backend(self) -> str:
        return self.backends[0]

    @property
    def tvm_cpu_target(self) -> dict[str, Any]:
        """The LLVM target of the board's CPU (the host of a GPU target)."""
        return dict(self.tvm_target.get("host", self.tvm_target))

    @property
    def tvm_gpu_target(self) -> dict[str, Any] | None:
        """The CUDA target (with its CPU host), or None for CPU-only boards."""
        return dict(self.tvm_target) if self.tvm_target["kind"] != "llvm" else None


def _fail(source: str, problem: str, hint: str) -> EdgeDistillError:
    return EdgeDistillError(f"target file {source}: {problem}", hint)


def _closest(key: str, known: tuple[str, ...]) -> str:
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'? " if match else ""


def host_arch() -> str:
    """This machine's architecture in the names targets use (x86_64, aarch64)."""
    return normalise_arch(platform.machine())


@functools.lru_cache(maxsize=1)
def _host_llvm_cpu() -> str:
    """The LLVM name of this CPU when TVM is installed, else a baseline every CPU of the arch runs."""
    generic = {"x86_64": "x86-64", "aarch64": "generic"}.get(host_arch(), "generic")
    if importlib.util.find_spec("tvm") is None:
        return generic
    try:
        from tvm.target import codegen  # imported late: ~1 s and it pulls in torch
    except (ImportError, OSError):  # a broken install: the generic CPU still compiles
        return generic
    cpu = codegen.llvm_get_system_cpu()
    return cpu if cpu and codegen.llvm_is_valid_cpu(cpu, CROSS_TRIPLES.get(host_arch(), "")) else generic


def _detect_host(data: dict[str, Any]) -> None:
    arch = host_arch()
    threads = usable_cores()
    data["arch"] = arch
    data["threads"] = threads
    target = data.setdefault("tvm", {}).setdefault("target", {"kind": "llvm"})
    target.setdefault("mtriple", CROSS_TRIPLES.get(arch, f"{arch}-linux-gnu"))
    target.setdefault("mcpu", _host_llvm_cpu())
    target.setdefault("num-cores", threads)


def _check_keys(data: Mapping[str, Any], source: str) -> None:
    known = _REQUIRED + _DETECTED + _OPTIONAL
    for key in data:
        if key not in known:
            raise _fail(source, f"unknown key '{key}'", _closest(key, known) + "valid: " + ", ".join(known))
    for key in _TABLES:
        if key in data and not isinstance(data[key], Mapping):
            raise _fail(source, f"'{key}' must be a table", f"write it as [{key}] with keys under it")
    needed = _REQUIRED + (() if data.get("detect") else _DETECTED)
    missing = [key for key in needed if key not in data]
    if missing:
        raise _fail(source, "missing " + ", ".join(f"'{k}'" for k in missing), _EXAMPLE_HINT)
    tvm = data.get("tvm", {})
    if not isinstance(tvm.get("target"), Mapping):
        raise _fail(source, "missing [tvm.target] table", 'add [tvm.target] with kind = "llvm", mtriple and mcpu')
    for key in tvm:
        if key not in _TVM_KEYS:
            raise _fail(source, f"unknown key 'tvm.{key}'", _closest(key, _TVM_KEYS) + "valid: " + ", ".join(_TVM_KEYS))


def _choice(data: Mapping[str, Any], key: str, choices: tuple[str, ...], source: str) -> str:
    value = data[key]
    if value not in choices:
        raise _fail(source, f"{key} = {value!r} is not valid", "valid: " + ", ".join(choices))
    return value


def _integer(data: Mapping[str, Any], key: str, low: int, high: int, source: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(source, f"{key} = {value!r} is not valid", f"an integer from {low} to {high}")
    return value


def _strings(data: Mapping[str, Any], key: str, source: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(source, f"{key} must be a list of names", f'e.g. {key} = ["a", "b"]')
    return tuple(value)


def _check_tvm_target(target: Mapping[str, Any], device: str, arch: str, source: str) -> None:
    kind = target.get("kind")
    cpu = target.get("host") if kind == "cuda" else target
    if kind not in ("llvm", "cuda"):
        raise _fail(source, f"tvm.target.kind = {kind!r} is not supported", 'use "llvm" (CPU) or "cuda" (GPU)')
    if kind == "cuda":
        if device != "gpu" or not isinstance(cpu, Mapping) or "arch" not in target:
            raise _fail(source, "a cuda TVM target needs device = \"gpu\", an arch and a [tvm.target.host]", _GPU_EXAMPLE_HINT)
    elif device == "gpu":
        raise _fail(source, 'device = "gpu" needs a cuda TVM target', _GPU_EXAMPLE_HINT)
    if cpu.get("kind") != "llvm" or not str(cpu.get("mtriple", "")).startswith(arch):
        raise _fail(source, f"the CPU TVM target must be llvm with an mtriple for {arch}", f'e.g. mtriple = "{CROSS_TRIPLES.get(arch, arch)}"')
    if "mcpu" not in cpu:
        raise _fail(source, "the CPU TVM target has no mcpu", 'name the LLVM CPU, e.g. mcpu = "cortex-a72"')


def parse_target(data: Mapping[str, Any], source: str) -> Target:
    """Validate a target's TOML content; ``source`` names the file in errors."""
    data = copy.deepcopy(dict(data))
    _check_keys(data, source)
    if data.get("detect"):
        _detect_host(data)
    for key in ("name", "description"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise _fail(source, f"{key} must be a non-empty string", f'e.g. {key} = "..."')
    device = _choice(data, "device", DEVICES, source)
    arch = _choice(data, "arch", ARCHES, source)
    from edgedistill.backends import backend_names  # the backends import this module

    backends = _strings(data, "backends", source)
    bad = [b for b in backends if b not in backend_names()]
    if not backends or bad:
        raise _fail(source, f"backends = {list(backends)} is not valid", "a non-empty list of: " + ", ".join(backend_names()))
    if "tensorrt" in backends and not isinstance(data.get("tensorrt"), Mapping):
        raise _fail(source, "backend tensorrt needs a [tensorrt] table", 'add [tensorrt] with version = "10.3"')
    tvm = data["tvm"]
    _check_tvm_target(tvm["target"], device, arch, source)
    cross = tvm.get("cross_compiler")
    if cross is not None and (not isinstance(cross, str) or not cross):
        raise _fail(source, "tvm.cross_compiler must be a program name", 'e.g. cross_compiler = "aarch64-linux-gnu-gcc"')
    software = data.get("software", {})
    if not isinstance(software, Mapping) or not all(isinstance(v, str) for v in software.values()):
        raise _fail(source, "[software] values must be strings", 'e.g. python = "3.10"')
    return Target(
        name=data["name"],
        description=data["description"],
        aliases=_strings(data, "aliases", source),
        device=device,
        arch=arch,
        backends=backends,
        precision=_choice(data, "precision", PRECISIONS, source),
        onnx_opset=_integer(data, "onnx_opset", *OPSET_RANGE, source),
        threads=_integer(data, "threads", 1, 1024, source),
        tvm_target=dict(tvm["target"]),
        cross_compiler=cross,
        cpu_flags=_strings(data.get("cpu", {}), "flags", source),
        software=dict(software),
        tensorrt=dict(data["tensorrt"]) if "tensorrt" in data else None,
        source=source,
        raw=data,
        tune_trials=_integer(tvm, "tune_trials", 0, 100_000, source) if "tune_trials" in tvm else 0,
    )


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(source, f"not valid TOML ({exc})", "fix the syntax; " + _EXAMPLE_HINT) from None


@functools.lru_cache(maxsize=1)
def _shipped() -> dict[str, Target]:
    targets = {}
    for entry in importlib.resources.files(PACKAGE).iterdir():
        if entry.name.endswith(".toml"):
            targets[entry.name[: -len(".toml")]] = parse_target(_read_toml(entry.read_text("utf-8"), entry.name), entry.name)
    return targets


def list_targets() -> list[Target]:
    """Every shipped target, sorted by name."""
    return [target for _, target in sorted(_shipped().items())]


def target_toml(name: str) -> str:
    """The TOML text of a shipped target (by name or alias), to copy when adding a board."""
    target = load_target(name) if not _looks_like_path(name) else None
    if target is None:
        raise EdgeDistillError(f"--show takes a shipped target's name, not a path ({name})", "see edgedistill targets")
    for entry in importlib.resources.files(PACKAGE).iterdir():
        if entry.name == f"{target.name}.toml":
            return entry.read_text("utf-8")
    raise EdgeDistillError(f"the file of target {target.name} is missing from the installation", "reinstall edgedistill")


def _looks_like_path(text: str) -> bool:
    return text.endswith(".toml") or os.sep in text or (os.altsep is not None and os.altsep in text)


def load_target(name_or_path: str | os.PathLike[str]) -> Target:
    """A shipped target by name or alias (case-insensitive), or the user's own TOML file by path."""
    text = os.fspath(name_or_path)
    if _looks_like_path(text):
        path = Path(text).expanduser()
        if not path.is_file():
            raise EdgeDistillError(f"target file {path} not found", "pass a shipped target name (edgedistill targets) or an existing .toml file")
        return parse_target(_read_toml(path.read_text("utf-8"), str(path)), str(path))
    wanted = text.strip().lower()
    for target in _shipped().values():
        if wanted == target.name.lower() or wanted in (a.lower() for a in target.aliases):
            return target
    names = [t.name for t in _shipped().values()] + [a for t in _shipped().values() for a in t.aliases]
    raise unknown_name("target", text, names)


def host_can_run(target: Target) -> tuple[bool, str]:
    """Whether this machine can execute ``target``'s CPU code, and if not, why."""
    if target.arch != host_arch():
        return False, f"{target.name} is {target.arch}, this machine is {host_arch()}"
    flags = cpu_flags() or set()  # "flags" on x86, "Features" on ARM; unknown: assume the CPU has them
    missing = [flag for flag in target.cpu_flags if flags and flag not in flags]
    if missing:
        return False, f"this CPU lacks {', '.join(missing)} that {target.name} code uses"
    return True, ""
