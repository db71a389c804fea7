"""The two containers every loader returns: a `Split` (images and labels) and an `ImageDataset`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probe.errors import InputValueError


@dataclass(frozen=True, eq=False)  # eq=False: `==` on arrays is elementwise, not a bool
class Split:
    """One split: `images` float32 in [0, 1], (n, H, W) for grey images or (n, H, W, C) for
    colour ones (channels last); `labels` int64 (n,) class ids."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim not in (3, 4) or self.images.dtype != np.float32:
            raise InputValueError(
                f"Split: images has dtype {self.images.dtype} (shape={self.images.shape}); "
                "float32 of shape (n, H, W) or (n, H, W, C) is required."
            )
        if self.labels.shape != (self.images.shape[0],) or self.labels.dtype != np.int64:
            raise InputValueError(
                f"Split: labels has dtype {self.labels.dtype} (shape={self.labels.shape}); "
                f"int64 of shape ({self.images.shape[0]},) is required, one label per image."
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return f"Split(n={len(self)}, image_shape={self.images.shape[1:]})"


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image dataset with a fixed train/test split.

    `image_shape` is (H, W) for grey images and (H, W, C) for colour ones, e.g. (32, 32, 3)
    for CIFAR-10. `sha256` identifies the exact data: for files (IDX, CIFAR-10 batches), the
    SHA-256 of the files' SHA-256 hex digests, sorted and joined by newlines (so it can be
    checked by hand from a SHA256SUMS file); for "digits", the SHA-256 of the four arrays'
    little-endian bytes.
    """

    name: str
    train: Split
    test: Split
    sha256: str
    source: str
    image_shape: tuple[int, ...]

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, train={len(self.train)}, test={len(self.test)}, "
                f"image_shape={self.image_shape}, sha256={self.sha256[:12]}...)")
