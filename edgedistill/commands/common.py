"""Helpers shared by the click commands."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from deploy.errors import DeployError
from edgedistill.errors import EdgeDistillError
from edgedistill.ui import err_console


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every expected failure into one ``error:`` line (plus a hint) and a non-zero exit."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (EdgeDistillError, DeployError) as exc:
            hint = f"\n[dim]hint:[/] {exc.hint}" if exc.hint else ""
            err_console.print(f"[bold red]error:[/] {exc.message}{hint}", highlight=False)
            sys.exit(exc.exit_code)
        except OSError as exc:  # unwritable output, full disk, a file removed under us
            where = f": {exc.filename}" if exc.filename else ""
            err_console.print(f"[bold red]error:[/] {exc.strerror or exc}{where}\n[dim]hint:[/] check the path and free space",
                              highlight=False)
            sys.exit(2)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            sys.exit(130)

    return wrapper


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (for scripts).")
