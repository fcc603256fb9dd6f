"""C compilers that link TVM's libraries: find them, prove they can link, and explain failures.

TVM writes every CPU library as object files and links them into a ``.so`` with the system's
C++ compiler (the host) or the target's cross compiler (``aarch64-linux-gnu-gcc``). Installing a
cross compiler is not enough: it links a shared library only with the target's C runtime
(``crti.o``, ``libc.so``) beside it, which Debian ships separately (``libc6-dev-arm64-cross``,
only a *Recommends* of the compiler). So a check that *links* something is the only honest one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NoReturn

from edgedistill.errors import ToolchainError

NATIVE_COMPILERS = ("g++", "gcc", "cc", "clang++", "clang")  # the order tvm.support.cc.get_cc uses
# GNU triple -> Debian architecture, for the cross packages' names.
DEBIAN_ARCH = {"aarch64-linux-gnu": "arm64", "arm-linux-gnueabihf": "armhf", "x86_64-linux-gnu": "amd64"}
# Lines of a compiler's output that say what went wrong (the rest is noise such as "collect2: ...").
_DIAGNOSTIC_MARKS = ("error", "cannot find", "undefined reference", "no such file", "not found", "fatal", "ld:")
_MAX_DIAGNOSTIC_LINES = 6


def triple_of(compiler: str) -> str | None:
    """``aarch64-linux-gnu-gcc`` -> ``aarch64-linux-gnu``; a native compiler -> None."""
    name = os.path.basename(compiler)
    for suffix in ("-gcc", "-g++", "-cc", "-clang"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def packages_for(compiler: str) -> list[str]:
    """The Debian packages that make ``compiler`` able to link a shared library."""
    triple = triple_of(compiler)
    if triple is None:
        return ["g++"]
    packages = [f"gcc-{triple}"]
    if triple in DEBIAN_ARCH:
        packages.append(f"libc6-dev-{DEBIAN_ARCH[triple]}-cross")
    return packages


def install_command(packages: list[str]) -> str:
    return "apt-get install " + " ".join(packages)


def diagnostic(output: str) -> str:
    """The compiler's own words about the failure: its error lines, without command lines and noise.

    TVM wraps a failed link as "Compilation error:\\n<output>\\nCommand line: <cmd>"; the lines
    that matter are in the middle.
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("Compilation error", "Command line:"))]
    marked = [line for line in lines if any(mark in line.lower() for mark in _DIAGNOSTIC_MARKS)]
    chosen = (marked or lines)[:_MAX_DIAGNOSTIC_LINES]
    return "; ".join(chosen) if chosen else "no output"


def failure_hint(compiler: str, output: str) -> str:
    """What to install or change, judged from what the compiler said."""
    text = output.lower()
    if "crti.o" in text or "cannot find -lc" in text or "crt1.o" in text:
        runtime = packages_for(compiler)[1:] or ["libc6-dev"]
        return f"the C runtime for {triple_of(compiler) or 'this machine'} is missing: {install_command(runtime)}"
    return f"check that {os.path.basename(compiler)} can link a shared library ('edgedistill doctor' tries it)"


def find_compiler(candidates: list[str]) -> str:
    """The first of ``candidates`` on PATH, or a ToolchainError naming the package to install."""
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    _missing(candidates[0])


def _missing(compiler: str) -> NoReturn:
    raise ToolchainError(f"C compiler '{compiler}' not found", install_command(packages_for(compiler)))


def native_candidates() -> list[str]:
    """``$CC`` if set, else the compilers TVM would try, in its order."""
    return [os.environ["CC"]] if os.environ.get("CC") else list(NATIVE_COMPILERS)


def check_links_shared_library(compiler: str, timeout_s: float = 60.0) -> None:
    """Compile and link a one-function shared library with ``compiler``; ToolchainError if it cannot."""
    with tempfile.TemporaryDirectory(prefix="edgedistill-cc-") as tmp:
        source = Path(tmp) / "probe.c"
        source.write_text("int edgedistill_probe(int x) { return x + 1; }\n", encoding="utf-8")
        command = [compiler, "-shared", "-fPIC", "-o", str(Path(tmp) / "probe.so"), str(source)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except FileNotFoundError:
            _missing(compiler)
        except subprocess.TimeoutExpired:
            raise ToolchainError(f"{compiler} took over {timeout_s:g} s to link a one-line library", "check the compiler") from None
        if done.returncode != 0:
            output = done.stdout + done.stderr
            raise ToolchainError(f"{os.path.basename(compiler)} cannot link a shared library: {diagnostic(output)}",
                                 failure_hint(compiler, output))


ELF_MACHINES = {62: "x86_64", 183: "aarch64", 40: "arm"}


def elf_machine(path: Path) -> str:
    """The CPU architecture an ELF shared library was built for (from its header)."""
    header = Path(path).read_bytes()[:20]
    if header[:4] != b"\x7fELF":
        raise ToolchainError(f"{Path(path).name} is not an ELF library", "re-export the bundle")
    code = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    return ELF_MACHINES.get(code, f"e_machine {code}")
