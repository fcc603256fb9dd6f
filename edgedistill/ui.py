"""Console output: progress bars while work runs, tables when it is done.

Everything user-facing goes to stderr except the final table / JSON, so
``--json`` output on stdout stays machine-readable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr)
    if not console.is_terminal:  # piped or logged: do not squeeze tables into 80 columns
        console = Console(stderr=stderr, width=160)
    return console


err_console = _console(stderr=True)
out_console = _console(stderr=False)


def progress_bar(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=not err_console.is_terminal,  # logs get one line per finished unit instead
    )


@contextlib.contextmanager
def status_reporter(title: str, echo: bool = True) -> Iterator[Callable[[str], None]]:
    """A spinner showing the latest progress message; in logs (not a terminal) each message is
    also printed once, unless ``echo`` is off (e.g. for --json)."""
    with err_console.status(title) as status:
        def report(message: str) -> None:
            status.update(message)
            if echo and not err_console.is_terminal:
                err_console.print(message, highlight=False)

        yield report


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str | None = None) -> Table:
    result = Table(title=title, caption=caption)
    for i, column in enumerate(columns):
        result.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        result.add_row(*("—" if cell is None else str(cell) for cell in row))
    return result


def pct(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.2f}%"


def si(value: float | None, unit: str = "") -> str | None:
    if value is None:
        return None
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}".strip()


def mib(value: float | None) -> str | None:
    return None if value is None else f"{value / 2**20:.2f} MiB"
