"""scikit-learn's bundled 8x8 digits: offline, always available, the default dataset."""
from __future__ import annotations

import hashlib

import numpy as np

from probe.data.containers import ImageDataset, Split


def load_digits() -> ImageDataset:
    """The 1,797 digits as float32 in [0, 1], split 75/25 stratified by class (seed 0)."""
    import sklearn
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # pixel values are 0..16
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, random_state=0, stratify=labels)
    digest = hashlib.sha256()
    for arr in (x_train, y_train, x_test, y_test):
        digest.update(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())
    return ImageDataset(
        name="digits", train=Split(x_train, y_train), test=Split(x_test, y_test), sha256=digest.hexdigest(),
        source=f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__})", image_shape=(8, 8),
    )
