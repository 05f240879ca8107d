"""Tests for freezetune.vision.images and freezetune.vision.collate: Fashion-MNIST's IDX files,
class-per-folder images, their one-line errors, and the image collator."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from freezetune.errors import UserError
from freezetune.testing import EPS32
from freezetune.vision import images
from freezetune.vision.collate import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageCollator,
    ImageProcessorInfo,
    read_normalisation,
)
from freezetune.vision.images import (
    FASHION_MNIST_LABELS,
    IMAGE_TASKS,
    ImageExample,
    image_features,
    load_fashion_mnist,
    load_image_folders,
    read_idx,
)

REAL_DIR = Path("/usr/share/datasets/fashion-mnist")


def tree(root: Path) -> dict[str, int]:
    """Every file under `root` with its size: to check that a failed load wrote nothing."""
    return {str(p): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(match: str, root: Path, call, *args):
    """`call(*args)` raises one UserError line matching `match` and leaves `root` as it was."""
    before = tree(root)
    with pytest.raises(UserError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message and re.search(match, message), message
    assert tree(root) == before
    return message


# ---------------------------------------------------------------- IDX files


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, gz: bool = True, n_train: int = 6, n_test: int = 4) -> dict:
    """Tiny Fashion-MNIST look-alike: 3x5 images whose first pixel is their position."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pics = np.zeros((n, 3, 5), np.uint8)
        pics[:, 0, 0] = np.arange(n)
        labels = np.arange(n) % 10
        arrays[prefix] = (pics, labels)
        for kind, data in (
            ("images-idx3", idx_bytes(pics, 2051)),
            ("labels-idx1", idx_bytes(labels, 2049)),
        ):
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return arrays


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No default Fashion-MNIST folder, no environment variable, the hub offline."""
    empty = tmp_path / "system"
    monkeypatch.setattr(images, "FASHION_MNIST_DIRS", (str(empty),))
    monkeypatch.delenv("FREEZETUNE_FASHION_MNIST_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return empty


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_idx_files(tmp_path: Path, nowhere: Path, gz: bool) -> None:
    arrays = write_idx(tmp_path / "fm", gz=gz)
    task, train, validation = load_fashion_mnist(str(tmp_path / "fm"))
    assert task == IMAGE_TASKS["fashion-mnist"] and task.labels == FASHION_MNIST_LABELS
    assert (task.name, task.text_columns, task.label_column) == ("fashion-mnist", (), "label")
    assert (task.metrics, task.main_metric, task.is_regression) == (
        ("accuracy",),
        "accuracy",
        False,
    )
    assert (len(train), len(validation)) == (6, 4)
    assert [ex.label for ex in train] == list(arrays["train"][1])
    assert [int(ex.pixels[0, 0]) for ex in validation] == [0, 1, 2, 3]
    assert train[0].pixels.dtype == np.uint8 and train[0].pixels.shape == (3, 5)
    assert train[0].pixels.base is train[5].pixels.base  # views of one array


def test_fashion_mnist_from_environment_folder(
    tmp_path: Path, nowhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_idx(tmp_path / "env", gz=False)
    monkeypatch.setenv("FREEZETUNE_FASHION_MNIST_DIR", str(tmp_path / "env"))
    assert len(load_fashion_mnist(None)[1]) == 6
    assert len(load_fashion_mnist(str(tmp_path / "missing"))[1]) == 6  # then the variable


def test_fashion_mnist_not_found(tmp_path: Path, nowhere: Path) -> None:
    message = one_line_error(
        r"^Fashion-MNIST not found in .*mine, .*system; install it \(apt install "
        r"dataset-fashion-mnist\) or pass --data-dir DIR with the four IDX files$",
        tmp_path,
        load_fashion_mnist,
        str(tmp_path / "mine"),
    )
    assert str(tmp_path / "mine") in message


def test_fashion_mnist_from_the_hub_without_idx_files(
    tmp_path: Path, nowhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from freezetune import hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(images.importlib.util, "find_spec", lambda name: object())
    pics = [Image.fromarray(np.full((28, 28), i, np.uint8)) for i in range(3)]
    loaded = {s: {"image": pics, "label": [7, 8, 9]} for s in ("train", "test")}
    monkeypatch.setattr(hub, "_load", lambda repo, config, problem, fix: loaded)
    _, train, validation = load_fashion_mnist(None)
    assert [ex.label for ex in validation] == [7, 8, 9]
    assert train[2].pixels.shape == (28, 28) and int(train[2].pixels[5, 5]) == 2


def test_fashion_mnist_partial_folder(tmp_path: Path, nowhere: Path) -> None:
    write_idx(tmp_path / "fm")
    (tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz").unlink()
    one_line_error(
        r"fm has some Fashion-MNIST files but not t10k-labels-idx1-ubyte \(or \.gz\); put all four",
        tmp_path,
        load_fashion_mnist,
        str(tmp_path / "fm"),
    )


def test_idx_wrong_magic(tmp_path: Path, nowhere: Path) -> None:
    write_idx(tmp_path / "fm", gz=False)
    labels = tmp_path / "fm" / "train-labels-idx1-ubyte"
    (tmp_path / "fm" / "train-images-idx3-ubyte").write_bytes(labels.read_bytes())  # swapped
    one_line_error(
        r"train-images-idx3-ubyte is not an IDX file \(magic number 2049, expected 2051\); "
        "replace it with the original Fashion-MNIST file$",
        tmp_path,
        load_fashion_mnist,
        str(tmp_path / "fm"),
    )


def test_idx_truncated_raw(tmp_path: Path, nowhere: Path) -> None:
    write_idx(tmp_path / "fm", gz=False)
    path = tmp_path / "fm" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    one_line_error(
        r"t10k-images-idx3-ubyte is truncated or corrupt \(69 bytes, shape \(4, 3, 5\) needs 76\)",
        tmp_path,
        load_fashion_mnist,
        str(tmp_path / "fm"),
    )
    path.write_bytes(path.read_bytes()[:9])  # inside the header
    one_line_error(r"t10k-images-idx3-ubyte is truncated \(9 bytes", tmp_path, read_idx, path, 2051)


def test_idx_truncated_or_broken_gzip(tmp_path: Path, nowhere: Path) -> None:
    write_idx(tmp_path / "fm")
    path = tmp_path / "fm" / "train-labels-idx1-ubyte.gz"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    fix = "replace it with the original Fashion-MNIST file$"
    one_line_error(
        rf"^cannot read .*train-labels-idx1-ubyte\.gz \(.*\); {fix}",
        tmp_path,
        load_fashion_mnist,
        str(tmp_path / "fm"),
    )
    path.write_bytes(b"not gzip at all")
    one_line_error(
        rf"^cannot read .*train-labels-idx1-ubyte\.gz \(.*\); {fix}",
        tmp_path,
        load_fashion_mnist,
        str(tmp_path / "fm"),
    )


def test_idx_counts_and_labels_must_match(tmp_path: Path, nowhere: Path) -> None:
    write_idx(tmp_path / "fm", gz=False)
    (tmp_path / "fm" / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5), 2049))
    one_line_error(
        r"has 6 images but .*train-labels-idx1-ubyte has 5 labels; use the matching",
        tmp_path,
        load_fashion_mnist,
        str(tmp_path / "fm"),
    )
    (tmp_path / "fm" / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(6, 12), 2049))
    one_line_error(
        r"has label 12; Fashion-MNIST labels are 0\.\.9",
        tmp_path,
        load_fashion_mnist,
        str(tmp_path / "fm"),
    )


@pytest.mark.skipif(not REAL_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FREEZETUNE_FASHION_MNIST_DIR", raising=False)
    task, train, validation = load_fashion_mnist(None)
    assert (len(train), len(validation)) == (60_000, 10_000)
    assert train[0].pixels.shape == (28, 28) and train[0].pixels.dtype == np.uint8
    assert Counter(ex.label for ex in train) == dict.fromkeys(range(10), 6000)
    assert Counter(ex.label for ex in validation) == dict.fromkeys(range(10), 1000)
    assert task.labels[train[0].label] == "Ankle boot"  # the first training image


# ---------------------------------------------------------------- class-per-folder images


def save(path: Path, size: tuple[int, int] = (8, 6), mode: str = "RGB", seed: int = 0) -> Path:
    """A random image of `size` (width, height) saved at `path` in the format of its suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).convert(mode).save(path)
    return path


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    train, val = tmp_path / "train", tmp_path / "val"
    save(train / "cat" / "a.png")
    save(train / "cat" / "b.JPG", (10, 10), seed=1)
    save(train / "dog" / "c.jpeg", (30, 20), seed=2)
    save(train / "dog" / "d.png", mode="L", seed=3)
    save(train / "emu" / "e.bmp", mode="P", seed=4)
    (train / "dog" / "notes.txt").write_text("not an image")
    save(train / "dog" / ".hidden.png")
    save(train / ".thumbs" / "x.png")
    save(val / "dog" / "f.gif", seed=5)
    save(val / "cat" / "g.webp", seed=6)
    return train, val


def test_image_folders(folders: tuple[Path, Path]) -> None:
    task, train, validation = load_image_folders(str(folders[0]), str(folders[1]), 16)
    assert task.labels == ("cat", "dog", "emu") and task.metrics == ("accuracy",)
    assert (task.name, task.text_columns, task.is_regression) == ("images", (), False)
    assert [ex.label for ex in train] == [0, 0, 1, 1, 2]
    assert [ex.label for ex in validation] == [0, 1]  # cat then dog, sorted
    shapes = [ex.pixels.shape for ex in train]
    assert shapes == [(16, 16, 3), (16, 16, 3), (16, 16, 3), (16, 16), (16, 16, 3)]
    assert all(ex.pixels.dtype == np.uint8 for ex in train)


def test_image_folders_resize_is_pillow_bilinear(tmp_path: Path) -> None:
    path = save(tmp_path / "t" / "a" / "x.png", (30, 20))
    save(tmp_path / "t" / "b" / "y.png")
    _, train, _ = load_image_folders(str(tmp_path / "t"), str(tmp_path / "t"), 12)
    expected = np.asarray(Image.open(path).convert("RGB").resize((12, 12), Image.BILINEAR))
    assert np.array_equal(train[0].pixels, expected)


def test_image_folders_native_size(tmp_path: Path) -> None:
    for name in ("a", "b"):
        save(tmp_path / "t" / name / "x.png", (7, 5))
    _, train, validation = load_image_folders(str(tmp_path / "t"), str(tmp_path / "t"), 0)
    assert train[0].pixels.shape == (5, 7, 3) and len(validation) == 2


def test_image_folder_errors(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    train, val = (str(p) for p in folders)
    load = load_image_folders
    one_line_error(
        r"^image folder not found: .*nope; pass --train DIR with one sub-folder of images per class \(DIR/<class>/<image files>\)$",
        tmp_path,
        load,
        str(tmp_path / "nope"),
        val,
        8,
    )
    (tmp_path / "file.png").write_bytes(b"x")
    one_line_error(
        r"file\.png is not a folder; pass --validation DIR with one sub-folder",
        tmp_path,
        load,
        train,
        str(tmp_path / "file.png"),
        8,
    )
    (tmp_path / "flat").mkdir()
    save(tmp_path / "flat" / "x.png")
    one_line_error(
        r"flat has no class folders; put one sub-folder of images per class",
        tmp_path,
        load,
        str(tmp_path / "flat"),
        val,
        8,
    )
    (folders[0] / "fox").mkdir()
    (folders[0] / "fox" / "readme.md").write_text("no images here")
    one_line_error(
        r"^class folder .*train/fox has no images \(\.png \.jpg .*\); add images or remove the folder$",
        tmp_path,
        load,
        train,
        val,
        8,
    )
    (folders[0] / "fox" / "readme.md").unlink()
    (folders[0] / "fox").rmdir()
    save(folders[1] / "yak" / "y.png")
    one_line_error(
        r"^validation class 'yak' \(.*val/yak\) has no folder in .*train; add train images for it or remove that validation folder$",
        tmp_path,
        load,
        train,
        val,
        8,
    )


def test_image_folders_need_two_classes(tmp_path: Path) -> None:
    save(tmp_path / "t" / "only" / "x.png")
    one_line_error(
        r"t has only one class folder \(only\); a classifier needs at least 2",
        tmp_path,
        load_image_folders,
        str(tmp_path / "t"),
        str(tmp_path / "t"),
        8,
    )


def test_mixed_sizes_need_image_size(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    message = one_line_error(
        r"^images differ in size: .*cat/a\.png is 8x6 but .*cat/b\.JPG is 10x10; "
        r"pass --image-size N to resize them all to N x N$",
        tmp_path,
        load_image_folders,
        str(folders[0]),
        str(folders[1]),
        0,
    )
    assert "dog" not in message


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image(tmp_path: Path, suffix: str) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    path = save(tmp_path / "t" / "a" / f"x{suffix}", (64, 64))
    save(tmp_path / "t" / "b" / "y.png")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    one_line_error(
        rf"^cannot read image .*a/x\{suffix} \(.+\); replace or remove the file$",
        tmp_path,
        load_image_folders,
        str(tmp_path / "t"),
        str(tmp_path / "t"),
        8,
    )


def test_unreadable_image(tmp_path: Path) -> None:
    (tmp_path / "t" / "a").mkdir(parents=True)
    (tmp_path / "t" / "a" / "x.png").write_bytes(b"this is no PNG")
    save(tmp_path / "t" / "b" / "y.png")
    one_line_error(
        r"^cannot read image .*a/x\.png \(cannot identify image file",
        tmp_path,
        load_image_folders,
        str(tmp_path / "t"),
        str(tmp_path / "t"),
        8,
    )


def test_image_features() -> None:
    examples = [
        ImageExample(np.zeros((2, 2), np.uint8), 1),
        ImageExample(np.ones((2, 2), np.uint8), 0),
    ]
    features = image_features(examples)
    assert [f["labels"] for f in features] == [1, 0] and [f["index"] for f in features] == [0, 1]
    assert features[1]["pixels"] is examples[1].pixels


# ---------------------------------------------------------------- the collator


def features(*pixels: np.ndarray) -> list[dict]:
    return image_features([ImageExample(p, i % 3) for i, p in enumerate(pixels)])


def noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_collator_shapes_and_dtypes() -> None:
    batch = ImageCollator(20, IMAGENET_MEAN, IMAGENET_STD)(
        features(noise((28, 28)), noise((28, 28, 3)))
    )
    assert batch["pixel_values"].shape == (2, 3, 20, 20)
    assert batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].tolist() == [0, 1] and batch["labels"].dtype == torch.long
    assert batch["index"].tolist() == [0, 1] and batch["index"].dtype == torch.long
    native = ImageCollator(0, IMAGENET_MEAN, IMAGENET_STD)(features(noise((5, 7, 3))))
    assert native["pixel_values"].shape == (1, 3, 5, 7)


def test_collator_grayscale_to_three_equal_channels() -> None:
    x = ImageCollator(28, (0.5,) * 3, (0.5,) * 3)(features(noise((28, 28))))["pixel_values"][0]
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_collator_normalisation_by_hand() -> None:
    pixels = np.array([[0, 51], [102, 255]], np.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.2)
    x = ImageCollator(2, mean, std)(features(pixels))["pixel_values"][0]
    # 0/255, 51/255 = 0.2, 102/255 = 0.4, 255/255 = 1, then (v - mean) / std per channel
    expected = [[[-0.2, 0.2], [0.6, 1.8]], [[-0.8, 0.0], [0.8, 3.2]], [[-1.5, -0.5], [0.5, 3.5]]]
    # correctly rounded float32 steps (/ 255, - mean, / std; mean, std and expected converted):
    # each value within (1 + 0.3 + 1) / 0.2 + 3 x 3.5 = 22 halves of EPS32 of the decimal one
    assert torch.allclose(x, torch.tensor(expected), rtol=0, atol=11 * EPS32)


def test_collator_resizes_only_when_size_differs() -> None:
    flat = np.full((28, 28, 3), 200, np.uint8)
    x = ImageCollator(14, (0.0,) * 3, (1.0,) * 3)(features(flat, noise((28, 28, 3))))[
        "pixel_values"
    ]
    assert x.shape == (2, 3, 14, 14)
    assert torch.allclose(x[0], torch.full((3, 14, 14), 200 / 255))  # a flat image stays flat
    same = ImageCollator(28, (0.0,) * 3, (1.0,) * 3)(features(noise((28, 28, 3))))["pixel_values"]
    assert torch.equal(same[0], torch.from_numpy(noise((28, 28, 3))).permute(2, 0, 1) / 255)


def test_collator_mixed_sizes_in_a_batch() -> None:
    collate = ImageCollator(8, IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(
        UserError, match=r"^images in one batch differ in size \(.*\); pass --image-size N"
    ):
        collate(features(noise((4, 4)), noise((5, 5))))


def test_collator_is_deterministic_without_augment() -> None:
    collate = ImageCollator(16, IMAGENET_MEAN, IMAGENET_STD)
    batch = features(*(noise((28, 28), seed=s) for s in range(4)))
    torch.manual_seed(0)
    first = collate(batch)["pixel_values"]
    torch.manual_seed(1)
    assert torch.equal(first, collate(batch)["pixel_values"])


def test_augmentation_changes_images_reproducibly() -> None:
    plain = ImageCollator(0, (0.0,) * 3, (1.0,) * 3)
    augmented = ImageCollator(0, (0.0,) * 3, (1.0,) * 3, augment=True)
    batch = features(*(noise((28, 28, 3), seed=s) for s in range(16)))
    torch.manual_seed(3)
    a = augmented(batch)["pixel_values"]
    torch.manual_seed(3)
    b = augmented(batch)["pixel_values"]
    c = augmented(batch)["pixel_values"]
    original = plain(batch)["pixel_values"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == original.shape
    changed = [not torch.equal(a[i], original[i]) for i in range(16)]
    assert sum(changed) >= 12  # unflipped and uncropped: 1 chance in 2 * 81
    assert set(a.unique().tolist()) <= set(original.unique().tolist())  # pixels moved, not made


def test_read_normalisation(tmp_path: Path) -> None:
    assert read_normalisation(str(tmp_path)) is None
    config = tmp_path / "preprocessor_config.json"
    config.write_text(
        json.dumps(
            {
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5] * 3,
                "size": {"height": 224, "width": 224},
            }
        )
    )
    assert read_normalisation(str(tmp_path)) == ImageProcessorInfo((0.5,) * 3, (0.5,) * 3, 224)
    config.write_text(json.dumps({"image_mean": 0.1307, "size": {"shortest_edge": 256}}))
    assert read_normalisation(str(tmp_path)) == ((0.1307,) * 3, IMAGENET_STD, 256)
    config.write_text(json.dumps({"size": 32}))
    assert read_normalisation(str(tmp_path)) == (IMAGENET_MEAN, IMAGENET_STD, 32)
    config.write_text("{broken")
    one_line_error(
        r"^cannot read .*preprocessor_config\.json \(.*\); fix or delete the file$",
        tmp_path,
        read_normalisation,
        str(tmp_path),
    )
    config.write_text(json.dumps({"image_mean": [1, 2]}))
    one_line_error(
        r"^image_mean in .* is \[1, 2\], not 1 or 3 numbers",
        tmp_path,
        read_normalisation,
        str(tmp_path),
    )
    config.write_text(json.dumps({"image_std": [0.2, 0, 0.2]}))
    one_line_error(r"every std must be above 0", tmp_path, read_normalisation, str(tmp_path))
