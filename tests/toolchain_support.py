"""Tests that need a system toolchain: skipped on a developer's machine that lacks it, failed in CI.

CI (``CI=true``) installs every toolchain through setup.sh, so a missing one there is a broken
install step, never a reason to skip: that is how a missing ``libc6-dev-arm64-cross`` once hid
behind a green run. The checks are ``edgedistill doctor``'s own: they *use* the tool (link a
library, reach the mirror) instead of only looking for a file on PATH.
"""

from __future__ import annotations

import functools
import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(problem: str | None, fix: str) -> None:
    """Skip (locally) or fail (in CI) when ``problem`` is set."""
    if not problem:
        return
    if IN_CI:
        pytest.fail(f"CI must provide this: {problem} ({fix}); setup.sh is meant to install it", pytrace=False)
    pytest.skip(f"{problem} ({fix})")


@functools.lru_cache(maxsize=None)
def _first_problem(*checks: str) -> tuple[str, str] | None:
    """The first of doctor's ``checks`` that fails here: (what, the command that fixes it)."""
    from edgedistill.doctor import run_checks

    for result in run_checks(list(checks)):
        if not result.ok:
            return f"{result.name}: {result.detail}", result.fix or ""
    return None


def need_cross_compiler() -> None:
    """The aarch64 cross compiler, able to link a shared library."""
    problem = _first_problem("aarch64 cross compiler")
    if problem:
        need(*problem)


def need_emulated_board() -> None:
    """The cross compiler, qemu, and a root filesystem that is cached or can be built (tools, root, network)."""
    problem = _first_problem("aarch64 cross compiler", "qemu-aarch64-static", "arm64 board root filesystem")
    if problem:
        need(*problem)
