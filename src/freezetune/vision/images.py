"""Image tasks: Fashion-MNIST from its IDX files (or the hub), and class-per-folder images.

Both give ``(TaskInfo, train, validation)`` like the text loaders of `freezetune.tasks`, with
`ImageExample` items that hold uint8 pixels: ``[H, W]`` grayscale or ``[H, W, 3]`` RGB.
Nothing here scales, normalises or batches: that is `freezetune.vision.collate`.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from freezetune.errors import UserError, first_line
from freezetune.tasks import TaskInfo

__all__ = [
    "FASHION_MNIST_DIRS",
    "FASHION_MNIST_LABELS",
    "IMAGE_SUFFIXES",
    "IMAGE_TASKS",
    "ImageExample",
    "check_fashion_mnist_dir",
    "image_features",
    "load_fashion_mnist",
    "load_image_folders",
    "read_idx",
]


@dataclass(frozen=True, eq=False)
class ImageExample:
    """One image: uint8 pixels, ``[H, W]`` grayscale or ``[H, W, 3]`` RGB, and a class index.

    >>> ex = ImageExample(np.zeros((28, 28), np.uint8), 3)
    >>> ex.pixels.shape, ex.label
    ((28, 28), 3)
    """

    pixels: np.ndarray
    label: int


FASHION_MNIST_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Fashion-MNIST's ten classes, in the order of its label numbers 0..9."""

_FASHION_MNIST = TaskInfo(
    "fashion-mnist", (), "label", FASHION_MNIST_LABELS, False, ("accuracy",), "accuracy"
)

IMAGE_TASKS: dict[str, TaskInfo] = {"fashion-mnist": _FASHION_MNIST}
"""The image tasks known by name (lower case)."""

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
"""Where Fashion-MNIST is looked for after --data-dir and $FREEZETUNE_FASHION_MNIST_DIR (the
Debian package ``dataset-fashion-mnist`` installs it there)."""

_FILES = {  # split -> (images file, labels file), each also accepted with ".gz"
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "validation": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049  # unsigned bytes, 3 dimensions / 1 dimension
_HUB_REPO = "zalando-datasets/fashion_mnist"

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""The image files `load_image_folders` reads (any case); other files are ignored."""

_Splits = tuple[TaskInfo, list[ImageExample], list[ImageExample]]


# ---------------------------------------------------------------- Fashion-MNIST


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file (gzipped when its name ends in ``.gz``), read-only.

    `magic` is 2051 for an image file ``[N, rows, cols]`` and 2049 for a label file ``[N]``.

    >>> read_idx("/data/t10k-labels-idx1-ubyte.gz", 2049).shape  # doctest: +SKIP
    (10000,)
    """
    path = Path(path)
    fix = "replace it with the original Fashion-MNIST file"
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # missing, unreadable, truncated gzip
        raise UserError(f"cannot read {path} ({first_line(err)}); {fix}") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        raise UserError(
            f"{path} is not an IDX file (magic number {found}, expected {magic}); {fix}"
        )
    if len(data) < header:
        raise UserError(f"{path} is truncated ({len(data)} bytes, header incomplete); {fix}")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise UserError(
            f"{path} is truncated or corrupt ({len(data)} bytes, shape {dims} needs {expected}); "
            f"{fix}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_files(folder: Path) -> dict[str, tuple[Path, Path]] | None:
    """The four IDX files in `folder` by split; None when it has none of them."""
    names = [name for pair in _FILES.values() for name in pair]
    found = {name: _find(folder, name) for name in names}
    if not any(found.values()):
        return None
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise UserError(
            f"{folder} has some Fashion-MNIST files but not {', '.join(missing)} (or .gz); "
            "put all four IDX files there"
        )
    paths = {name: path for name, path in found.items() if path is not None}
    return {split: (paths[images], paths[labels]) for split, (images, labels) in _FILES.items()}


def check_fashion_mnist_dir(data_dir: str) -> None:
    """``--data-dir`` must hold the four IDX files: a run never falls back to another folder
    when the one it names is missing or empty."""
    folder = Path(data_dir)
    names = ", ".join(name for pair in _FILES.values() for name in pair)
    if not folder.is_dir():
        raise UserError(
            f"--data-dir {folder} is not a folder; pass the folder with Fashion-MNIST's four "
            f"IDX files ({names}, or .gz)"
        )
    if _idx_files(folder) is None:
        raise UserError(
            f"--data-dir {folder} has no Fashion-MNIST IDX files; put {names} (or .gz) there, "
            "or leave --data-dir out to use the installed copy"
        )


def _split_examples(images_path: Path, labels_path: Path) -> list[ImageExample]:
    images, labels = read_idx(images_path, _IMAGES_MAGIC), read_idx(labels_path, _LABELS_MAGIC)
    if len(images) != len(labels):
        raise UserError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} "
            "labels; use the matching pair of original Fashion-MNIST files"
        )
    if len(labels) and int(labels.max()) >= len(FASHION_MNIST_LABELS):
        raise UserError(
            f"{labels_path} has label {int(labels.max())}; Fashion-MNIST labels are 0..9: "
            "replace it with the original file"
        )
    return [ImageExample(images[i], int(label)) for i, label in enumerate(labels.tolist())]


def _places(data_dir: str | None) -> list[Path]:
    env = os.environ.get("FREEZETUNE_FASHION_MNIST_DIR")
    return [Path(p) for p in (data_dir, env, *FASHION_MNIST_DIRS) if p]


def _hub_split(dataset: Any) -> list[ImageExample]:
    images = np.stack([np.asarray(im.convert("L"), dtype=np.uint8) for im in dataset["image"]])
    return [ImageExample(images[i], int(y)) for i, y in enumerate(dataset["label"])]


def _from_hub(places: Sequence[Path]) -> _Splits:
    from freezetune import hub

    where = ", ".join(map(str, places))
    problem = f"Fashion-MNIST not found in {where}"
    fix = "install it (apt install dataset-fashion-mnist) or pass --data-dir DIR"
    loaded = hub._load(_HUB_REPO, None, problem, fix)
    train, test = (hub._split(loaded, s, _HUB_REPO, fix) for s in ("train", "test"))
    return _FASHION_MNIST, _hub_split(train), _hub_split(test)


def load_fashion_mnist(data_dir: str | None) -> _Splits:
    """Fashion-MNIST: 60,000 train and 10,000 validation (its test set) 28x28 uint8 images.

    Looks in `data_dir`, then $FREEZETUNE_FASHION_MNIST_DIR, then `FASHION_MNIST_DIRS`, for
    the four IDX files (gzipped or not); without them loads ``zalando-datasets/fashion_mnist``
    from the hub when the ``datasets`` package is installed and HF_HUB_OFFLINE is unset.

    >>> task, train, validation = load_fashion_mnist(None)  # doctest: +SKIP
    >>> len(train), len(validation), task.labels[train[0].label]  # doctest: +SKIP
    (60000, 10000, 'Ankle boot')
    """
    places = _places(data_dir)
    for folder in places:
        files = _idx_files(folder) if folder.is_dir() else None
        if files is not None:
            train, validation = (_split_examples(*files[s]) for s in ("train", "validation"))
            return _FASHION_MNIST, train, validation
    if importlib.util.find_spec("datasets") is not None and not os.environ.get("HF_HUB_OFFLINE"):
        return _from_hub(places)
    raise UserError(
        f"Fashion-MNIST not found in {', '.join(map(str, places))}; install it "
        "(apt install dataset-fashion-mnist) or pass --data-dir DIR with the four IDX files"
    )


# ---------------------------------------------------------------- class-per-folder images


def _class_folders(root: Path, flag: str) -> dict[str, Path]:
    """The visible sub-folders of `root` by name, sorted; each one is a class."""
    layout = "one sub-folder of images per class (DIR/<class>/<image files>)"
    if not root.exists():
        raise UserError(f"image folder not found: {root}; pass {flag} DIR with {layout}")
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; pass {flag} DIR with {layout}")
    classes = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and p.name[0] != "."}
    if not classes:
        raise UserError(f"{root} has no class folders; put {layout}")
    return classes


def _image_files(folder: Path) -> list[Path]:
    """The visible image files of one class folder, sorted by name; none is an error."""
    files = [
        p
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES and p.name[0] != "." and p.is_file()
    ]
    if not files:
        kinds = " ".join(IMAGE_SUFFIXES)
        raise UserError(
            f"class folder {folder} has no images ({kinds}); add images or remove the folder"
        )
    return files


def _read_image(path: Path, image_size: int) -> np.ndarray:
    """uint8 pixels of one file: grayscale ("L") as [H, W], any other mode as RGB [H, W, 3]."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()  # decodes all of it: a truncated file fails here
            converted = image if image.mode == "L" else image.convert("RGB")
            if image_size:
                size = (image_size, image_size)
                converted = converted.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(converted, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(
            f"cannot read image {path} ({first_line(err)}); replace or remove the file"
        ) from None


def _read_split(
    classes: dict[str, Path], index: dict[str, int], image_size: int
) -> tuple[list[ImageExample], list[Path]]:
    examples, paths = [], []
    for name, folder in classes.items():
        for path in _image_files(folder):
            examples.append(ImageExample(_read_image(path, image_size), index[name]))
            paths.append(path)
    return examples, paths


def _check_sizes(examples: Sequence[ImageExample], paths: Sequence[Path]) -> None:
    """With native sizes every image needs the same height and width; name two that differ."""
    first = examples[0].pixels.shape[:2]
    for example, path in zip(examples, paths, strict=True):
        if example.pixels.shape[:2] != first:
            (h0, w0), (h, w) = first, example.pixels.shape[:2]
            raise UserError(
                f"images differ in size: {paths[0]} is {w0}x{h0} but {path} is {w}x{h}; "
                "pass --image-size N to resize them all to N x N"
            )


def load_image_folders(train_dir: str, validation_dir: str, image_size: int) -> _Splits:
    """Class-per-folder images (DIR/<class>/<image files>); the classes are the train folder's
    sub-folder names, sorted. Each image is resized to `image_size` square (bilinear) as it is
    read; ``image_size=0`` keeps the native sizes, which must then all be equal.

    >>> task, train, validation = load_image_folders("pets/train", "pets/val", 96)  # doctest: +SKIP
    >>> task.labels, train[0].pixels.shape  # doctest: +SKIP
    (('cat', 'dog'), (96, 96, 3))
    """
    if image_size < 0:
        raise UserError(f"--image-size must be 0 or more (got {image_size}); pass a size N")
    train_root, validation_root = Path(train_dir), Path(validation_dir)
    train_classes = _class_folders(train_root, "--train")
    validation_classes = _class_folders(validation_root, "--validation")
    for name, folder in validation_classes.items():
        if name not in train_classes:
            raise UserError(
                f"validation class '{name}' ({folder}) has no folder in {train_root}; "
                "add train images for it or remove that validation folder"
            )
    labels = tuple(train_classes)
    if len(labels) < 2:
        raise UserError(
            f"{train_root} has only one class folder ({labels[0]}); a classifier needs at least "
            "2: add a folder of images per class"
        )
    index = {name: i for i, name in enumerate(labels)}
    train, train_paths = _read_split(train_classes, index, image_size)
    validation, validation_paths = _read_split(validation_classes, index, image_size)
    if not image_size:
        _check_sizes([*train, *validation], [*train_paths, *validation_paths])
    task = TaskInfo("images", (), "label", labels, False, ("accuracy",), "accuracy")
    return task, train, validation


def image_features(examples: Sequence[ImageExample]) -> list[dict[str, Any]]:
    """One feature per example for `ImageCollator`: its pixels, label and position in the split.

    >>> image_features([ImageExample(np.zeros((2, 2), np.uint8), 1)])[0]["index"]
    0
    """
    return [{"pixels": ex.pixels, "labels": ex.label, "index": i} for i, ex in enumerate(examples)]
