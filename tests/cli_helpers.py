"""Running the CLI in-process and checking the README's bad-input promise."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from click.testing import CliRunner, Result

from edgedistill.cli import main


def run_cli(args: Sequence[str], cwd: Path | None = None, input: str | None = None) -> Result:
    """``edgedistill ARGS`` in-process (in ``cwd`` when given), stdout and stderr kept apart."""
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(main, list(args), input=input, prog_name="edgedistill")
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return runner.invoke(main, list(args), input=input, prog_name="edgedistill")
    finally:
        os.chdir(old)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_one_error(result: Result, *needles: str) -> str:
    """Exit status 2, no traceback, exactly one ``error:`` line (a ``hint:`` line may follow), and
    every needle in the message. Returns the error text."""
    stderr = result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}\n{stderr}")
    assert "Traceback" not in stderr + result.stdout, stderr
    assert result.exit_code == 2, f"exit {result.exit_code}\n{stderr}"
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    for needle in needles:
        assert needle in stderr, f"{needle!r} not in:\n{stderr}"
    return stderr
