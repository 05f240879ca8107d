"""Batch image features into normalised float tensors, and read a model's normalisation.

`ImageCollator` turns the uint8 pixels of `freezetune.vision.images.image_features` into
``pixel_values`` ``[B, 3, S, S]``: grayscale repeated to 3 channels, scaled to [0, 1], resized
when the size differs, normalised by mean/std; optionally augmented with random flips and
crops drawn from torch's global RNG (which checkpoints save and restore).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from freezetune.errors import UserError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageCollator",
    "ImageProcessorInfo",
    "read_normalisation",
]

Triple = tuple[float, float, float]
IMAGENET_MEAN: Triple = (0.485, 0.456, 0.406)
IMAGENET_STD: Triple = (0.229, 0.224, 0.225)


def _stack(features: Sequence[dict[str, Any]]) -> np.ndarray:
    """The batch's pixels as uint8 ``[B, H, W, 3]``; one size for all, or a UserError."""
    pixels = [np.asarray(f["pixels"], dtype=np.uint8) for f in features]
    sizes = {p.shape[:2] for p in pixels}
    if len(sizes) > 1:
        (h0, w0), (h1, w1) = sorted(sizes)[:2]
        raise UserError(
            f"images in one batch differ in size ({w0}x{h0} and {w1}x{h1}); "
            "pass --image-size N to resize them all at load"
        )
    if all(p.ndim == 2 for p in pixels):
        return np.repeat(np.stack(pixels)[..., None], 3, axis=-1)
    return np.stack([np.repeat(p[..., None], 3, axis=-1) if p.ndim == 2 else p for p in pixels])


def _augment(x: torch.Tensor) -> torch.Tensor:
    """Random horizontal flips and random crops after reflect padding of 4/28 of each side."""
    b, _, h, w = x.shape
    flip = torch.rand(b) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    ph, pw = min(round(h * 4 / 28), h - 1), min(round(w * 4 / 28), w - 1)
    if ph == 0 and pw == 0:
        return x
    padded = F.pad(x, (pw, pw, ph, ph), mode="reflect")
    top = torch.randint(0, 2 * ph + 1, (b,)).tolist()
    left = torch.randint(0, 2 * pw + 1, (b,)).tolist()
    return torch.stack(
        [padded[i, :, t : t + h, s : s + w] for i, (t, s) in enumerate(zip(top, left, strict=True))]
    )


@dataclass(frozen=True)
class ImageCollator:
    """Stack uint8 images into normalised ``pixel_values`` ``[B, 3, S, S]``, labels and index.

    ``image_size=0`` keeps the images' size. Deterministic unless ``augment``.

    >>> pixels = np.array([[0, 255], [255, 0]], np.uint8)
    >>> collate = ImageCollator(2, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    >>> batch = collate([{"pixels": pixels, "labels": 1}])
    >>> batch["pixel_values"][0, 0]
    tensor([[-1.,  1.],
            [ 1., -1.]])
    """

    image_size: int
    mean: Triple
    std: Triple
    augment: bool = False

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """The batch: ``pixel_values`` float32, ``labels`` long, and ``index`` when given."""
        x = torch.from_numpy(_stack(features)).permute(0, 3, 1, 2).float().div_(255)
        if self.augment:
            x = _augment(x)
        size = self.image_size
        if size and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        batch = {
            "pixel_values": ((x - mean) / std).contiguous(),
            "labels": torch.tensor([int(f["labels"]) for f in features], dtype=torch.long),
        }
        if "index" in features[0]:
            batch["index"] = torch.tensor([f["index"] for f in features], dtype=torch.long)
        return batch


class ImageProcessorInfo(NamedTuple):
    """What a model folder's ``preprocessor_config.json`` says: mean, std and size (or None)."""

    mean: Triple
    std: Triple
    size: int | None


def _triple(value: Any, default: Triple, where: str) -> Triple:
    if value is None:
        return default
    values = [value] if isinstance(value, int | float) else list(value)
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(isinstance(v, int | float) for v in values):
        raise UserError(f"{where} is {value!r}, not 1 or 3 numbers; fix the model's file")
    return (float(values[0]), float(values[1]), float(values[2]))


def _size(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for key in ("height", "shortest_edge", "width"):
            if isinstance(value.get(key), int):
                return int(value[key])
    return None


def read_normalisation(folder: str) -> ImageProcessorInfo | None:
    """Mean, std (ImageNet's when not given) and size from ``folder/preprocessor_config.json``;
    None when the folder has no such file.

    >>> read_normalisation("/nonexistent")
    >>> read_normalisation("models/vit") # doctest: +SKIP
    ImageProcessorInfo(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), size=224)
    """
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        why = str(err).splitlines()[0]
        raise UserError(f"cannot read {path} ({why}); fix or delete the file") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} is not a JSON object; fix or delete the file")
    mean = _triple(config.get("image_mean"), IMAGENET_MEAN, f"image_mean in {path}")
    std = _triple(config.get("image_std"), IMAGENET_STD, f"image_std in {path}")
    if min(std) <= 0:
        raise UserError(f"image_std in {path} is {list(std)}; every std must be above 0")
    return ImageProcessorInfo(mean, std, _size(config.get("size")))
