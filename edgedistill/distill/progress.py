"""Training progress for people (an :class:`EpochReporter`): a rich progress bar on a terminal, and
plain lines in a log (``edgedistill train > log 2>&1``): one when training starts, one every
``log_every_s`` seconds while an epoch runs, and one per finished epoch."""

from __future__ import annotations

import time
from typing import Any

from rich.markup import escape

from edgedistill.ui import err_console, pct, progress_bar

LOG_EVERY_S = 30.0
"""Seconds between progress lines in a log (not a terminal)."""


class RichEpochReporter:
    def __init__(self, epochs: int, log_every_s: float = LOG_EVERY_S) -> None:
        self.epochs = epochs
        self.log_every_s = log_every_s
        self.progress = progress_bar()
        self.task: Any = None
        self.loss = ""
        self.epoch = 0
        self.steps = 0
        self.done = 0
        self.images = 0
        self.started = 0.0
        self.last_line = 0.0

    @property
    def logging(self) -> bool:
        """Plain lines instead of a live bar: stderr is a file or a pipe."""
        return not err_console.is_terminal

    def __enter__(self) -> RichEpochReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _line(self, text: str) -> None:
        err_console.print(escape(text), highlight=False, soft_wrap=True)

    def start_run(self, description: str) -> None:
        """What is trained, on what, and how long an epoch is: printed before the first step."""
        self._line(description)

    def start_epoch(self, epoch: int, steps: int) -> None:
        self.epoch, self.steps, self.done, self.images = epoch, steps, 0, 0
        self.loss = ""  # not the previous epoch's: the first loss of this one comes after a few steps
        self.started = self.last_line = time.monotonic()
        self.task = self.progress.add_task(f"epoch {epoch + 1}/{self.epochs}", total=steps, info="loss …")

    def step(self, loss: float | None, images: int = 0) -> None:
        self.done += 1
        self.images += images
        if loss is not None:
            self.loss = f"loss {loss:.3f}"
        self.progress.update(self.task, advance=1, info=self.loss or "loss …")
        now = time.monotonic()
        if self.logging and now - self.last_line >= self.log_every_s and self.done < self.steps:
            self.last_line = now
            rate = self.images / (now - self.started) if now > self.started else 0.0
            loss_text = f", {self.loss}" if self.loss else ""
            self._line(f"epoch {self.epoch + 1}/{self.epochs}: step {self.done}/{self.steps}{loss_text}, {rate:.0f} img/s")

    def end_epoch(self, record: dict[str, Any]) -> None:
        scores = record["val_top1"] or record["train_top1"]
        label = "val" if record["val_top1"] else "train"
        best = ", ".join(f"{name} {pct(acc)}" for name, acc in sorted(scores.items()))
        info = f"loss {record['loss']:.3f} | {label} {best} | {record['images_per_s']:.0f} img/s"
        self.progress.update(self.task, info=escape(info))
        if self.logging:
            self._line(f"epoch {record['epoch'] + 1}/{self.epochs}: {info}")
