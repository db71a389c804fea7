"""Two views of a dataset, as every image study trains on them: top and bottom halves unless the
study's settings say `views` (probe.data.views)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from probe.data.registry import load_dataset as load_images
from probe.data.views import check_equal_views, parse_views, partition_digest, split_views, view_shape


@dataclass(frozen=True)
class PairData:
    """Two views of a dataset: float32 (n, d) arrays, integer labels, the view's (H, W) or (H, W, C),
    and how the images were split (`probe.data.views.VIEWS`)."""

    train1: np.ndarray
    train2: np.ndarray
    test1: np.ndarray
    test2: np.ndarray
    train_labels: np.ndarray
    test_labels: np.ndarray
    view_shape: tuple[int, ...]
    views: str = "top-bottom"

    @property
    def dim(self) -> int:
        return self.train1.shape[1]


def load_image_pairs(settings: Any, dataset: str | None, data_dir: str | None) -> tuple[PairData, dict]:
    """The default data of a study: two equal views of an image dataset, as `settings.views` says
    (top and bottom halves, the paper's, when the settings have no `views`)."""
    views = getattr(settings, "views", "top-bottom")
    parse_views(views, "--views")
    images = load_images(dataset or settings.dataset, data_dir)
    check_equal_views(images.image_shape, views, f"--views on {images.name}")
    train1, train2 = split_views(images.train.images, views)
    test1, test2 = split_views(images.test.images, views)
    data = PairData(train1, train2, test1, test2, images.train.labels, images.test.labels,
                    view_shape(images.image_shape, views), views)
    info = {"dataset": images.name, "dataset_sha256": images.sha256, "dataset_source": images.source,
            "n_train": len(train1), "n_test": len(test1), "views": views,
            "views_partition": partition_digest(views, images.image_shape)}
    return data, info
