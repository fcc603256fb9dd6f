"""Name lookup with "did you mean" suggestions, and a tiny generic registry."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from edgedistill.errors import UnknownNameError

T = TypeVar("T")


def edit_distance(a: str, b: str) -> int:
    """Damerau-Levenshtein distance (insert, delete, substitute, swap neighbours)."""
    rows = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, rows[-2][j - 2] + 1)
            row.append(cost)
        rows.append(row)
    return rows[-1][-1]


def suggest(name: str, choices: Iterable[str]) -> str | None:
    """Return the closest valid name to ``name``, or ``None`` if nothing is close."""
    choices = list(choices)
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), by_lower, n=5, cutoff=0.5)
    if not close:
        return None
    return by_lower[min(close, key=lambda c: edit_distance(name.lower(), c))]


def natural_key(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UnknownNameError:
    """Build the error for an unknown ``kind`` called ``name`` with a suggestion."""
    choices = sorted(choices, key=natural_key)
    best = suggest(name, choices)
    hint = f"did you mean '{best}'? " if best else ""
    hint += "valid: " + ", ".join(choices)
    return UnknownNameError(f"unknown {kind} '{name}'", hint)


class Registry(Generic[T]):
    """Maps names to factories (timm-style ``@register`` decorator); refuses a name twice and
    answers an unknown one with "did you mean". ``ordered`` keeps registration order (a default
    first) instead of natural order. Item assignment and deletion let a test register an entry
    for its own duration (``monkeypatch.setitem(REGISTRY, name, item)``)."""

    def __init__(self, kind: str, ordered: bool = False) -> None:
        self.kind = kind
        self.ordered = ordered
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = item
            return item

        return decorator

    def get(self, name: str, *default: T) -> T:
        """The item ``name``; an unknown name is an error with a suggestion, unless a default is given."""
        try:
            return self._items[name]
        except KeyError:
            if default:
                return default[0]
            raise unknown_name(self.kind, name, self._items) from None

    def names(self) -> list[str]:
        """Registered names in registration order (``ordered``) or natural order (resnet8 before resnet20)."""
        return list(self._items) if self.ordered else sorted(self._items, key=natural_key)

    def values(self) -> list[T]:
        return [self._items[name] for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, item: T) -> None:
        self.register(name)(item)

    def __delitem__(self, name: str) -> None:
        del self._items[name]
