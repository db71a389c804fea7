"""The paper's two views of an image (top and bottom halves), and the noise of Fig. 2."""
from __future__ import annotations

import math

import numpy as np

from probe.errors import InputTypeError, InputValueError
from probe.validation import check_array


def split_views(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut images (n, H, W) or (n, H, W, C) into the paper's two views, each flattened and float32.

    Returns (top, bottom): top is the first H//2 rows, (n, (H//2)*W*C); bottom the remaining
    rows, (n, (H - H//2)*W*C), with C = 1 for (n, H, W). Colour images keep their channels,
    flattened in H x W x C order (row, then column, then channel): 16*32*3 = 1,536 values per
    view for CIFAR-10; 392 + 392 for MNIST, 32 + 32 for digits.
    """
    arr = check_array(images, name="images", caller="split_views", ndim=(3, 4), min_samples=1, dtype=np.float32)
    n, height = arr.shape[:2]
    if height < 2:
        raise InputValueError(f"split_views: images have {height} row(s) (shape={arr.shape}); at least 2 are required.")
    half = height // 2
    row = math.prod(arr.shape[2:])  # values per image row: W, or W*C
    return arr[:, :half].reshape(n, half * row), arr[:, half:].reshape(n, (height - half) * row)


def add_noise(
    view1: np.ndarray,
    view2: np.ndarray,
    std: float,
    *,
    coupled: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Add Gaussian noise of standard deviation `std` to both views; returns new float32 arrays.

    `coupled=True` adds the same noise vector to row i of both views (Tschannen et al., Fig. 2:
    the shared noise is information the two halves have in common, so an MI objective is
    rewarded for keeping it); this needs equal widths. `coupled=False` draws independently.
    The inputs (n, d1) and (n, d2) are never modified.
    """
    x = check_array(view1, name="view1", caller="add_noise", min_samples=1, dtype=np.float32)
    y = check_array(view2, name="view2", caller="add_noise", min_samples=1, dtype=np.float32)
    if not isinstance(rng, np.random.Generator):
        raise InputTypeError(f"add_noise: rng must be a numpy Generator, got {type(rng).__name__}. "
                             "Use np.random.default_rng(seed).")
    if isinstance(std, bool) or not isinstance(std, (int, float, np.floating, np.integer)):
        raise InputTypeError(f"add_noise: std must be a number, got {type(std).__name__} {std!r}.")
    if not math.isfinite(std) or std < 0:
        raise InputValueError(f"add_noise: std is {std}; a finite value >= 0 is required.")
    if x.shape[0] != y.shape[0]:
        raise InputValueError(f"add_noise: view1 has {x.shape[0]} rows but view2 has {y.shape[0]}; "
                              "paired views must have the same number of rows.")
    if coupled and x.shape[1] != y.shape[1]:
        raise InputValueError(
            f"add_noise: coupled noise needs views of equal width, got {x.shape[1]} and {y.shape[1]}; "
            "the same noise vector is added to both. Use coupled=False, or an even image height."
        )
    if std == 0:
        return x, y  # check_array already returned copies
    noise = rng.standard_normal(x.shape, dtype=np.float32) * np.float32(std)
    x += noise
    y += noise if coupled else rng.standard_normal(y.shape, dtype=np.float32) * np.float32(std)
    return x, y
