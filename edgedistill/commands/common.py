"""Helpers shared by the click commands."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
from rich.markup import escape

from deploy.errors import DeployError
from edgedistill.errors import EdgeDistillError, Interrupted
from edgedistill.ui import err_console


def print_error(message: str, hint: str | None = None, exit_code: int = 2) -> NoReturn:
    """The one way a command fails: ``error: <what>`` on one line, ``hint: <how to fix>`` below, exit 2.

    Message and hint are printed literally (escaped): paths like ``runs/[a]`` and extras like
    ``edgedistill[tvm]`` must reach the user as written, never be eaten as rich markup.
    """
    text = f"[bold red]error:[/] {escape(message)}"
    if hint:
        text += f"\n[dim]hint:[/] {escape(hint)}"
    err_console.print(text, highlight=False, soft_wrap=True)
    sys.exit(exit_code)


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every expected failure into one ``error:`` line (plus a hint) and a non-zero exit."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (EdgeDistillError, DeployError) as exc:
            print_error(exc.message, exc.hint, exc.exit_code)
        except OSError as exc:  # unwritable output, full disk, a file removed under us
            where = f": {exc.filename}" if exc.filename else ""
            print_error(f"{exc.strerror or exc}{where}", "check the path and free space")
        except KeyboardInterrupt:  # work that can be continued raises Interrupted with a hint instead
            print_error("interrupted", None, Interrupted.exit_code)

    return wrapper


class FriendlyGroup(click.Group):
    """A click group whose usage errors (bad option value, unknown flag) read like every other
    failure: one ``error:`` line naming the option, a hint pointing at the command's ``--help``."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D401 - click's signature
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare group: show the help
            click.echo(exc.ctx.get_help() if exc.ctx else "")
            sys.exit(0)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "edgedistill"
            print_error(exc.format_message(), f"see '{command} --help'")
        except click.ClickException as exc:
            print_error(exc.format_message())
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            print_error("interrupted", None, Interrupted.exit_code)


class ListingOption(click.Option):
    """An option whose help ends with the names of a registry, read when the help is shown (not
    when this module is imported): a backend registered later, by a plugin or a test, appears too.
    ``listing`` returns the names; ``{names}`` in the help is replaced by them."""

    def __init__(self, *args: Any, listing: Callable[[], list[str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._template, self._listing = self.help or "", listing

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = self._template.format(names=" | ".join(self._listing()))
        return super().get_help_record(ctx)


class KindOptionsCommand(click.Command):
    """A command that takes every registered cheap kind's options as flags (``--groups``).

    The flags are read from the kinds table when the command parses or shows its help, so a kind
    registered later (a plugin, a test) brings its flags along. Their values reach the callback's
    ``**params`` unconverted (None when not given): the kind converts and checks them
    (:func:`edgedistill.cheap.kinds.spec_from_settings`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kind_flags: dict[str, click.Option] = {}

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        from edgedistill.cheap.kinds import kind_options

        params = super().get_params(ctx)
        for name, (option, kinds) in kind_options().items():
            if name not in self._kind_flags:
                self._kind_flags[name] = click.Option(
                    [option.flag], default=None, metavar=option.metavar,
                    help=f"{option.help.rstrip('.')} (--kind {' | '.join(kinds)}).  [default: {option.default}]")
        ours = [flag for name, flag in self._kind_flags.items() if name in kind_options()]
        help_last = params[-1:] if params and params[-1].name == "help" else []
        return params[: len(params) - len(help_last)] + ours + help_last


def kind_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The kind flags of a :class:`KindOptionsCommand` that were given (removed from ``params``)."""
    from edgedistill.cheap.kinds import kind_options

    return {name: params.pop(name) for name in kind_options() if params.get(name) is not None}


def kind_names() -> list[str]:
    from edgedistill.cheap import cheap_kinds

    return cheap_kinds()


def backend_names() -> list[str]:
    from edgedistill.backends import backend_names as names

    return names()


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (for scripts).")
