"""Console output: progress bars while work runs, tables when it is done.

Everything user-facing goes to stderr except the final table / JSON, so
``--json`` output on stdout stays machine-readable.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

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
    also printed once, unless ``echo`` is off (e.g. for --json). Messages are shown literally:
    they carry paths, which may hold brackets that rich would read as markup."""
    with err_console.status(title) as status:
        def report(message: str) -> None:
            status.update(Text(message))
            if echo and not err_console.is_terminal:
                err_console.print(Text(message), highlight=False)

        yield report


# A cell that starts with a number (optionally signed) and ends in a short unit or marker:
# "0.123", "17.73×", "83.33%", "12.34 MiB", "+1.20 pt", "0.86!", "1.10 (2.02×)". Such cells are
# never wrapped, folded or cut; every other cell is text, which may wrap at spaces or fold.
_NUMBER = re.compile(r"^[+\-−±~≈]?\d[\d,]*(\.\d+)?([eE][+\-]?\d+)?(?P<rest>.*)$")
_TEXT_SOFT_MIN = 24  # a text column keeps its longest word up to this many characters while others can give way
_TEXT_HARD_MIN = 10  # ... and up to this many when nothing else can
_HEADER_MIN = 6  # a number column's header folds no narrower than this (or its numbers)
_STAGES = 4


def is_number(text: str) -> bool:
    """Whether a cell reads as a figure (kept whole) rather than text (may wrap)."""
    match = _NUMBER.match(text.strip())
    return bool(match) and len(match["rest"]) <= 8 and "/" not in match["rest"]


@dataclass
class _Column:
    header: Text
    cells: list[Text]
    key: bool
    text: bool = False
    natural: int = 1
    floors: list[int] = field(default_factory=list)
    """The narrowest width allowed at each shrinking stage: 1. text to its longest word (at most
    _TEXT_SOFT_MIN), 2. number headers to their longest word, 3. number headers folded to
    _HEADER_MIN, 4. (only when splitting the table cannot help) text folded to _TEXT_HARD_MIN,
    except in key columns. Numbers never shrink."""


def _longest_word(text: Text) -> int:
    return max((cell_len(word) for word in text.plain.split()), default=0)


def _column(header: str, cells: list[Text], key: bool) -> _Column:
    head = Text.from_markup(header, overflow="fold")
    head.no_wrap = False
    column = _Column(head, cells, key)
    number_min = max((cell.cell_len for cell in cells if is_number(cell.plain)), default=0)
    texts = [cell for cell in cells if not is_number(cell.plain)]
    head_word = _longest_word(head)
    column.natural = max([head.cell_len, *(cell.cell_len for cell in cells), 1])
    column.text = bool(texts)
    if texts:  # a text column: its words wrap, long ones fold; key columns (what names a row) give way last
        word = max([head_word, *(_longest_word(t) for t in texts)])
        soft = max(number_min, min(word, _TEXT_SOFT_MIN), 1)
        hard = max(number_min, min(word, _TEXT_HARD_MIN), 1)
        column.floors = [soft, soft, soft, soft if key else hard]
    else:  # numbers: only the header gives way, first down to its longest word, then folded
        words = max(number_min, head_word, 1)
        folded = max(number_min, min(head_word, _HEADER_MIN), 1)
        column.floors = [column.natural, words, folded, folded]
    return column


@dataclass(frozen=True)
class _Style:
    box: Any
    show_edge: bool
    pad_edge: bool

    def extra(self, columns: int) -> int:
        """Characters a table of this style adds to its cells' content: rules and padding."""
        rules = (columns - 1) + (2 if self.show_edge else 0)
        return rules + 2 * columns - (0 if self.pad_edge else 2)


_FRAMED = _Style(box.HEAVY_HEAD, True, True)
_COMPACT = _Style(box.SIMPLE_HEAD, False, False)  # when the framed table does not fit: 3 characters less


def _fit(columns: list[_Column], room: int, stages: int) -> list[int] | None:
    """Widths for ``columns`` within ``room`` characters of content, shrinking stage by stage
    (the widest column above its floor first), or None when even stage ``stages`` is too wide."""
    widths = [c.natural for c in columns]
    for stage in range(stages):
        floors = [c.floors[stage] for c in columns]
        while sum(widths) > room:
            shrinkable = [i for i, w in enumerate(widths) if w > floors[i]]
            if not shrinkable:
                break
            widths[max(shrinkable, key=lambda i: (widths[i] - floors[i], widths[i], -i))] -= 1
        if sum(widths) <= room:
            return widths
    return None


def _layout(columns: list[_Column], width: int, fold_text: bool = False,
            styles: tuple[_Style, ...] = (_FRAMED, _COMPACT)) -> tuple[_Style, list[int]] | None:
    """The style and column widths that fit ``width``, preferring the framed look and whole headers;
    words are folded only with ``fold_text``."""
    tries = [(style, 2) for style in styles] + [(styles[-1], _STAGES if fold_text else _STAGES - 1)]
    for style, stages in tries:
        widths = _fit(columns, width - style.extra(len(columns)), stages)
        if widths is not None:
            return style, widths
    return None


class FitTable:
    """A table that fits its console without cutting a number or a name.

    Number cells never wrap, fold or get an ellipsis; text cells wrap at spaces and fold
    words longer than their column; headers wrap. When the columns do not fit, text wraps at
    spaces first, then a lighter frame saves three characters, then headers fold; when even
    that is too wide the table is split into parts that each repeat the ``keys`` first columns
    (what names a row). Words are folded only where a single column beside the keys cannot fit.
    """

    def __init__(self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                 caption: str | None = None, keys: int = 1) -> None:
        self.title, self.caption = title, caption
        self.headers = list(columns)
        self.rows = [[Text.from_markup("—" if cell is None else str(cell)) for cell in row] for row in rows]
        self.keys = max(1, min(keys, len(self.headers)))

    def _columns(self) -> list[_Column]:
        cells: list[list[Text]] = [[row[i] for row in self.rows] for i in range(len(self.headers))]
        return [_column(h, c, i < self.keys) for i, (h, c) in enumerate(zip(self.headers, cells))]

    @staticmethod
    def _cell(cell: Text) -> Text:
        cell = cell.copy()
        number = is_number(cell.plain)
        cell.no_wrap, cell.overflow = number, "fold"  # the widths leave room for every number: never cut
        return cell

    def _table(self, columns: list[_Column], layout: tuple[_Style, list[int]] | None, title: str | None,
               caption: str | None) -> Table:
        style = layout[0] if layout else _COMPACT
        result = Table(title=title, caption=caption, box=style.box, show_edge=style.show_edge, pad_edge=style.pad_edge)
        for i, column in enumerate(columns):
            result.add_column(column.header, justify="left" if column.key or column.text else "right", overflow="fold",
                              width=layout[1][i] if layout else None, min_width=None if layout else column.floors[-1])
        for r in range(len(self.rows)):
            result.add_row(*(self._cell(column.cells[r]) for column in columns))
        return result

    def parts(self, width: int) -> list[Table]:
        """The rich table(s) this table renders as at ``width`` columns."""
        columns = self._columns()
        layout = _layout(columns, width)
        if layout is None and len(columns) <= self.keys + 1:
            layout = _layout(columns, width, fold_text=True)
        if layout is not None or len(columns) <= self.keys + 1:
            return [self._table(columns, layout, self.title, self.caption)]
        keys, rest = columns[: self.keys], columns[self.keys :]
        groups: list[list[_Column]] = [[]]
        for column in rest:  # greedy: as many columns per part as fit
            if groups[-1] and _layout(keys + groups[-1] + [column], width) is None:
                groups.append([])
            groups[-1].append(column)
        # one look for every part: framed only if each part fits framed
        framed = all(_layout(keys + group, width, styles=(_FRAMED,)) for group in groups)
        styles = (_FRAMED,) if framed else (_COMPACT,)
        tables = []
        for n, group in enumerate(groups):
            title = self.title if n == 0 else (f"{self.title} (continued)" if self.title else None)
            caption = self.caption if n == len(groups) - 1 else None
            layout = _layout(keys + group, width, styles=styles) or _layout(keys + group, width, fold_text=True, styles=styles)
            tables.append(self._table(keys + group, layout, title, caption))
        return tables

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.parts(options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        columns = self._columns()
        return Measurement(sum(c.floors[-1] for c in columns) + _COMPACT.extra(len(columns)),
                           sum(c.natural for c in columns) + _FRAMED.extra(len(columns)))


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str | None = None,
          keys: int = 1) -> FitTable:
    """A table for the console: numbers are never cut, names and text wrap instead of being elided.

    The ``keys`` first columns name a row; they are repeated when the table has to be split to fit.
    """
    return FitTable(title, columns, rows, caption, keys)


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
