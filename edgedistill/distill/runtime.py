"""Where training runs: device choice, threads, mixed precision, and DDP under torchrun.

The same command works as one process or under ``torchrun --nproc_per_node N``:
torchrun sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``, and we then start a
process group (NCCL on CUDA, Gloo on CPU) and give each process its own GPU.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from edgedistill.errors import EdgeDistillError, UnknownNameError
from edgedistill.utils.names import suggest


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp: bool = False
    channels_last: bool = False
    distributed: bool = False
    """A process group is up (torchrun launched this process, even as its only one): gradients go
    through DDP and metrics through all-reduce."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N")


def check_device_name(requested: str) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; anything else is one clear error ('gpu' → 'cuda')."""
    if requested in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", requested):
        return
    lowered = requested.lower()
    best = "cuda" if lowered.startswith(("gpu", "nvidia", "cuda")) else suggest(lowered, ("auto", "cpu", "cuda"))
    hint = f"did you mean '{best}'? " if best else ""
    raise UnknownNameError(f"unknown device '{requested}'", hint + "valid: " + ", ".join(DEVICE_NAMES))


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """The device ``requested`` names, or one clear error (unknown name, no CUDA here, no such GPU)."""
    check_device_name(requested)
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if not torch.cuda.is_available():
        raise EdgeDistillError(
            f"--device {requested} asked for, but CUDA is not available here",
            "use --device cpu (or auto), or install a CUDA build of torch",
        )
    device = torch.device(requested)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise EdgeDistillError(
            f"--device {requested} asked for, but this machine has {torch.cuda.device_count()} GPU(s)",
            f"use --device cuda (or cuda:0 ... cuda:{torch.cuda.device_count() - 1})",
        )
    return torch.device("cuda", local_rank) if device.index is None else device



@contextlib.contextmanager
def training_runtime(
    device: str = "auto", amp: bool = True, channels_last: bool = False, threads: int | None = None
) -> Iterator[Runtime]:
    """Set up (and afterwards tear down) the process group, device and precision."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if threads:
        torch.set_num_threads(threads)
    chosen = pick_device(device, local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
        torch.backends.cudnn.benchmark = True
    started_group = False
    # torchrun sets TORCHELASTIC_RUN_ID: with --nproc_per_node 1 too, the run goes through the
    # process group and DDP (NCCL on GPUs), as it will with more processes.
    if (world_size > 1 or "TORCHELASTIC_RUN_ID" in os.environ) and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
        started_group = True
    try:
        yield Runtime(chosen, rank, world_size, amp=amp and chosen.type == "cuda", channels_last=channels_last,
                      distributed=dist.is_initialized())
    finally:
        if started_group:
            dist.destroy_process_group()
