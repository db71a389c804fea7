"""Two views of an image, and the noise of Fig. 2.

The paper's views are the top and bottom halves (`top-bottom`, the default). To ask whether an
effect depends on that choice, two more splits give views of the same size:

    top-bottom    the first H/2 rows and the rest (Tschannen et al. 2020, Sec. 3)
    left-right    the first W/2 columns and the rest
    random-split  a random but fixed half of the pixels and the other half, from the seed in
                  "random-split:SEED" (0 when left out); a view's pixels keep their raster order
                  and are laid out in an (H/2, W) grid (or (H, W/2) for odd H), so a ConvNet sees
                  them as an image, but neighbours in that grid are not neighbours in the image.

Colour images keep a pixel's channels together, in H x W x C order.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

from probe.errors import InputTypeError, InputValueError, unknown_name
from probe.validation import check_array

VIEWS = ("top-bottom", "left-right", "random-split")


def parse_views(views: object, caller: str = "views") -> tuple[str, int]:
    """'left-right' -> ('left-right', 0); 'random-split:7' -> ('random-split', 7). Unknown names are refused."""
    if not isinstance(views, str):
        raise InputTypeError(f"{caller}: views must be a string such as 'top-bottom', got {type(views).__name__}.")
    kind, colon, seed = views.strip().partition(":")
    if kind not in VIEWS:
        raise unknown_name("views", kind, list(VIEWS))
    if colon and (kind != "random-split" or not seed.isdigit()):
        raise InputValueError(f"{caller}: views {views!r}: only random-split takes a seed, as 'random-split:SEED' "
                              "with SEED a non-negative integer, e.g. random-split:3.")
    return kind, int(seed) if colon else 0


def random_partition(height: int, width: int, seed: int) -> np.ndarray:
    """The pixel indices (raster order, sorted) of view 1 under random-split: a seeded half of H*W."""
    order = np.random.default_rng([seed, 0x5E11]).permutation(height * width)
    return np.sort(order[: height * width // 2])


def partition_digest(views: str, image_shape: tuple[int, ...]) -> str:
    """A short hash of the pixels each view takes, recorded with the results ("" for the fixed splits)."""
    kind, seed = parse_views(views)
    if kind != "random-split":
        return ""
    return hashlib.sha256(random_partition(image_shape[0], image_shape[1], seed).tobytes()).hexdigest()[:16]


def view_shape(image_shape: tuple[int, ...], views: str = "top-bottom") -> tuple[int, ...]:
    """The (H', W'[, C]) grid of view 1 for images of `image_shape` (what a ConvNet reads)."""
    kind, _ = parse_views(views)
    height, width, *channels = image_shape
    if kind == "top-bottom":
        return (height // 2, width, *channels)
    if kind == "left-right":
        return (height, width // 2, *channels)
    return ((height // 2, width) if height % 2 == 0 else (height, width // 2)) + tuple(channels)


def check_equal_views(image_shape: tuple[int, ...], views: str, caller: str = "views") -> None:
    """Refuse a split that does not cut images of `image_shape` into two views of equal size."""
    kind, _ = parse_views(views, caller)
    height, width = image_shape[:2]
    if kind == "top-bottom" and height % 2:
        raise InputValueError(f"{caller}: top-bottom views of {height}x{width} images are unequal ({height // 2} and "
                              f"{height - height // 2} rows); an even image height is required. Try left-right.")
    if kind == "left-right" and width % 2:
        raise InputValueError(f"{caller}: left-right views of {height}x{width} images are unequal ({width // 2} and "
                              f"{width - width // 2} columns); an even image width is required. Try top-bottom.")
    if kind == "random-split" and (height * width) % 2:
        raise InputValueError(f"{caller}: random-split views of {height}x{width} images are unequal: {height * width} "
                              "pixels do not halve. Use images with an even number of pixels.")


def split_views(images: np.ndarray, views: str = "top-bottom") -> tuple[np.ndarray, np.ndarray]:
    """Cut images (n, H, W) or (n, H, W, C) into two views, each flattened and float32.

    Returns (view1, view2). top-bottom: view1 is the first H//2 rows, (n, (H//2)*W*C), view2 the
    remaining rows (the extra one for odd H); left-right: the first W//2 columns and the rest;
    random-split: the pixels of `random_partition` and the others, each in raster order. C = 1
    for (n, H, W). 392 + 392 values for MNIST, 32 + 32 for digits, 1,536 + 1,536 for CIFAR-10.
    """
    arr = check_array(images, name="images", caller="split_views", ndim=(3, 4), min_samples=1, dtype=np.float32)
    kind, seed = parse_views(views, "split_views")
    n, height, width = arr.shape[:3]
    if height < 2 or (kind != "top-bottom" and width < 2):
        raise InputValueError(f"split_views: images of shape {arr.shape[1:]} cannot be split into two {kind} views; "
                              "at least 2 rows (and 2 columns) are required.")
    if kind == "top-bottom":
        half = height // 2
        row = math.prod(arr.shape[2:])  # values per image row: W, or W*C
        return arr[:, :half].reshape(n, half * row), arr[:, half:].reshape(n, (height - half) * row)
    if kind == "left-right":
        half = width // 2
        return arr[:, :, :half].reshape(n, -1), arr[:, :, half:].reshape(n, -1)
    pixels = arr.reshape(n, height * width, -1)  # (n, pixels, channels)
    first = np.zeros(height * width, dtype=bool)
    first[random_partition(height, width, seed)] = True
    return pixels[:, first].reshape(n, -1), pixels[:, ~first].reshape(n, -1)


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
