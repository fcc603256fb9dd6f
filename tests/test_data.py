"""Dataset readers and splitting: CIFAR pickles, IDX, digits, imagefolder, downloads, bad input."""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedistill.data import DataSplits, dataset_names, load_dataset
from edgedistill.data import cifar as cifar_mod
from edgedistill.data import download as download_mod
from edgedistill.data.stats import channel_stats
from edgedistill.errors import DataError, UnknownNameError

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


# ----------------------------------------------------------------- fixtures writing the official formats


def cifar_images(count: int, offset: int) -> np.ndarray:
    """Deterministic (count, 3072) uint8 rows; image i's R plane starts with value (offset + i) % 256."""
    rows = (np.arange(count * 3072, dtype=np.int64).reshape(count, 3072) * 7 + offset * 3072) % 251
    rows[:, 0] = (offset + np.arange(count)) % 256  # R plane, row 0, column 0: an image id
    rows[:, 1] = 200  # R plane, row 0, column 1
    rows[:, 1024] = 20  # G plane, row 0, column 0
    rows[:, 2048 + 32] = 30  # B plane, row 1, column 0
    return rows.astype(np.uint8)


def _py2(obj: object) -> bytes:
    """Pickle opcodes as Python 2's cPickle (protocol 2) wrote the official batches: bytes are
    Python 2 ``str`` (BINSTRING) and arrays are rebuilt by ``numpy.core.multiarray._reconstruct``."""
    if isinstance(obj, bytes):
        return (b"U" + bytes([len(obj)]) if len(obj) < 256 else b"T" + struct.pack("<I", len(obj))) + obj
    if isinstance(obj, int):
        return b"J" + struct.pack("<i", obj)
    if isinstance(obj, list):
        return b"](" + b"".join(_py2(o) for o in obj) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2(k) + _py2(v) for k, v in obj.items()) + b"u"
    assert isinstance(obj, np.ndarray) and obj.dtype == np.uint8
    dtype = b"cnumpy\ndtype\n" + _py2(b"u1") + _py2(0) + _py2(1) + b"\x87R"
    dtype += b"(" + _py2(3) + _py2(b"|") + b"NNN" + _py2(-1) + _py2(-1) + _py2(0) + b"tb"
    shape = b"(" + b"".join(_py2(d) for d in obj.shape) + b"t"
    state = b"(" + _py2(1) + shape + dtype + b"\x89" + _py2(np.ascontiguousarray(obj).tobytes()) + b"tb"
    return b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n(" + _py2(0) + b"t" + _py2(b"b") + b"\x87R" + state


def write_pickle(path: Path, obj: object) -> None:
    path.write_bytes(b"\x80\x02" + _py2(obj) + b".")


def write_cifar10(root: Path, per_batch: int = 6) -> dict[str, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        x = cifar_images(per_batch, offset=i * per_batch)
        y = [(i + j) % 10 for j in range(per_batch)]
        write_pickle(folder / f"data_batch_{i}", {b"batch_label": b"training batch %d of 5" % i, b"labels": y,
                                                  b"data": x, b"filenames": [b"f.png"] * per_batch})  # fmt: skip
        train_x.append(x)
        train_y += y
    test_x, test_y = cifar_images(per_batch, offset=0), [j % 10 for j in range(per_batch)]
    write_pickle(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": test_y,
                                          b"data": test_x, b"filenames": [b"f.png"] * per_batch})  # fmt: skip
    write_pickle(folder / "batches.meta", {b"num_cases_per_batch": per_batch, b"label_names": CIFAR10_NAMES,
                                            b"num_vis": 3072})  # fmt: skip
    return {"train_x": np.concatenate(train_x), "train_y": np.array(train_y), "test_x": test_x,
            "test_y": np.array(test_y)}  # fmt: skip


def write_cifar100(root: Path, n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split, n, offset in (("train", n_train, 0), ("test", n_test, 50)):
        x = cifar_images(n, offset)
        fine = [(7 * j + offset) % 100 for j in range(n)]
        batch = {b"filenames": [b"f.png"] * n, b"batch_label": split.encode(), b"fine_labels": fine,
                 b"coarse_labels": [f // 5 for f in fine], b"data": x}  # fmt: skip
        write_pickle(folder / split, batch)
        out[f"{split}_x"], out[f"{split}_y"] = x, np.array(fine)
    write_pickle(folder / "meta", {b"fine_label_names": [b"class%02d" % i for i in range(100)],
                                   b"coarse_label_names": [b"super%02d" % i for i in range(20)]})  # fmt: skip
    return out


def tar_gz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    magic = {1: 2049, 3: 2051}[array.ndim]
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def write_fmnist(folder: Path) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", 30), ("t10k", 10)):
        images = ((np.arange(n * 28 * 28).reshape(n, 28, 28) * 3) % 256).astype(np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images, compress=True)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress=False)  # plain files work too
        arrays[prefix] = (images, labels)
    return arrays


# ----------------------------------------------------------------- CIFAR


def assert_cifar_matches(splits: DataSplits, expected: dict[str, np.ndarray]) -> None:
    n = len(expected["train_y"])
    assert splits.train.images.shape == (n, 3, 32, 32) and splits.train.images.dtype == torch.uint8
    assert torch.equal(splits.train.images, torch.from_numpy(expected["train_x"]).view(n, 3, 32, 32))
    assert torch.equal(splits.train.labels, torch.from_numpy(expected["train_y"]).long())
    assert torch.equal(splits.test.images.flatten(1), torch.from_numpy(expected["test_x"]))
    assert torch.equal(splits.test.labels, torch.from_numpy(expected["test_y"]).long())
    # Row-major R, G, B planes: the pixels set by cifar_images land where the format says.
    img = splits.train.images[0]
    assert img[0, 0, 1] == 200 and img[1, 0, 0] == 20 and img[2, 1, 0] == 30
    mean, std = channel_stats(splits.train.images)
    assert splits.spec.mean == pytest.approx(mean) and splits.spec.std == pytest.approx(std)
    assert splits.spec.in_channels == 3 and splits.spec.image_size == 32


def test_cifar10_folder_and_archive_read_the_official_pickles(tmp_path: Path) -> None:
    expected = write_cifar10(tmp_path / "dir")
    from_folder = load_dataset("cifar10", tmp_path / "dir", val_size=0)
    assert_cifar_matches(from_folder, expected)
    assert from_folder.spec.class_names[0] == "airplane" and from_folder.spec.num_classes == 10
    # The extracted folder itself works as data_dir too.
    assert_cifar_matches(load_dataset("cifar10", tmp_path / "dir" / "cifar-10-batches-py", val_size=0), expected)

    archive = tar_gz(tmp_path / "dir" / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    for data_dir in (tmp_path, archive):  # the folder holding the archive, or the archive itself
        from_tar = load_dataset("cifar10", data_dir, val_size=0)
        assert_cifar_matches(from_tar, expected)
        assert from_tar.spec == from_folder.spec


def test_cifar100_uses_fine_labels_from_folder_and_archive(tmp_path: Path) -> None:
    expected = write_cifar100(tmp_path / "dir")
    splits = load_dataset("cifar100", tmp_path / "dir", val_size=0)
    assert_cifar_matches(splits, expected)
    assert splits.spec.num_classes == 100 and splits.spec.class_names[7] == "class07"
    tar_gz(tmp_path / "dir" / "cifar-100-python", tmp_path / "cifar-100-python.tar.gz")
    assert_cifar_matches(load_dataset("cifar100", tmp_path, val_size=0), expected)


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_batches_repickled_by_python3_load_too(tmp_path: Path, protocol: int) -> None:
    expected = write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    for path in folder.iterdir():
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
    assert_cifar_matches(load_dataset("cifar10", tmp_path, val_size=0), expected)


def test_cifar_missing_gives_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar10 not found") as info:
        load_dataset("cifar10", tmp_path)
    assert "--download" in str(info.value)


@pytest.mark.parametrize(
    "damage", ["truncated_archive", "garbage_batch", "code_in_pickle", "wrong_shape", "missing_meta"]
)
def test_corrupt_cifar_files_raise_data_error(tmp_path: Path, damage: str) -> None:
    write_cifar10(tmp_path / "dir")
    folder = tmp_path / "dir" / "cifar-10-batches-py"
    data_dir: Path = tmp_path / "dir"
    if damage == "truncated_archive":
        archive = tar_gz(folder, tmp_path / "cifar-10-python.tar.gz")
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
        data_dir = archive
    elif damage == "garbage_batch":
        (folder / "data_batch_3").write_bytes(b"\x80\x02this is not a pickle")
    elif damage == "code_in_pickle":
        # A pickle that would call os.system when loaded: refused, never run.
        (folder / "data_batch_2").write_bytes(pickle.dumps(os.system, protocol=2))
    elif damage == "wrong_shape":
        write_pickle(folder / "test_batch", {b"labels": [0, 1], b"data": np.zeros((2, 100), np.uint8)})
    else:
        (folder / "batches.meta").unlink()
        archive = tar_gz(folder, tmp_path / "cifar-10-python.tar.gz")
        data_dir = archive
    with pytest.raises(DataError):
        load_dataset("cifar10", data_dir)


def test_incomplete_cifar_folder_names_the_missing_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="lacks data_batch_4"):
        load_dataset("cifar10", tmp_path)


# ----------------------------------------------------------------- downloads (no network: open_url is replaced)


def serve_file(monkeypatch: pytest.MonkeyPatch, source: Path, calls: list[str]) -> None:
    def fake_open(url: str, timeout: float) -> io.BytesIO:
        calls.append(url)
        return io.BytesIO(source.read_bytes())

    monkeypatch.setattr(download_mod, "open_url", fake_open)


def test_download_verifies_md5_and_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar10(tmp_path / "src")
    served = tar_gz(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "served.tar.gz")
    calls: list[str] = []
    serve_file(monkeypatch, served, calls)
    target = tmp_path / "data"

    # Our small archive is not the official one: the official checksum rejects it and nothing is left behind.
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("cifar10", target, download=True)
    assert calls == [cifar_mod.CIFAR10.url]
    assert not target.exists() or list(target.iterdir()) == []

    # With the checksum of the served file, download then read straight from the archive.
    verified = dataclasses.replace(cifar_mod.CIFAR10, md5=download_mod.md5_of(served))
    monkeypatch.setitem(cifar_mod.RELEASES, "cifar10", verified)
    splits = load_dataset("cifar10", target, download=True, val_size=0)
    assert (target / "cifar-10-python.tar.gz").read_bytes() == served.read_bytes()
    assert len(splits.train) == 30 and not (target / "cifar-10-batches-py").exists()
    # A verified archive already there is not fetched again.
    load_dataset("cifar10", target, download=True)
    assert len(calls) == 2


def test_download_network_failure_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(url: str, timeout: float) -> io.BytesIO:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(download_mod, "open_url", no_network)
    with pytest.raises(DataError, match="could not download .*Name or service not known"):
        load_dataset("cifar100", tmp_path, download=True)
    with pytest.raises(DataError, match="could not download"):
        load_dataset("fashion-mnist", tmp_path / "fm", download=True)
    assert list(tmp_path.rglob("*.gz")) == []


# ----------------------------------------------------------------- Fashion-MNIST (IDX)


def test_idx_files_written_by_the_test_are_read(tmp_path: Path) -> None:
    arrays = write_fmnist(tmp_path)
    splits = load_dataset("fashion-mnist", tmp_path, val_size=0)
    train_images, train_labels = arrays["train"]
    assert splits.train.images.shape == (30, 1, 28, 28)
    assert torch.equal(splits.train.images[:, 0], torch.from_numpy(train_images))
    assert torch.equal(splits.train.labels, torch.from_numpy(train_labels).long())
    assert torch.equal(splits.test.images[:, 0], torch.from_numpy(arrays["t10k"][0]))
    spec = splits.spec
    assert (spec.in_channels, spec.image_size, spec.num_classes, spec.fit) == (1, 32, 10, "pad")
    assert spec.class_names[0] == "T-shirt/top" and spec.class_names[9] == "Ankle boot"


@pytest.mark.parametrize("damage", ["magic", "truncated", "bad_gzip"])
def test_bad_idx_files_raise_data_error(tmp_path: Path, damage: str) -> None:
    write_fmnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    if damage == "magic":
        images.write_bytes(gzip.compress(b"\x00\x00\x99\x03" + raw[4:]))
    elif damage == "truncated":
        images.write_bytes(gzip.compress(raw[:-100]))
    else:
        images.write_bytes(images.read_bytes()[:50])
    with pytest.raises(DataError):
        load_dataset("fashion-mnist", tmp_path)


def test_missing_fashion_mnist_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message and "--download" in message


@pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist() -> None:
    splits = load_dataset("fashion-mnist", val_size=0)  # default location
    assert splits.train.images.shape == (60000, 1, 28, 28) and splits.test.images.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(splits.train.labels), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(splits.test.labels), torch.full((10,), 1000))
    mean, std = channel_stats(splits.train.images)
    assert splits.spec.mean[0] == pytest.approx(mean[0], abs=1e-4)
    assert splits.spec.std[0] == pytest.approx(std[0], abs=1e-4)


# ----------------------------------------------------------------- digits


def test_digits_are_real_scaled_and_split_the_same_way_every_time() -> None:
    a = load_dataset("digits", val_size=0, seed=0)
    b = load_dataset("digits", val_size=100, seed=5)
    assert len(a.train) + len(a.test) == 1797 and len(a.test) == 359
    assert a.train.images.shape[1:] == (1, 8, 8) and int(a.train.images.max()) == 255
    assert torch.equal(a.test.images, b.test.images)  # the test set does not depend on the seed
    assert len(b.val) == 100 and len(b.train) == len(a.train) - 100
    assert (a.spec.fit, a.spec.image_size, a.spec.in_channels) == ("resize", 32, 1)


# ----------------------------------------------------------------- splitting, limit, names


def test_validation_split_is_stratified_seeded_and_disjoint(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_batch=20)  # 100 training images, 10 per class
    full = load_dataset("cifar10", tmp_path, val_size=0)
    s1 = load_dataset("cifar10", tmp_path, val_size=0.2, seed=1)
    assert len(s1.val) == 20 and len(s1.train) == 80
    assert torch.equal(torch.bincount(s1.val.labels, minlength=10), torch.full((10,), 2))
    ids = lambda d: set(d.images[:, 0, 0, 0].tolist())  # noqa: E731 - the image id written by cifar_images
    assert ids(s1.train).isdisjoint(ids(s1.val)) and ids(s1.train) | ids(s1.val) == ids(full.train)
    again = load_dataset("cifar10", tmp_path, val_size=20, seed=1)
    assert torch.equal(again.val.images, s1.val.images)
    other = load_dataset("cifar10", tmp_path, val_size=20, seed=2)
    assert not torch.equal(other.val.images, s1.val.images)
    assert torch.equal(s1.test.images, full.test.images)


def test_limit_keeps_a_seeded_stratified_subset(tmp_path: Path) -> None:
    write_cifar10(tmp_path, per_batch=20)
    s = load_dataset("cifar10", tmp_path, limit=50, val_size=10, seed=3)
    assert len(s.train) + len(s.val) == 50 and len(s.val) == 10 and len(s.test) == 20
    labels = torch.cat([s.train.labels, s.val.labels])
    assert torch.equal(torch.bincount(labels, minlength=10), torch.full((10,), 5))
    assert torch.equal(load_dataset("cifar10", tmp_path, limit=50, val_size=10, seed=3).train.images, s.train.images)


@pytest.mark.parametrize(
    "bad", [{"val_size": 1.5}, {"val_size": -1}, {"val_size": 100}, {"limit": 0}, {"image_size": 0}]
)
def test_bad_split_arguments_raise_data_error(tmp_path: Path, bad: dict) -> None:
    write_cifar10(tmp_path, per_batch=20)
    with pytest.raises(DataError):
        load_dataset("cifar10", tmp_path, **bad)


def test_unknown_dataset_suggests_the_closest_name() -> None:
    assert {"fashion-mnist", "cifar10", "cifar100", "imagefolder", "digits"} <= set(dataset_names())
    with pytest.raises(UnknownNameError, match="did you mean 'cifar10'"):
        load_dataset("cifar-10")
    with pytest.raises(UnknownNameError, match="did you mean 'fashion-mnist'"):
        load_dataset("fashion_mnist")
