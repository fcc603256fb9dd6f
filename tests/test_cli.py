"""The command group: help, version, and usage errors as one ``error:`` line."""

from __future__ import annotations

import pytest

from cli_helpers import assert_one_error, run_cli
from edgedistill.cli import main
from edgedistill.commands.common import friendly_errors
from edgedistill.errors import EdgeDistillError


def test_help_version_and_a_bare_call() -> None:
    for args in (["--help"], ["-h"], []):
        result = run_cli(args)
        assert result.exit_code == 0 and "edgedistill train" in result.stdout and "doctor" in result.stdout
    assert run_cli(["--version"]).stdout.startswith("edgedistill, version")
    assert "compiled bundle" not in run_cli(["--help"]).stdout  # export --target host gives ONNX only


@pytest.mark.parametrize(("args", "needles"), [
    (["trian"], ("No such command 'trian'", "edgedistill --help")),
    (["models", "--image-size", "x"], ("'x' is not a valid integer", "edgedistill models --help")),
    (["export"], ("Missing argument 'SOURCE'", "edgedistill export --help")),
    (["bench", "--no-such-flag"], ("No such option '--no-such-flag'", "edgedistill bench --help")),
])
def test_usage_errors_are_one_error_line_and_a_hint(args: list[str], needles: tuple[str, ...]) -> None:
    assert_one_error(run_cli(args), *needles)


def test_messages_and_hints_are_printed_literally(capsys: pytest.CaptureFixture[str]) -> None:
    @friendly_errors
    def fails() -> None:
        raise EdgeDistillError("cannot read runs/[/x]/a.pt", "pip install 'edgedistill[tvm]'")

    with pytest.raises(SystemExit) as info:
        fails()
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "error: cannot read runs/[/x]/a.pt" in err and "hint: pip install 'edgedistill[tvm]'" in err


def test_every_command_has_help() -> None:
    for name in main.commands:
        result = run_cli([name, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.stdout, name
