"""An image task as a run config names it: Fashion-MNIST or class-per-folder images, with the
same seeded subsets as text tasks (``tasks.take_subset``)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from freezetune.errors import UserError
from freezetune.tasks import TaskData, take_subset
from freezetune.vision.images import (
    IMAGE_TASKS,
    check_fashion_mnist_dir,
    load_fashion_mnist,
    load_image_folders,
)

if TYPE_CHECKING:
    from freezetune.config import RunConfig

__all__ = ["load_image_task"]


def load_image_task(config: RunConfig) -> TaskData:
    """The image task of ``config`` with its seeded train/validation subsets.

    >>> from freezetune.config import RunConfig
    >>> data = load_image_task(RunConfig.from_dict({"data": {"task": "fashion-mnist",
    ...     "max_train_samples": 500}}))  # doctest: +SKIP
    >>> len(data.train), len(data.validation)  # doctest: +SKIP
    (500, 10000)
    """
    d = config.data
    if d.train_file or d.validation_file:
        if not d.train_file or not d.validation_file:
            raise UserError("image folders need both; pass --train DIR and --validation DIR")
        if d.data_dir:
            raise UserError(
                "--data-dir is for Fashion-MNIST and GLUE tasks; these images come from "
                "--train/--validation: drop --data-dir"
            )
        info, train, validation = load_image_folders(d.train_file, d.validation_file, d.image_size)
    else:
        key = (d.task or "").lower()
        if key not in IMAGE_TASKS:
            raise UserError(
                f"unknown image task {d.task!r}; choose one of: {', '.join(IMAGE_TASKS)}"
            )
        if d.data_dir:  # that folder, not a fall-back to another one
            check_fashion_mnist_dir(d.data_dir)
        info, train, validation = load_fashion_mnist(d.data_dir)
    seed = config.train.seed
    train = take_subset(train, d.max_train_samples, random.Random(seed), "--max-train-samples")
    rng = random.Random(f"validation-{seed}")  # as for text: independent of the train subset
    validation = take_subset(validation, d.max_eval_samples, rng, "--max-eval-samples")
    return TaskData(info, train, validation)  # type: ignore[arg-type]  # image examples
