"""The epoch loop shared by every method: one optimiser step per batch over all networks.

Reproducibility: every source of randomness of epoch ``e`` (data order,
augmentation, dropout) is seeded from ``(seed, e)`` at the start of the epoch,
and the full state is saved atomically at the end of it. A run killed at any
point and resumed from its last saved epoch therefore replays the remaining
epochs exactly as an uninterrupted run would.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from edgedistill.distill.methods import Method
from edgedistill.distill.runtime import Runtime
from edgedistill.errors import TrainingDivergedError

FINITE_CHECK_EVERY = 20
"""Steps between NaN/inf checks of the loss (each check syncs a GPU)."""


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


class Batches(Protocol):
    def __iter__(self) -> Iterable[tuple[torch.Tensor, torch.Tensor]]: ...
    def __len__(self) -> int: ...


class EpochReporter(Protocol):
    """What the trainer tells the user interface (a rich progress bar, or nothing)."""

    def start_run(self, description: str) -> None: ...
    def start_epoch(self, epoch: int, steps: int) -> None: ...
    def step(self, loss: float | None, images: int = 0) -> None: ...
    def end_epoch(self, record: dict[str, Any]) -> None: ...


class SilentReporter:
    def start_run(self, description: str) -> None:
        pass

    def start_epoch(self, epoch: int, steps: int) -> None:
        pass

    def step(self, loss: float | None, images: int = 0) -> None:
        pass

    def end_epoch(self, record: dict[str, Any]) -> None:
        pass


@dataclass
class BestTracker:
    """Each network's best validation top-1 so far and the epoch it was reached."""

    best: dict[str, dict[str, float]] = field(default_factory=dict)

    def update(self, epoch: int, top1: dict[str, float]) -> list[str]:
        improved = [n for n, acc in top1.items() if acc > self.best.get(n, {"top1": -1.0})["top1"]]
        for name in improved:
            self.best[name] = {"top1": top1[name], "epoch": epoch}
        return improved


@torch.no_grad()
def top1(forward: Callable[[torch.Tensor], dict[str, torch.Tensor]], batches: Batches, runtime: Runtime) -> dict[str, float]:
    """Top-1 of each logits ``forward(x)`` returns, summed over all processes (DDP shards the batches)."""
    correct: dict[str, torch.Tensor] = {}
    total = torch.zeros((), device=runtime.device)
    for x, y in batches:
        x, y = runtime.to_device(x), y.to(runtime.device, non_blocking=True)
        with runtime.autocast():
            logits = forward(x)
        for name, z in logits.items():
            correct[name] = correct.get(name, torch.zeros((), device=runtime.device)) + (z.argmax(1) == y).sum()
        total += len(y)
    names = sorted(correct)
    if not names:
        return {}
    counts = runtime.all_reduce_sum(torch.stack([correct[n].float() for n in names] + [total.float()]))
    return {name: float(counts[i] / counts[-1]) for i, name in enumerate(names)}


class Trainer:
    def __init__(
        self,
        method: Method,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        runtime: Runtime,
        make_train_batches: Callable[[int], Batches],
        val_batches: Batches,
        reporter: EpochReporter | None = None,
    ) -> None:
        """``model`` is ``method`` itself or its DDP wrapper; ``make_train_batches(epoch)``
        returns that epoch's (already seeded) training batches."""
        self.method = method
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.runtime = runtime
        self.make_train_batches = make_train_batches
        self.val_batches = val_batches
        self.reporter = reporter or SilentReporter()
        self.scaler = torch.amp.GradScaler("cuda", enabled=runtime.amp)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One optimiser step of every network on the batch; returns loss, its parts, and the logits."""
        with self.runtime.autocast():
            logits = self.model(x)
        loss, parts = self.method.loss(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss, parts, logits

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training data; returns the epoch's training metrics."""
        self.model.train()
        batches = self.make_train_batches(epoch)
        self.reporter.start_epoch(epoch, len(batches))
        loss_sum = torch.zeros((), device=self.runtime.device)
        parts_sum: dict[str, torch.Tensor] = {}
        correct: dict[str, torch.Tensor] = {}
        seen = steps = 0
        start = time.perf_counter()
        for x, y in batches:
            x, y = self.runtime.to_device(x), y.to(self.runtime.device, non_blocking=True)
            loss, parts, logits = self.step(x, y)
            loss_sum += loss.detach()
            for name, value in parts.items():
                parts_sum[name] = parts_sum.get(name, 0) + value.detach()
            for name, z in logits.items():
                correct[name] = correct.get(name, 0) + (z.argmax(1) == y).sum()
            seen += len(y)
            steps += 1
            shown_loss = None
            if steps % FINITE_CHECK_EVERY == 0 or steps == len(batches):
                shown_loss = self._checked_mean(loss_sum, steps, epoch)
            self.reporter.step(shown_loss, len(y) * self.runtime.world_size)
        seconds = time.perf_counter() - start
        self.scheduler.step()
        return {
            "loss": self._checked_mean(loss_sum, max(steps, 1), epoch),
            "loss_parts": {k: float(v) / max(steps, 1) for k, v in parts_sum.items()},
            "train_top1": {k: float(v) / max(seen, 1) for k, v in correct.items()},
            "images_per_s": seen * self.runtime.world_size / seconds if seconds > 0 else 0.0,
            "seconds": seconds,
        }

    def _checked_mean(self, loss_sum: torch.Tensor, steps: int, epoch: int) -> float:
        value = float(loss_sum) / steps
        if not math.isfinite(value):
            raise TrainingDivergedError(
                f"the loss became {value} in epoch {epoch} (by step {steps})",
                "lower --lr, or try --no-amp; the last completed epoch is saved and resumable",
            )
        return value

    def evaluate(self, batches: Batches) -> dict[str, float]:
        """Top-1 of every network of the method on ``batches``."""
        self.method.eval()
        return top1(self.method, batches, self.runtime)

    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
