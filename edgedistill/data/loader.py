"""Batches from an in-memory dataset: shuffled, sharded across DDP ranks, augmented on the device.

No worker processes: the dataset is already decoded tensors, so a batch is one
index-select, one copy to the device and the batch transform. On CUDA the
whole dataset is copied to the GPU once when it takes under a quarter of the
free GPU memory (``on_device`` forces either way), which removes the per-batch
host-to-device copy entirely; otherwise batches go through pinned memory.

Every random draw is seeded from (seed, epoch[, rank, batch]): an epoch's
order and augmentation do not depend on what ran before, so a resumed run can
restart at any epoch and batch and see exactly the same data.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from edgedistill.data.augment import BatchTransform, serial_on_cpu
from edgedistill.data.types import ImageDataset

_ORDER, _AUGMENT = 0, 1  # stream ids: the shuffle and the augmentation never share random numbers
_GPU_SHARE = 0.25  # the most of the free GPU memory a dataset may take by default


def fits_on_gpu(data: ImageDataset, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return data.images.nbytes + data.labels.nbytes < _GPU_SHARE * free


def derived_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of ints, well mixed (numpy SeedSequence)."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class BatchLoader:
    """Iterate ``(x, y)`` batches: ``x`` float32 on ``device`` after ``transform``, ``y`` int64.

    Sharding works like ``DistributedSampler``: every rank draws the same
    permutation and takes every ``world_size``-th index from ``rank`` on, so the
    shards are disjoint. With ``even_shards`` (training) the tail is dropped so
    every rank sees the same number of samples and batches; without it (exact
    evaluation) the shards cover every sample once, their sizes differing by at most one.
    """

    def __init__(
        self,
        data: ImageDataset,
        batch_size: int,
        transform: BatchTransform,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
        even_shards: bool = True,
        on_device: bool | None = None,
        pin_memory: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.batch_size = batch_size
        self.transform = transform
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.device = torch.device(device)
        self.rank = rank
        self.world_size = world_size
        self.even_shards = even_shards
        self.epoch = 0
        cuda = self.device.type == "cuda"
        self._images, self._labels = data.images, data.labels
        if on_device if on_device is not None else cuda and fits_on_gpu(data, self.device):
            self._images, self._labels = data.images.to(self.device), data.labels.to(self.device)
        self._pin = pin_memory and cuda and self._images.device.type == "cpu"

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        total = len(self._labels)
        if self.even_shards:
            return total // self.world_size
        return len(range(self.rank, total, self.world_size))

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentation ``iter()`` gives."""
        self.epoch = epoch

    def shard_indices(self, epoch: int) -> torch.Tensor:
        """This rank's sample indices for ``epoch``, in visiting order."""
        total = len(self._labels)
        if self.shuffle:
            order = torch.randperm(total, generator=derived_generator(self.seed, epoch, _ORDER))
        else:
            order = torch.arange(total)
        if self.even_shards:
            order = order[: self.num_samples * self.world_size]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iterate(self.epoch)

    def iterate(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of ``epoch`` from ``start_batch`` on (for resuming mid-epoch)."""
        indices = self.shard_indices(epoch).to(self._images.device)
        for b in range(start_batch, len(self)):
            idx = indices[b * self.batch_size : (b + 1) * self.batch_size]
            with serial_on_cpu(self._images.device):
                images, labels = self._images[idx], self._labels[idx]
            if self._pin:
                images, labels = images.pin_memory(), labels.pin_memory()
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            generator = derived_generator(self.seed, epoch, _AUGMENT, self.rank, b)
            yield self.transform(images, generator), labels
