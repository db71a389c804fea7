"""Two views of a dataset, as every image study trains on them: top and bottom halves."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from probe.data.registry import load_dataset as load_images
from probe.data.views import split_views


@dataclass(frozen=True)
class PairData:
    """Two views of a dataset: float32 (n, d) arrays, integer labels, the view's (H, W) or (H, W, C)."""

    train1: np.ndarray
    train2: np.ndarray
    test1: np.ndarray
    test2: np.ndarray
    train_labels: np.ndarray
    test_labels: np.ndarray
    view_shape: tuple[int, ...]

    @property
    def dim(self) -> int:
        return self.train1.shape[1]


def load_image_pairs(settings: Any, dataset: str | None, data_dir: str | None) -> tuple[PairData, dict]:
    """The default data of a study: top/bottom halves of an image dataset."""
    images = load_images(dataset or settings.dataset, data_dir)
    train1, train2 = split_views(images.train.images)
    test1, test2 = split_views(images.test.images)
    height, *rest = images.image_shape  # (H, W) or (H, W, C): a view is the top or bottom half, channels kept
    data = PairData(train1, train2, test1, test2, images.train.labels, images.test.labels, (height // 2, *rest))
    info = {"dataset": images.name, "dataset_sha256": images.sha256, "dataset_source": images.source,
            "n_train": len(train1), "n_test": len(test1)}
    return data, info
