"""Batch augmentation on tensors and the sharded batch loader."""

from __future__ import annotations

import pytest
import torch

from edgedistill.data import BatchLoader, BatchTransform, DataSpec, ImageDataset, load_dataset

GRAY = DataSpec("gray", num_classes=10, in_channels=1, image_size=32, mean=(0.25,), std=(0.5,),
                class_names=tuple("0123456789"))  # fmt: skip


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unnormalise(x: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return ((x * std + mean) * 255).round()


def dot_images(n: int, size: int = 32, row: int = 10, col: int = 5) -> torch.Tensor:
    images = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    images[:, 0, row, col] = 255
    return images


def test_eval_pads_28_to_32_centred_and_normalises() -> None:
    images = torch.arange(2 * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8).view(2, 1, 28, 28)
    out = BatchTransform(GRAY, train=False)(images)
    assert out.shape == (2, 1, 32, 32) and out.dtype == torch.float32
    assert torch.equal(unnormalise(out, GRAY)[:, :, 2:30, 2:30], images.float())
    assert torch.all(unnormalise(out, GRAY)[:, :, :2] == 0) and torch.all(unnormalise(out, GRAY)[:, :, :, 30:] == 0)
    assert out[0, 0, 2, 2].item() == pytest.approx((0 / 255 - 0.25) / 0.5)
    assert out[0, 0, 2, 3].item() == pytest.approx((1 / 255 - 0.25) / 0.5)


def test_resize_fit_for_small_and_large_images() -> None:
    up = DataSpec("digits", 10, 1, 32, (0.0,), (1.0,), tuple("0123456789"), fit="resize")
    small = torch.full((3, 1, 8, 8), 200, dtype=torch.uint8)
    assert torch.allclose(BatchTransform(up, train=False)(small), torch.full((3, 1, 32, 32), 200 / 255))
    large = torch.full((2, 1, 64, 48), 100, dtype=torch.uint8)
    out = BatchTransform(GRAY, train=False)(large)  # larger than 32: resized even in "pad" mode
    assert out.shape == (2, 1, 32, 32) and torch.allclose(unnormalise(out, GRAY), torch.full_like(out, 100))


def test_random_crop_shifts_each_sample_within_the_padding() -> None:
    images = dot_images(256)
    out = unnormalise(BatchTransform(GRAY, train=True, hflip=False)(images, gen(0)), GRAY)
    positions = torch.nonzero(out[:, 0] == 255)  # (sample, row, col), one dot per sample at most
    assert len(positions) == 256  # the dot at (10, 5) never leaves a 32x32 crop shifted by <= 4
    dy, dx = positions[:, 1] - 10, positions[:, 2] - 5
    assert dy.abs().max() == 4 and dx.abs().max() == 4
    assert len(set(zip(dy.tolist(), dx.tolist(), strict=True))) > 40  # per-sample offsets, 81 possible
    # Pixels shifted in from outside the image are the zero padding.
    assert torch.all((out == 0) | (out == 255))


def test_flip_mirrors_about_half_the_samples() -> None:
    images = torch.arange(64 * 32 * 32).remainder(251).to(torch.uint8).view(64, 1, 32, 32)
    out = unnormalise(BatchTransform(GRAY, train=True, crop_padding=0)(images, gen(1)), GRAY)
    same = (out == images.float()).flatten(1).all(1)
    mirrored = (out == images.flip(-1).float()).flatten(1).all(1)
    assert torch.all(same ^ mirrored)
    assert 16 < int(mirrored.sum()) < 48
    no_flip = BatchTransform(GRAY, train=True, crop_padding=0, hflip=False)(images, gen(1))
    assert torch.equal(unnormalise(no_flip, GRAY), images.float())


def test_reproducible_with_the_same_generator_seed_and_eval_is_deterministic() -> None:
    images = torch.arange(16 * 3 * 32 * 32).remainder(256).to(torch.uint8).view(16, 3, 32, 32)
    rgb = DataSpec("rgb", 10, 3, 32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), tuple("0123456789"))
    train = BatchTransform(rgb, train=True)
    threads = torch.get_num_threads()
    assert torch.equal(train(images, gen(7)), train(images, gen(7)))
    assert torch.get_num_threads() == threads  # the single-threaded data ops restore the setting
    assert not torch.equal(train(images, gen(7)), train(images, gen(8)))
    evaluate = BatchTransform(rgb, train=False)
    assert torch.equal(evaluate(images), evaluate(images, gen(3)))
    with pytest.raises(ValueError, match="Generator"):
        train(images)


def ids_dataset(n: int) -> ImageDataset:
    """Image i holds the value i in its first pixel (i < 256), so batches show which samples they hold."""
    images = torch.zeros(n, 1, 32, 32, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return ImageDataset(images, torch.arange(n) % 10)


ID_SPEC = DataSpec("ids", 10, 1, 32, (0.0,), (1 / 255,), tuple("0123456789"))


def seen_ids(loader: BatchLoader, epoch: int = 0, start: int = 0) -> list[int]:
    ids: list[int] = []
    for x, y in loader.iterate(epoch, start):
        batch_ids = x[:, 0, 0, 0].round().long()
        assert torch.equal(y, batch_ids % 10)  # labels travel with their images
        ids += batch_ids.tolist()
    return ids


def test_loader_batches_shuffle_per_epoch_and_len() -> None:
    data = ids_dataset(103)
    evaluate = BatchTransform(ID_SPEC, train=False)
    plain = BatchLoader(data, 10, evaluate)
    assert len(plain) == 11 and seen_ids(plain) == list(range(103))
    shuffled = BatchLoader(data, 10, evaluate, shuffle=True, drop_last=True, seed=4)
    assert len(shuffled) == 10
    e0, e1 = seen_ids(shuffled, 0), seen_ids(shuffled, 1)
    assert len(e0) == 100 and len(set(e0)) == 100 and e0 != e1
    assert e0 == seen_ids(BatchLoader(data, 10, evaluate, shuffle=True, drop_last=True, seed=4), 0)
    assert seen_ids(shuffled, 1, start=3) == e1[30:]  # resuming mid-epoch sees the same rest


def test_loader_resumed_mid_epoch_gives_identical_augmented_batches() -> None:
    images = torch.arange(40 * 32 * 32).remainder(256).to(torch.uint8).view(40, 1, 32, 32)
    data = ImageDataset(images, torch.arange(40) % 10)
    loader = BatchLoader(data, 8, BatchTransform(GRAY, train=True), shuffle=True, seed=1)
    full = list(loader.iterate(2))
    tail = list(loader.iterate(2, start_batch=2))
    assert len(full) == 5 and len(tail) == 3
    for (xa, ya), (xb, yb) in zip(full[2:], tail, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("n", [100, 103])
def test_sharding_is_disjoint_and_covering(n: int) -> None:
    data, evaluate = ids_dataset(n), BatchTransform(ID_SPEC, train=False)

    def shards(even: bool) -> list[list[int]]:
        return [
            seen_ids(BatchLoader(data, 7, evaluate, shuffle=True, seed=3, rank=r, world_size=4, even_shards=even), 5)
            for r in range(4)
        ]

    even = shards(True)
    assert all(len(s) == n // 4 for s in even)  # equal work per rank: DDP never waits on a missing batch
    assert len(set().union(*map(set, even))) == 4 * (n // 4)
    exact = shards(False)
    assert sorted(i for s in exact for i in s) == list(range(n))  # every sample exactly once
    assert max(map(len, exact)) - min(map(len, exact)) <= 1
    assert len({tuple(s) for s in even}) == 4


def test_loader_on_real_digits_yields_model_ready_batches() -> None:
    splits = load_dataset("digits", val_size=0.1)
    loader = BatchLoader(splits.train, 64, BatchTransform(splits.spec, train=True, hflip=False), shuffle=True)
    x, y = next(iter(loader))
    assert x.shape == (64, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(loader) == -(-len(splits.train) // 64)
    assert abs(x.mean().item()) < 1.0 and 0.3 < x.std().item() < 3.0  # roughly normalised


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_augmentation_matches_cpu() -> None:
    images = torch.arange(32 * 3 * 32 * 32).remainder(256).to(torch.uint8).view(32, 3, 32, 32)
    spec = DataSpec("rgb", 10, 3, 32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), tuple("0123456789"))
    transform = BatchTransform(spec, train=True)
    cpu = transform(images, gen(5))
    cuda = transform(images.cuda(), gen(5))
    assert cuda.is_cuda and torch.allclose(cuda.cpu(), cpu, atol=1e-5)
    loader = BatchLoader(ImageDataset(images, torch.arange(32) % 10), 8, transform, device="cuda", shuffle=True)
    x, y = next(iter(loader))
    assert x.is_cuda and y.is_cuda and x.shape == (8, 3, 32, 32)
