"""``edgedistill doctor``: does every piece of the toolchain really work on this machine?

Each check *uses* its piece — links a tiny shared library with the cross compiler, compiles and
runs a one-op model with TVM, reads the dataset's files — because "installed" is not "works": a
cross compiler without its C runtime is on PATH and cannot link. Each check says what it is
needed for, so ``--require tests`` can fail CI when a piece the test suite needs is missing, and
names the exact command that fixes it.

A check is one decorated function returning its detail, or raising :class:`Missing`; adding a
check touches this file only.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from edgedistill.errors import EdgeDistillError
from edgedistill.utils.names import unknown_name

# What a piece is needed for; `doctor --require NAME` fails when a piece needed for NAME is missing.
PURPOSES = {
    "core": "train, export to ONNX, bench on onnxruntime",
    "demo": "edgedistill demo as the README runs it (Fashion-MNIST, TVM on this CPU)",
    "arm": "export for Raspberry Pi / Jetson CPUs (aarch64 cross-compile)",
    "board": "the emulated arm64 board (TVM RPC under qemu)",
    "tuning": "TVM MetaSchedule tuning (--tune-trials) and the RPC tracker",
    "plots": "bench's accuracy-latency PNG",
    "tensorrt": "building TensorRT engines (on a Jetson or an NVIDIA GPU machine)",
    "tests": "the test suite (python3 -m pytest -m 'not gpu')",
}
SETUP = "./setup.sh (from the edgedistill source tree)"


class Missing(Exception):
    """A piece that does not work: ``why`` it fails and the command that ``fix``-es it."""

    def __init__(self, why: str, fix: str) -> None:
        super().__init__(why)
        self.why, self.fix = why, fix


@dataclass(frozen=True)
class Check:
    name: str
    needed_for: tuple[str, ...]
    run: Callable[[], str]


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str | None
    needed_for: list[str]
    seconds: float


CHECKS: dict[str, Check] = {}  # in the order they run: cheap imports first, compilers after


def check(name: str, *needed_for: str) -> Callable[[Callable[[], str]], Callable[[], str]]:
    unknown = [p for p in needed_for if p not in PURPOSES]
    if unknown:
        raise ValueError(f"unknown purpose {unknown[0]!r} of check {name!r}")

    def decorator(run: Callable[[], str]) -> Callable[[], str]:
        if name in CHECKS:
            raise ValueError(f"check {name!r} registered twice")
        CHECKS[name] = Check(name, needed_for, run)
        return run

    return decorator


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise Missing(f"{package} is not installed", f"pip install {package}") from None


def _import(module: str, package: str, fix: str) -> object:
    try:
        return importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken wheel raising anything at import
        raise Missing(f"import {module} fails: {exc}", fix) from None


def _run(command: list[str], fix: str, timeout_s: float = 30.0) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Missing(f"{command[0]} does not run: {exc}", fix) from None
    if done.returncode != 0:
        raise Missing(f"{' '.join(command)} exits {done.returncode}: {(done.stderr or done.stdout).strip()[:200]}", fix)
    return done.stdout


@check("python", "core", "tests")
def _python() -> str:
    if sys.version_info < (3, 10):
        raise Missing(f"Python {sys.version.split()[0]} is too old", "use Python 3.10 or newer")
    return f"{sys.version.split()[0]} ({sys.executable})"


@check("torch", "core", "tests")
def _torch() -> str:
    torch = _import("torch", "torch", "pip install torch==2.13.0 (CPU) or the CUDA build for your GPU")
    cuda = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else "no CUDA device"
    return f"{torch.__version__}, {cuda}"


@check("onnx export", "core", "tests")
def _onnx_export() -> str:
    for module in ("onnx", "onnxscript", "onnxslim"):
        _import(module, module, f"pip install {module}")
    return ", ".join(f"{name} {_version(name)}" for name in ("onnx", "onnxscript", "onnxslim"))


@check("onnxruntime", "core", "tests")
def _onnxruntime() -> str:
    """Runs a one-node model (y = x + x)."""
    import numpy as np

    onnx = _import("onnx", "onnx", "pip install onnx")
    ort = _import("onnxruntime", "onnxruntime", "pip install onnxruntime")
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.array([1.0, 2.0], np.float32)})
    if y.tolist() != [2.0, 4.0]:
        raise Missing(f"onnxruntime computed {y.tolist()} for 2·[1, 2]", "reinstall onnxruntime")
    return f"{ort.__version__}, ran a model"


@check("fashion-mnist", "demo", "tests")
def _fashion_mnist() -> str:
    from edgedistill.data.fashion_mnist import read_fashion_mnist

    try:
        source = read_fashion_mnist(None, download=False, image_size=None)
    except EdgeDistillError as exc:
        raise Missing(exc.message, "apt-get install dataset-fashion-mnist (or train with --data-dir DIR)") from None
    return f"{len(source.train)} train + {len(source.test)} test images"


@check("host C++ compiler", "demo", "tests")
def _host_compiler() -> str:
    """TVM links every library for this CPU with it."""
    from edgedistill.toolchains import cc

    return _links(cc.native_candidates())


@check("aarch64 cross compiler", "arm", "tests")
def _cross_compiler() -> str:
    return _links(["aarch64-linux-gnu-gcc"])


def _links(candidates: list[str]) -> str:
    from edgedistill.toolchains import cc

    try:
        compiler = cc.find_compiler(candidates)
        cc.check_links_shared_library(compiler)
    except EdgeDistillError as exc:
        raise Missing(exc.message, exc.hint or "") from None
    return f"{compiler} links a shared library"


@check("tvm", "demo", "tests")
def _tvm() -> str:
    from edgedistill.backends.tvm.onnx_import import INSTALL_HINT

    _import("tvm.relax", "apache-tvm", INSTALL_HINT)
    return f"apache-tvm {_version('apache-tvm')}, apache-tvm-ffi {_version('apache-tvm-ffi')}"


@check("tvm compiles for this CPU", "demo", "tests")
def _tvm_compiles() -> str:
    """Imports a one-node ONNX model, compiles it for this CPU, links it, loads it and runs it."""
    import numpy as np

    from edgedistill.export.targets import load_target
    from edgedistill.backends.tvm.compile import compile_onnx, run_local

    onnx = _import("onnx", "onnx", "pip install onnx")
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["logits"])], "probe",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 4])],
    )
    with tempfile.TemporaryDirectory(prefix="edgedistill-doctor-") as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        try:
            artifact = compile_onnx(path, load_target("host"), Path(tmp) / "probe.so", input_name="input", input_shape=(1, 4))
            out = run_local(artifact.path, np.array([[-1.0, 0.0, 1.0, 2.0]], np.float32))
        except EdgeDistillError as exc:
            raise Missing(exc.message, exc.hint or SETUP) from None
    if out.tolist() != [[0.0, 0.0, 1.0, 2.0]]:
        raise Missing(f"the compiled ReLU computed {out.tolist()}", "reinstall apache-tvm")
    return f"compiled, linked and ran a model for {artifact.target['mcpu']}"


@check("tvm tuning + rpc", "tuning", "tests")
def _tuning() -> str:
    for module, package in (("xgboost", "xgboost-cpu"), ("psutil", "psutil"), ("tornado", "tornado")):
        _import(module, package, "pip install 'edgedistill[tvm]'")
    return "xgboost, psutil, tornado import"


@check("qemu-aarch64-static", "board", "tests")
def _qemu() -> str:
    from edgedistill.bench.emulated_board import QEMU, find_tool

    try:
        qemu = find_tool(QEMU)
    except EdgeDistillError as exc:
        raise Missing(exc.message, exc.hint or "") from None
    return _run([qemu, "--version"], "apt-get install qemu-user-static").splitlines()[0]


@check("arm64 board root filesystem", "board", "tests")
def _board_rootfs() -> str:
    """Cached, or buildable now: debootstrap, root, and this machine's Debian archive reachable."""
    from edgedistill.bench import emulated_board

    rootfs = emulated_board.default_rootfs()
    if emulated_board.is_current(rootfs):
        return f"cached in {rootfs}"
    missing = [tool for tool in emulated_board.missing_tools() if tool != emulated_board.QEMU]  # qemu: its own check
    if missing:
        raise Missing(f"building the board's root filesystem needs {', '.join(missing)}", "apt-get install debootstrap dpkg tar")
    if os.geteuid() != 0:
        raise Missing(f"no cached root filesystem in {rootfs}, and building one needs root", "run the first emulated-board test as root")
    mirror, origin = emulated_board.configured_mirror()
    unreachable = emulated_board.mirror_reachable(mirror)
    if unreachable:
        raise Missing(f"not cached, and the Debian archive ({origin}) is unreachable: {unreachable}",
                      f"connect to the network once, or set ${emulated_board.MIRROR_ENV} to a reachable mirror")
    return f"not cached yet; built on first use (~1 min) from {mirror} ({origin})"


@check("matplotlib", "plots", "tests")
def _matplotlib() -> str:
    _import("matplotlib", "matplotlib", "pip install matplotlib")
    return _version("matplotlib")


@check("test data readers", "tests")
def _test_data() -> str:
    _import("sklearn.datasets", "scikit-learn", "pip install scikit-learn")
    _import("PIL.Image", "pillow", "pip install pillow")
    _import("pytest", "pytest", "pip install pytest")
    return f"scikit-learn {_version('scikit-learn')}, pillow {_version('pillow')}, pytest {_version('pytest')}"


@check("tensorrt", "tensorrt")
def _tensorrt() -> str:
    _import("tensorrt", "tensorrt", "comes with JetPack on a Jetson (NVIDIA ships no wheel for machines without a GPU)")
    return _version("tensorrt")


def run_checks(names: list[str] | None = None, progress: Callable[[str], None] | None = None) -> list[CheckResult]:
    """Run the checks (all, or ``names``), each isolated: one failure never stops the others."""
    results = []
    for name in names or list(CHECKS):
        if name not in CHECKS:
            raise unknown_name("check", name, CHECKS)
        item = CHECKS[name]
        if progress:
            progress(f"checking {name}")
        start = time.perf_counter()
        try:
            detail, ok, fix = item.run(), True, None
        except Missing as exc:
            detail, ok, fix = exc.why, False, exc.fix
        except Exception as exc:  # a check that breaks is a finding, not a crash of the doctor
            detail, ok, fix = f"check failed: {type(exc).__name__}: {exc}", False, SETUP
        results.append(CheckResult(name, ok, detail, fix, list(item.needed_for), round(time.perf_counter() - start, 2)))
    return results


def failing_for(results: list[CheckResult], purposes: list[str]) -> list[CheckResult]:
    """The failed checks that any of ``purposes`` needs."""
    return [r for r in results if not r.ok and set(r.needed_for) & set(purposes)]


def to_dict(results: list[CheckResult]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]
