"""One exception type for every user-facing failure.

The CLI catches :class:`EdgeDistillError` and prints ``error: <what> (<hint>)``
on one line with a non-zero exit, so every module raises it (or a subclass)
with a message that says what is wrong and a hint that says what to do.
"""

from __future__ import annotations


class EdgeDistillError(Exception):
    """A failure the user can act on: ``message`` says what, ``hint`` says how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


def exception_line(exc: BaseException, last: bool = True) -> str:
    """One line of an exception's text for an ``error:`` message: the last (where TVM and compilers
    state the cause, after their backtraces) or the first; the type's name when the text is empty
    (e.g. an interrupted call)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if last else lines[0]


class UnknownNameError(EdgeDistillError):
    """A name (model, dataset, target, ...) that is not registered."""


class DataError(EdgeDistillError):
    """A dataset that is missing, corrupt or in the wrong format."""


class CheckpointError(EdgeDistillError):
    """A checkpoint that is missing, corrupt or of the wrong kind."""


class ToolchainError(EdgeDistillError):
    """A compiler, runtime or system tool that is missing or failed."""


class TrainingDivergedError(EdgeDistillError):
    """The loss became NaN or infinite."""


class Interrupted(EdgeDistillError):
    """Ctrl-C: the hint says how to continue (e.g. ``--resume``) or that nothing was left behind."""

    exit_code = 130
