"""An emulated arm64 board: a Debian root filesystem run under ``qemu-aarch64-static``.

For tests and demos of the remote-board path without a board::

    python -m edgedistill.bench.emulated_board build
    python -m edgedistill.bench.rpc tracker --port 9190 &
    python -m edgedistill.bench.emulated_board serve --tracker 127.0.0.1:9190 --key rpi4-emulated

The root filesystem (Debian bookworm, python3, python3-numpy, and the aarch64
``apache-tvm`` runtime and ``onnxruntime`` wheels at the host's versions) is built once and cached
in ``~/.cache/edgedistill/arm64-rootfs`` (or ``$EDGEDISTILL_ARM64_ROOTFS``).
Only debootstrap's first stage runs; the remaining packages are unpacked with
``dpkg-deb`` — enough to run programs through ``qemu-aarch64-static -L ROOTFS``,
so neither binfmt_misc nor chroot is needed.

The board runs ``deploy/rpc_server.py`` under qemu and registers with a tracker.
Outputs computed there are real aarch64 results; its timings are not (every
figure from it is labelled ``emulated``).

onnxruntime runs there too (:func:`onnxruntime_command`: the bundle's own runner, ``python3 -m
deploy.run``), with one trick: its CPU detection reads ``/proc/cpuinfo``, which qemu-user passes
through from this x86 machine, and crashes on it; so the board's python sees an ARM one
(:data:`EMULATED_CPUINFO`, a Cortex-A76 with fp16 arithmetic), bind-mounted in a private mount
namespace (``unshare``: root, or unprivileged user namespaces).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import deploy
from edgedistill.bench import rpc
from edgedistill.errors import EdgeDistillError, ToolchainError
from edgedistill.utils.atomic import atomic_directory, write_json_atomic

QEMU = "qemu-aarch64-static"
DEBOOTSTRAP = "debootstrap"
TOOLS = (QEMU, DEBOOTSTRAP, "dpkg-deb", "tar")
SUITE = "bookworm"
# Only when this machine has no apt source of its own (not Debian/Ubuntu, or an empty sources list).
FALLBACK_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "EDGEDISTILL_DEBIAN_MIRROR"
APT_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))
PACKAGES = ("python3", "python3-numpy")
# The board's TVM must match the host's (RPC protocol, module format); typing_extensions
# is the one pure-Python module that tvm_ffi imports and Debian's is too old.
WHEELS = ("apache-tvm", "apache-tvm-ffi", "typing_extensions", "onnxruntime")
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
SITE_DIR = "opt/edgedistill/site-packages"
STAMP = "edgedistill-rootfs.json"
STAMP_FORMAT = "edgedistill-arm64-rootfs/1"
# Bump when the build steps change, so cached root filesystems are rebuilt.
BUILD_REVISION = 3
CPUINFO = "etc/edgedistill/cpuinfo"
"""Where the root filesystem keeps the ARM /proc/cpuinfo the board's onnxruntime reads."""
EMULATED_CPUINFO = "".join(
    f"processor\t: {core}\nBogoMIPS\t: 108.00\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n"
    for core in range(4)
)
"""A Raspberry Pi 5's (4x Cortex-A76, ARMv8.2-A with fp16 and dot product), as its kernel reports it;
qemu's default CPU model ("max") has every one of these features."""
# Dropped after the build: package caches, docs, and TVM's compiler (the board only
# serves with the runtime library, TVM_USE_RUNTIME_LIB=1) and its C++ headers.
NOT_NEEDED = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "debootstrap",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/info",
    f"{SITE_DIR}/tvm/lib/libtvm_compiler.so",
    f"{SITE_DIR}/tvm/3rdparty",
)
# update-alternatives links that python3-numpy needs (made by postinst scripts we do not run).
ALTERNATIVES = {
    "usr/lib/aarch64-linux-gnu/libblas.so.3": "blas/libblas.so.3",
    "usr/lib/aarch64-linux-gnu/liblapack.so.3": "lapack/liblapack.so.3",
}


def default_rootfs() -> Path:
    """Where the root filesystem is cached: ``$EDGEDISTILL_ARM64_ROOTFS`` or ``~/.cache``."""
    env = os.environ.get("EDGEDISTILL_ARM64_ROOTFS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgedistill" / "arm64-rootfs"


def _deb822_archives(text: str) -> list[str]:
    """The URIs of the deb822 stanzas (``*.sources``) that are a main archive, not a security one."""
    found = []
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith((" ", "#")):
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and not any(s.endswith("-security") for s in fields.get("suites", [])):
            found += fields.get("uris", [])
    return found


def _one_line_archives(text: str) -> list[str]:
    """The URIs of ``deb URI SUITE ...`` lines (sources.list), security suites left out."""
    found = []
    for line in text.splitlines():
        words = [w for w in line.split() if not w.startswith("[")] if line.strip().startswith("deb ") else []
        if len(words) >= 3 and not words[2].endswith("-security"):
            found.append(words[1])
    return found


def configured_mirror() -> tuple[str, str]:
    """The Debian archive to build the board from, and where that choice came from.

    ``$EDGEDISTILL_DEBIAN_MIRROR`` first, then this machine's own apt sources (a user behind a
    mirror or proxy has no other way out), then Debian's public mirror.
    """
    if os.environ.get(MIRROR_ENV):
        return os.environ[MIRROR_ENV], f"${MIRROR_ENV}"
    directory, one_line = APT_SOURCES
    candidates: list[tuple[Path, list[str]]] = []
    for path in sorted(directory.glob("*.sources")) if directory.is_dir() else []:
        candidates.append((path, _deb822_archives(path.read_text(encoding="utf-8", errors="replace"))))
    for path in [one_line, *sorted(directory.glob("*.list"))] if directory.is_dir() else [one_line]:
        if path.is_file():
            candidates.append((path, _one_line_archives(path.read_text(encoding="utf-8", errors="replace"))))
    for path, uris in candidates:
        for uri in uris:
            if "debian" in uri:  # an Ubuntu archive has no arm64 bookworm
                return uri.rstrip("/"), str(path)
    return FALLBACK_MIRROR, "default (this machine has no Debian apt source)"


def mirror_reachable(mirror: str, timeout_s: float = 8.0) -> str | None:
    """None when ``mirror`` serves the board's suite, else why not (for a skip or an error message)."""
    import urllib.error
    import urllib.request

    url = f"{mirror.rstrip('/')}/dists/{SUITE}/Release"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s):
            return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"{url}: {getattr(exc, 'reason', exc)}"


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def find_tool(name: str) -> str:
    """Absolute path of a system tool (``/usr/sbin`` included), or a clear error."""
    found = _which(name)
    if not found:
        package = {QEMU: "qemu-user-static", DEBOOTSTRAP: "debootstrap", "dpkg-deb": "dpkg"}.get(name, name)
        raise ToolchainError(f"'{name}' is not installed", f"apt-get install {package}")
    return found


def missing_tools() -> list[str]:
    """The tools an emulated board needs that this machine lacks."""
    return [tool for tool in TOOLS if not _which(tool)]


def recipe() -> dict[str, Any]:
    """What a root filesystem is built from; a cached one is reused only if this matches."""
    try:
        wheels = {name: importlib.metadata.version(name) for name in WHEELS}
    except importlib.metadata.PackageNotFoundError as err:
        raise ToolchainError(f"{err.name} is not installed on the host", "pip install 'edgedistill[tvm]'") from None
    return {
        "format": STAMP_FORMAT,
        "revision": BUILD_REVISION,
        "suite": SUITE,
        "arch": "arm64",
        "packages": list(PACKAGES),
        "wheels": wheels,
    }


def read_stamp(rootfs: Path) -> dict[str, Any] | None:
    try:
        return json.loads((rootfs / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_current(rootfs: Path) -> bool:
    stamp = read_stamp(rootfs)
    return stamp is not None and {k: stamp.get(k) for k in recipe()} == recipe()


def _run(command: Sequence[str], what: str, timeout: float, **kwargs: Any) -> str:
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"{what} took longer than {timeout:g} s", "check the network and retry") from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise ToolchainError(f"{what} failed (exit {done.returncode}): {tail}")
    return done.stdout


def _debootstrap(root: Path, mirror: str) -> None:
    if os.geteuid() != 0:
        raise ToolchainError(
            "building the arm64 root filesystem needs root (debootstrap)",
            "run the build as root once; the result is cached",
        )
    _run(
        [
            find_tool(DEBOOTSTRAP),
            "--arch=arm64",
            "--foreign",
            "--variant=minbase",
            "--include=" + ",".join(PACKAGES),
            SUITE,
            str(root),
            mirror,
        ],
        "debootstrap (first stage)",
        timeout=900,
    )


def _unpack_second_stage(root: Path) -> None:
    """Unpack the packages debootstrap's first stage only downloaded (no maintainer scripts)."""
    names = (root / "debootstrap" / "base").read_text().split()
    paths = dict(
        line.split(None, 1) for line in (root / "debootstrap" / "debpaths").read_text().splitlines() if line.strip()
    )
    for name in names:
        deb = root / paths[name].strip().lstrip("/")
        try:
            data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
            # --keep-directory-symlink: bookworm's /lib is a symlink to usr/lib (merged /usr).
            subprocess.run(["tar", "-x", "--keep-directory-symlink", "-C", str(root)], input=data, check=True)
        except subprocess.CalledProcessError as err:
            raise ToolchainError(
                f"unpacking {deb.name} failed (exit {err.returncode})", "rebuild with --force"
            ) from None
    for link, target in ALTERNATIVES.items():
        path = root / link
        if not path.exists():
            path.symlink_to(target)


def _python_version(root: Path) -> str:
    versions = sorted(
        p.name[len("python") :]
        for p in (root / "usr/bin").glob("python3.*")
        if p.name[len("python") :].replace(".", "").isdigit()
    )
    if not versions:
        raise ToolchainError("the arm64 root filesystem has no python3", "rebuild it with --force")
    return versions[-1]


def _install_wheels(root: Path, wheels: dict[str, str]) -> None:
    python = _python_version(root)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-compile",
            "--only-binary=:all:",
            "--platform",
            WHEEL_PLATFORM,
            "--python-version",
            python,
            "--target",
            str(root / SITE_DIR),
            *[f"{name}=={version}" for name, version in wheels.items()],
        ],
        "pip install of the aarch64 TVM and onnxruntime wheels",
        timeout=900,
    )


def _write_cpuinfo(root: Path) -> None:
    (root / CPUINFO).parent.mkdir(parents=True, exist_ok=True)
    (root / CPUINFO).write_text(EMULATED_CPUINFO, encoding="ascii")


def _trim(root: Path) -> None:
    for rel in NOT_NEEDED:
        path = root / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def board_command(rootfs: Path) -> list[str]:
    """The command prefix that runs the board's python3."""
    return [find_tool(QEMU), "-L", str(rootfs), str(rootfs / "usr/bin/python3")]


def onnxruntime_command(rootfs: Path) -> list[str]:
    """The command prefix that runs the board's python3 with an ARM /proc/cpuinfo, so that its
    onnxruntime starts (see the module's docstring). Raises ToolchainError when this machine
    cannot make a private mount namespace."""
    unshare = _which("unshare")
    if unshare is None:
        raise ToolchainError("onnxruntime on the emulated board needs unshare", "apt-get install util-linux")
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    # unshare makes every mount private first, which fails inside a chroot ("/" is no mount point);
    # there /proc alone is made private in the new namespace, so the bind never reaches this one's.
    for namespace, first in (([unshare, "--mount", *user], ""),
                             ([unshare, "--mount", "--propagation", "unchanged", *user], "mount --make-rprivate /proc && ")):
        bind = [*namespace, "sh", "-c", first + 'mount --bind "$0" /proc/cpuinfo && exec "$@"', str(rootfs / CPUINFO)]
        done = subprocess.run([*bind, "true"], capture_output=True, text=True, timeout=30)
        if done.returncode == 0:
            break
    else:
        raise ToolchainError("onnxruntime on the emulated board needs a private mount namespace to show it an ARM "
                             f"/proc/cpuinfo: {done.stderr.strip()[:200]}",
                             "run as root, or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)")
    return [*bind, *board_command(rootfs)]


def board_env(rootfs: Path, extra_path: Sequence[Path] = ()) -> dict[str, str]:
    """Environment for the board's python: its TVM wheels, the runtime library, the emulated label."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR", "TVM_NUM_THREADS")}
    path = os.pathsep.join([*map(str, extra_path), str(rootfs / SITE_DIR)])
    return {
        **keep,
        "PYTHONPATH": path,
        "TVM_USE_RUNTIME_LIB": "1",
        "EDGEDISTILL_EMULATED": "1",
        "PYTHONNOUSERSITE": "1",
    }


def _verify(root: Path) -> str:
    """Import numpy, the TVM runtime and onnxruntime on the emulated board (this also caches their bytecode)."""
    code = "import numpy, tvm, tvm.rpc; print(numpy.__version__, tvm.__version__)"
    versions = _run([*board_command(root), "-c", code], "importing numpy and TVM on the emulated board", timeout=600,
                    env=board_env(root)).strip()
    try:
        command = onnxruntime_command(root)
    except ToolchainError as exc:  # the TVM board works without it
        return f"{versions}; onnxruntime not checked: {exc.message}"
    code = "import onnxruntime; print(onnxruntime.__version__)"
    try:
        return versions + " " + _run([*command, "-c", code], "importing onnxruntime on the emulated board", timeout=600,
                                     env=board_env(root)).strip()
    except ToolchainError as exc:  # recorded in the stamp; the TVM board does not need it
        return f"{versions}; onnxruntime does not start: {exc.message}"


@contextlib.contextmanager
def _build_lock(rootfs: Path) -> Iterator[None]:
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    with open(rootfs.with_name(rootfs.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_rootfs(rootfs: Path | None = None, *, force: bool = False, mirror: str | None = None) -> dict[str, Any]:
    """Build the root filesystem unless a current one is cached; return its stamp.

    ``mirror`` defaults to :func:`configured_mirror` (this machine's apt source).

    The build happens in a temporary sibling directory renamed into place at
    the end, so an interrupted build never leaves a half root filesystem.
    """
    rootfs = rootfs or default_rootfs()
    for tool in TOOLS:
        find_tool(tool)
    wanted = recipe()
    with _build_lock(rootfs):
        if not force and is_current(rootfs):
            return read_stamp(rootfs) or {}
        # A build killed outright (SIGKILL, power) leaves its temporary sibling behind.
        for stale in rootfs.parent.glob(f".{rootfs.name}.*"):
            shutil.rmtree(stale, ignore_errors=True)
        start = time.monotonic()
        mirror = mirror or configured_mirror()[0]
        with atomic_directory(rootfs, overwrite=True) as tmp:
            _debootstrap(tmp, mirror)
            _unpack_second_stage(tmp)
            _install_wheels(tmp, wanted["wheels"])
            _write_cpuinfo(tmp)
            _trim(tmp)
            versions = _verify(tmp)
            stamp = {
                **wanted,
                "mirror": mirror,
                "python": _python_version(tmp),
                "verified": versions,
                "built": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "build_seconds": round(time.monotonic() - start, 1),
                "size_bytes": sum(p.lstat().st_size for p in tmp.rglob("*")),
            }
            write_json_atomic(tmp / STAMP, stamp)
    return stamp


def ensure_rootfs(rootfs: Path | None = None) -> Path:
    """The cached root filesystem, built first if missing or out of date."""
    rootfs = rootfs or default_rootfs()
    if not is_current(rootfs):
        build_rootfs(rootfs)
    return rootfs


class EmulatedBoard:
    """A running emulated board: its RPC server process, registered with a tracker."""

    emulated = True

    def __init__(self, server: rpc.ServerProcess, workdir: Path) -> None:
        self.server, self._workdir = server, workdir
        self.key, self.address = server.key, server.address

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> EmulatedBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_board(
    tracker_host: str,
    tracker_port: int,
    key: str = "rpi4-emulated",
    *,
    rootfs: Path | None = None,
    lifetime_s: float = 3600.0,
    start_timeout_s: float = 180.0,
) -> EmulatedBoard:
    """Start an emulated board's RPC server registered with the tracker (127.0.0.1 only).

    The ``deploy`` package is copied into a fresh directory and run from there,
    as it would be from a bundle on a real board. Returns once registered.
    """
    rpc.tracker_summary((tracker_host, tracker_port))  # before a possible build: fail fast
    rootfs = ensure_rootfs(rootfs)
    workdir = Path(tempfile.mkdtemp(prefix="edgedistill-board-"))
    shutil.copytree(Path(deploy.__file__).parent, workdir / "deploy", ignore=shutil.ignore_patterns("__pycache__"))
    try:
        server = rpc.start_server(
            (tracker_host, tracker_port),
            key,
            python=board_command(rootfs),
            env=board_env(rootfs),
            cwd=workdir,
            lifetime_s=lifetime_s,
            start_timeout_s=start_timeout_s,
        )
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return EmulatedBoard(server, workdir)


def start_tracker(host: str = "127.0.0.1", port: int = 0, lifetime_s: float = 3600.0) -> rpc.TrackerProcess:
    """A local tracker for emulated boards (see :func:`edgedistill.bench.rpc.start_tracker`)."""
    return rpc.start_tracker(host, port, lifetime_s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgedistill.bench.emulated_board", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--rootfs", type=Path, help="root filesystem directory (default: $EDGEDISTILL_ARM64_ROOTFS or ~/.cache)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the arm64 root filesystem once (cached)")
    build.add_argument("--force", action="store_true", help="rebuild even if a current one is cached")
    build.add_argument("--mirror", help=f"Debian archive URL (default: ${MIRROR_ENV}, else this machine's apt source, "
                                        f"else {FALLBACK_MIRROR})")
    serve = sub.add_parser("serve", help="run an emulated board registered with a tracker")
    serve.add_argument("--tracker", required=True, help="tracker HOST:PORT (a local one: 127.0.0.1)")
    serve.add_argument("--key", default="rpi4-emulated", help="device key (default %(default)s)")
    serve.add_argument("--lifetime", type=float, default=3600.0, help="stop after this many seconds")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            stamp = build_rootfs(args.rootfs, force=args.force, mirror=args.mirror)
            print(
                f"arm64 root filesystem ready: {args.rootfs or default_rootfs()} "
                f"(python {stamp['python']}, numpy/tvm {stamp['verified']}, {stamp['size_bytes'] / 2**20:.0f} MiB, "
                f"built in {stamp['build_seconds']} s)"
            )
            return 0
        host, port = rpc.parse_tracker(args.tracker)
        with start_board(host, port, args.key, rootfs=args.rootfs, lifetime_s=args.lifetime) as board:
            print(
                f"emulated board (timings meaningless, outputs real) serving key '{board.key}' on "
                f"{board.address[0]}:{board.address[1]} via tracker {host}:{port}; Ctrl+C stops it",
                flush=True,
            )
            with contextlib.suppress(KeyboardInterrupt):
                board.server.proc.wait()
        return 0
    except EdgeDistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
