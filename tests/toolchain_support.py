"""Tests that need a system toolchain: skipped on a developer's machine that lacks it, failed in CI.

CI (``CI=true``) installs every toolchain through setup.sh, so a missing one there is a broken
install step, never a reason to skip: that is how a missing ``libc6-dev-arm64-cross`` once hid
behind a green run. Each check *uses* the tool (links a library, reaches the mirror), as
``edgedistill doctor`` does, instead of only looking for a file on PATH.
"""

from __future__ import annotations

import functools
import os

import pytest

from edgedistill.errors import ToolchainError

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CROSS_GCC = "aarch64-linux-gnu-gcc"


def need(problem: str | None, fix: str) -> None:
    """Skip (locally) or fail (in CI) when ``problem`` is set."""
    if not problem:
        return
    if IN_CI:
        pytest.fail(f"CI must provide this: {problem} ({fix}); setup.sh is meant to install it", pytrace=False)
    pytest.skip(f"{problem} ({fix})")


@functools.lru_cache(maxsize=None)
def _link_problem(compiler: str) -> tuple[str, str] | None:
    from edgedistill.toolchains.cc import check_links_shared_library

    try:
        check_links_shared_library(compiler)
    except ToolchainError as exc:
        return exc.message, exc.hint or ""
    return None


def need_cross_compiler() -> None:
    """The aarch64 cross compiler, able to link a shared library."""
    problem = _link_problem(CROSS_GCC)
    if problem:
        need(*problem)


@functools.lru_cache(maxsize=None)
def _board_problem() -> tuple[str, str] | None:
    from edgedistill.bench import emulated_board

    missing = emulated_board.missing_tools()
    if missing:
        return f"the emulated board needs {', '.join(missing)}", "apt-get install qemu-user-static debootstrap"
    rootfs = emulated_board.default_rootfs()
    if emulated_board.is_current(rootfs):
        return None
    if os.geteuid() != 0:
        return f"no cached arm64 root filesystem in {rootfs}, and building one needs root", "run the tests as root once"
    mirror, origin = emulated_board.configured_mirror()
    unreachable = emulated_board.mirror_reachable(mirror)
    if unreachable:
        return (f"building the arm64 root filesystem needs the network (no cached one in {rootfs}); "
                f"the Debian archive from {origin} is unreachable: {unreachable}",
                f"run once with network, or set ${emulated_board.MIRROR_ENV} to a reachable mirror")
    return None


def need_emulated_board() -> None:
    """qemu, debootstrap and a root filesystem that is cached or can be built (network, root)."""
    need_cross_compiler()
    problem = _board_problem()
    if problem:
        need(*problem)
