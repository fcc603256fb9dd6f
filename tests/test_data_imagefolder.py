"""ImageNet-style folders: decoding, resize + centre crop, split folders, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgedistill.data import load_dataset
from edgedistill.errors import DataError

Image = pytest.importorskip("PIL.Image")

COLOURS = {"blue": (0, 0, 255), "red": (255, 0, 0), "green": (0, 255, 0)}


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 20)) -> None:
    """A ``size`` (w, h) image of ``colour`` whose left eighth is white (cut off by a centre crop)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    img.paste((255, 255, 255), (0, 0, size[0] // 8, size[1]))
    img.save(path)


def write_tree(root: Path, splits: dict[str, int]) -> None:
    for split, per_class in splits.items():
        for name, colour in COLOURS.items():
            for i in range(per_class):
                write_image(root / split / name / f"{i}.{'png' if i % 2 else 'jpg'}", colour)


def test_imagefolder_decodes_resizes_and_centre_crops(tmp_path: Path) -> None:
    write_tree(tmp_path, {"train": 4, "val": 2})
    (tmp_path / "train" / "red" / "notes.txt").write_text("not an image")
    splits = load_dataset("imagefolder", tmp_path, image_size=16, val_size=0)
    spec = splits.spec
    assert spec.class_names == ("blue", "green", "red") and spec.image_size == 16 and spec.in_channels == 3
    assert splits.train.images.shape == (12, 3, 16, 16) and splits.train.images.dtype == torch.uint8
    assert len(splits.test) == 6 and len(splits.val) == 0  # val/ alone is the test set
    # 40x20 -> shorter side 16 gives 32x16, the centre 16 columns drop the white left eighth.
    for images, labels in ((splits.train.images, splits.train.labels), (splits.test.images, splits.test.labels)):
        for image, label in zip(images, labels, strict=True):
            expected = torch.tensor(COLOURS[spec.class_names[label]], dtype=torch.float32).view(3, 1, 1)
            assert (image.float() - expected).abs().max() <= 8  # JPEG compression error only


def test_val_and_test_folders_and_carving(tmp_path: Path) -> None:
    write_tree(tmp_path, {"train": 10, "val": 2, "test": 3})
    both = load_dataset("imagefolder", tmp_path, image_size=8)
    assert (len(both.train), len(both.val), len(both.test)) == (30, 6, 9)
    (tmp_path / "val").rename(tmp_path / "unused")
    carved = load_dataset("imagefolder", tmp_path, image_size=8, val_size=0.2)
    assert (len(carved.train), len(carved.val), len(carved.test)) == (24, 6, 9)
    assert torch.equal(torch.bincount(carved.val.labels), torch.full((3,), 2))


def test_bad_imagefolders_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs a folder"):
        load_dataset("imagefolder")
    write_tree(tmp_path, {"train": 2})
    with pytest.raises(DataError, match="neither val/ nor test/"):
        load_dataset("imagefolder", tmp_path)
    write_tree(tmp_path, {"test": 1})
    (tmp_path / "train" / "red" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        load_dataset("imagefolder", tmp_path, image_size=8)
    (tmp_path / "train" / "red" / "broken.jpg").unlink()
    write_image(tmp_path / "test" / "purple" / "0.png", (128, 0, 128))
    with pytest.raises(DataError, match="classes not in train/: purple"):
        load_dataset("imagefolder", tmp_path, image_size=8)
