"""Rich progress bars for training epochs (an :class:`EpochReporter`)."""

from __future__ import annotations

from typing import Any

from edgedistill.ui import err_console, pct, progress_bar


class RichEpochReporter:
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.progress = progress_bar()
        self.task: Any = None
        self.loss = ""

    def __enter__(self) -> RichEpochReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start_epoch(self, epoch: int, steps: int) -> None:
        self.task = self.progress.add_task(f"epoch {epoch + 1}/{self.epochs}", total=steps, info="")

    def step(self, loss: float | None) -> None:
        if loss is not None:
            self.loss = f"loss {loss:.3f}"
        self.progress.update(self.task, advance=1, info=self.loss)

    def end_epoch(self, record: dict[str, Any]) -> None:
        scores = record["val_top1"] or record["train_top1"]
        label = "val" if record["val_top1"] else "train"
        best = ", ".join(f"{name} {pct(acc)}" for name, acc in sorted(scores.items()))
        info = f"loss {record['loss']:.3f} | {label} {best} | {record['images_per_s']:.0f} img/s"
        self.progress.update(self.task, info=info)
        if not err_console.is_terminal:
            err_console.print(f"epoch {record['epoch'] + 1}/{self.epochs}: {info}")
