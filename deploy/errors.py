"""The one exception the device side raises for problems a person can fix.

Mirrors ``edgedistill.errors.EdgeDistillError`` (which deploy/ may not import):
``deploy.run`` prints ``error: <message> (<hint>)`` on one line and exits 2.
"""

from __future__ import annotations

from typing import Optional


class DeployError(Exception):
    """What is wrong (``message``) and what to do about it (``hint``)."""

    exit_code = 2

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
